"""The row every source module yields: one fact about one subject, with the subject's kind and popularity."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from knowpack.kg.graph.names import COMMON_WORDS

COLUMNS = ("kind", "relation", "relation_domain", "subject_key", "subject", "object", "answer", "names",
           "popularity")

Fact = tuple[str, str, str, str, str, str, str, list[str], int]


def facts(kind: str, domain: str, relation: str,
          rows: Iterable[tuple[str, str, str, str, list[str], int]]) -> Iterator[Fact]:
    """``rows`` of (subject_key, subject, object, answer, alias names, popularity) as facts of ``relation``;
    ``domain`` is the relation's domain for the spill-over analysis (DBpedia ontology class names). Answers and
    aliases that are everyday words ("In", "OK") are left out: they would match almost any model answer. Runs of
    spaces in names are collapsed ("North  & Middle Andaman")."""
    for key, subject, obj, answer, names, popularity in rows:
        subject, answer = " ".join(subject.split()), " ".join(answer.split())
        if answer.lower() not in COMMON_WORDS:
            names = [name for name in names if name.lower() not in COMMON_WORDS]
            yield kind, relation, domain, key, subject, obj, answer, names, popularity

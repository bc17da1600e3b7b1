"""The question tables an injection is made of: the user's facts with template paraphrases, the guard sample and
the known-fact candidates (all in the questions.parquet schema, ``kg.folder``)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from knowpack.kg.folder import QUESTIONS_SCHEMA
from knowpack.kg.templates import PACKAGED, fill, load_templates
from knowpack.paraphrase.stage import accept_paraphrases
from knowpack.text import normalize

# candidates per relation of the packed facts: the study's 30 per bucket, or twice the relation's facts
KNOWN_PER_RELATION = 30


def with_template_paraphrases(facts: pa.Table) -> tuple[pa.Table, int]:
    """Facts with a subject and a relation knowpack has templates for get the relation's other phrasings as
    paraphrases (kept by the paraphrase stage's own rules); returns the table and how many were added."""
    templates = {relation: phrasings for name in PACKAGED for relation, phrasings in load_templates(name).items()}
    rows, added = facts.to_pylist(), 0
    for row in rows:
        phrasings = templates.get(row["relation"], ()) if row["subject"] else ()
        filled = [fill(p, row["subject"]) for p in phrasings]
        new = accept_paraphrases(filled, row["question"], row["aliases"], row["paraphrases"], len(filled),
                                 row["subject"])
        row["paraphrases"] = row["paraphrases"] + new
        added += len(new)
    return pa.Table.from_pylist(rows, schema=QUESTIONS_SCHEMA), added


def facts_to_pack(facts: pa.Table, categories: dict[str, str], keep_known: bool) -> pa.Table:
    """The facts the model does not know (SliCK Unknown in ``categories``: fact id → category); all of them with
    ``keep_known``."""
    if keep_known:
        return facts
    return facts.filter(pa.array([categories[qid] == "Unknown" for qid in facts.column("id").to_pylist()]))


def stratified_sample(table: pa.Table, size: int | None, seed: int) -> pa.Table:
    """``size`` questions spread as evenly as possible over the (relation, bucket) strata: one question of every
    stratum per round, strata and questions in a seeded order, until ``size`` (None or more than the table: all)."""
    if size is None or size >= table.num_rows:
        return table
    rng = np.random.default_rng(seed)
    strata: dict[tuple[str, str], list[int]] = {}
    for index, key in enumerate(zip(table.column("relation").to_pylist(), table.column("bucket").to_pylist())):
        strata.setdefault(key, []).append(index)
    queues = [[members[i] for i in rng.permutation(len(members))] for _, members in sorted(strata.items())]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    picked: list[int] = []
    while len(picked) < size:
        for queue in queues:
            if queue and len(picked) < size:
                picked.append(queue.pop(0))
    return table.take(sorted(picked))


def without_questions(table: pa.Table, questions: pa.Table) -> pa.Table:
    """``table`` less the rows that ask one of ``questions``' questions (after ``text.normalize``)."""
    asked = {normalize(q) for q in questions.column("question").to_pylist()}
    keep = [normalize(q) not in asked for q in table.column("question").to_pylist()]
    return table.filter(pa.array(keep))


def same_relation_candidates(source: pa.Table, facts: pa.Table, excluded_ids: set[str], seed: int) -> pa.Table:
    """Questions of ``source`` on the relations of ``facts``: per relation at most max(30, 2 × its facts), in a
    seeded order, none of ``excluded_ids`` (the guard) and none asking one of the facts."""
    wanted = Counter(facts.column("relation").to_pylist())
    source = without_questions(source, facts)
    rng = np.random.default_rng(seed)
    relations = source.column("relation").to_pylist()
    ids = source.column("id").to_pylist()
    picked: list[int] = []
    for relation, count in sorted(wanted.items()):
        members = [i for i, r in enumerate(relations) if r == relation and ids[i] not in excluded_ids]
        order = [members[i] for i in rng.permutation(len(members))]
        picked += order[: max(KNOWN_PER_RELATION, 2 * count)]
    return source.take(sorted(picked))

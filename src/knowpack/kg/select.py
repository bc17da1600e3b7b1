"""From candidate facts to questions: popularity buckets, cleaning, per-relation caps, bucket balancing.

Shared by the DBpedia builder and the embedded graph so both follow the study's rules (study.md §1) the same way:

* buckets: entities sorted by popularity (ties: first seen first), cut where the cumulative mass *before* an
  entity reaches 1/3 and 2/3 of the total: head / torso / tail; a fact's bucket is its subject's;
* a fact is dropped when its question would be ambiguous (one relation, one subject label, several answers) or
  repeat another's (same label, same answer: the first in random order stays), when its answer's text or one of
  its aliases appears in its question (an alias is an answer too: "Hyderabad" of "Hyderabad District"), or for a
  source-specific reason given in ``reason``;
* candidates are taken in a seeded random order; each relation keeps at most ``per_bucket`` facts per bucket and,
  when balancing, the same number in every bucket (the smallest bucket's count).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from knowpack.kg.folder import BUCKETS, QUESTIONS_SCHEMA
from knowpack.kg.templates import Templates, fill, template_id
from knowpack.text import normalize

FACT_COLUMNS = ("relation", "subject_key", "subject", "object", "answer", "aliases", "popularity", "bucket",
                "relation_domain", "order", "reason")


def cut_buckets(popularity: np.ndarray) -> np.ndarray:
    """Bucket index per entity (0 head, 1 torso, 2 tail) by cumulative popularity mass."""
    popularity = np.asarray(popularity, dtype=np.int64)
    if len(popularity) == 0:
        return np.zeros(0, dtype=np.int8)
    order = np.lexsort((np.arange(len(popularity)), -popularity))
    mass = popularity[order].astype(np.float64)
    before = np.cumsum(mass) - mass
    total = mass.sum()
    ranked = np.where(before < total / 3, 0, np.where(before < 2 * total / 3, 1, 2)).astype(np.int8)
    buckets = np.empty_like(ranked)
    buckets[order] = ranked
    return buckets


@lru_cache(maxsize=1 << 18)
def cached_normalize(text: str) -> str:
    """``text.normalize`` for the many repeated labels and answers (countries, years) of a build."""
    return normalize(text)


def answer_in_question(answer: str, question: str) -> bool:
    """The study's leak rule, on normalised words: 'France' leaks in 'Which city is the capital of France?'."""
    folded = cached_normalize(answer)
    return bool(folded) and f" {folded} " in f" {cached_normalize(question)} "


def any_alias_in_question(aliases, question: str) -> bool:
    """``answer_in_question`` for every alias at once (the question normalised once)."""
    padded = f" {normalize(question)} "
    return any(folded and f" {folded} " in padded for folded in map(cached_normalize, aliases))


def select_questions(
    facts: pd.DataFrame,
    templates: Templates,
    *,
    per_bucket: int,
    balance: bool,
    skipped: Counter | None = None,
) -> tuple[pa.Table, dict]:
    """Clean, cap and balance ``facts`` (columns FACT_COLUMNS; ``order`` = seeded random rank, ``reason`` = ''
    or why the source already rejects it) and return the questions table and per-relation counts."""
    skipped = Counter() if skipped is None else skipped
    facts = facts[facts["relation"].isin(list(templates))].copy()
    facts["question"] = [fill(templates[r][0], s) for r, s in zip(facts["relation"], facts["subject"])]

    reasons = facts["reason"].to_numpy(dtype=object).copy()
    empty = (facts["subject"].str.strip() == "") | (facts["answer"].str.strip() == "")
    reasons[(reasons == "") & empty.to_numpy()] = "empty label"
    label_key = facts["relation"] + "\x00" + facts["subject"].map(cached_normalize)
    answer_key = facts["answer"].map(cached_normalize)
    answers_per_label = pd.Series(answer_key.to_numpy(), index=label_key.to_numpy()).groupby(level=0).nunique()
    ambiguous = label_key.map(answers_per_label).to_numpy() > 1
    reasons[(reasons == "") & ambiguous] = "ambiguous subject label"
    leaks = np.array([any_alias_in_question(a, q) for a, q in zip(facts["aliases"], facts["question"])], dtype=bool)
    reasons[(reasons == "") & leaks] = "answer in question"
    by_order = np.argsort(facts["order"].to_numpy(), kind="stable")
    repeated = np.zeros(len(facts), dtype=bool)
    repeated[by_order] = pd.Series(label_key.to_numpy()[by_order]).where(reasons[by_order] == "").duplicated().to_numpy()
    reasons[(reasons == "") & repeated] = "duplicate question"
    facts["reason"] = reasons

    for (relation, reason), count in facts[facts["reason"] != ""].groupby(["relation", "reason"]).size().items():
        skipped[(relation, reason)] += int(count)
    usable = facts[facts["reason"] == ""].sort_values(["relation", "bucket", "order"], kind="stable")
    usable = usable.drop_duplicates(["relation", "subject_key"])
    usable["rank"] = usable.groupby(["relation", "bucket"], sort=False).cumcount()
    counts = usable.groupby(["relation", "bucket"]).size().unstack(fill_value=0).reindex(columns=BUCKETS, fill_value=0)
    limit = counts.clip(upper=per_bucket)
    if balance:
        limit = limit.apply(lambda row: pd.Series(row.min(), index=row.index), axis=1)
    limit.index.name, limit.columns.name = "relation", "bucket"
    limits = limit.stack().rename("limit").reset_index()
    usable = usable.merge(limits, on=["relation", "bucket"], how="left", sort=False)
    chosen = usable[usable["rank"] < usable["limit"]]
    for relation, row in counts.iterrows():
        over = int(row.sum() - limit.loc[relation].sum())
        if over:
            skipped[(relation, "over cap or balance")] += over

    chosen = chosen.sort_values(["relation", "bucket", "subject_key"], kind="stable")
    per_relation = {
        relation: {bucket: int(limit.at[relation, bucket]) for bucket in BUCKETS} for relation in limit.index
    }
    table = pa.table(
        {
            "id": [f"{r}/{k}" for r, k in zip(chosen["relation"], chosen["subject_key"])],
            "subject": chosen["subject"].tolist(),
            "relation": chosen["relation"].tolist(),
            "object": chosen["object"].tolist(),
            "question": chosen["question"].tolist(),
            "answer": chosen["answer"].tolist(),
            "aliases": chosen["aliases"].tolist(),
            "bucket": chosen["bucket"].tolist(),
            "popularity": chosen["popularity"].astype(np.int64).tolist(),
            "relation_domain": chosen["relation_domain"].tolist(),
            "template_id": [template_id(r) for r in chosen["relation"]],
            "paraphrases": [[fill(t, s) for t in templates[r][1:]] for r, s in zip(chosen["relation"], chosen["subject"])],
        },
        schema=QUESTIONS_SCHEMA,
    )
    return table, per_relation

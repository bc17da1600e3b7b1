"""Questions from the embedded fact graph (``knowpack.kg.graph``): bucket each kind of subject by its own
popularity, then select questions the head-to-tail way (``kg.select``)."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
import pyarrow as pa

from knowpack.kg.aliases import build_aliases
from knowpack.kg.folder import BUCKETS
from knowpack.kg.graph import collect_facts, source_fingerprint
from knowpack.kg.select import cut_buckets, select_questions
from knowpack.kg.templates import Templates

__all__ = ["build_embedded", "source_fingerprint"]


def build_embedded(*, templates: Templates, seed: int, per_bucket: int, balance: bool,
                   max_aliases: int) -> tuple[pa.Table, dict]:
    """Collect the embedded facts, bucket each kind of subject by its own popularity and select questions."""
    facts = collect_facts()
    facts["bucket"] = ""
    kinds_summary = {}
    for kind, rows in facts.groupby("kind", sort=True):
        subjects = rows.drop_duplicates("subject_key")[["subject_key", "popularity"]].sort_values(
            ["popularity", "subject_key"], ascending=[False, True], kind="stable")
        buckets = cut_buckets(subjects["popularity"].to_numpy())
        bucket_of = dict(zip(subjects["subject_key"], (BUCKETS[b] for b in buckets)))
        facts.loc[rows.index, "bucket"] = rows["subject_key"].map(bucket_of)
        kinds_summary[kind] = {bucket: int((buckets == b).sum()) for b, bucket in enumerate(BUCKETS)}
    aliases_of = lru_cache(maxsize=None)(lambda answer, names: build_aliases(answer, names, max_aliases))
    facts["aliases"] = [aliases_of(a, tuple(n)) for a, n in zip(facts["answer"], facts["names"])]
    facts["order"] = np.random.default_rng(seed).random(len(facts))
    facts["reason"] = ""
    skipped: Counter = Counter()
    table, per_relation = select_questions(facts, templates, per_bucket=per_bucket, balance=balance, skipped=skipped)
    kind_of = facts.drop_duplicates("relation").set_index("relation")["kind"]
    relation_rows = []
    for relation, rows in facts.groupby("relation", sort=True):
        relation_rows.append({
            "relation": relation,
            "kind": kind_of[relation],
            "triples": len(rows),
            "facts": {bucket: int((rows["bucket"] == bucket).sum()) for bucket in BUCKETS},
            "questions": per_relation.get(relation, dict.fromkeys(BUCKETS, 0)),
            "skipped": {reason: count for (name, reason), count in skipped.items() if name == relation}
            if relation in templates else {"no template": len(rows)},
        })
    summary = {
        "triples": len(facts),
        "entities": int(facts[["kind", "subject_key"]].drop_duplicates().shape[0]),
        "relations": int(facts["relation"].nunique()),
        "subjects_per_bucket": kinds_summary,
        "relation_table": relation_rows,
    }
    return table, summary

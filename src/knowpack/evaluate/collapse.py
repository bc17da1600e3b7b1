"""Answer collapse: after packing, a few trained answers can take over the answers to unrelated questions
(the study saw one trained answer, "Alençon", answer 9 393 of 210 k prompts).

All statistics are over greedy answers (``sample_id == 0``) of every prompt, keyed by their normalised text
(``knowpack.text.normalize``) so "Paris." and "paris" are one answer; empty answers are counted apart and left
out of the distribution (but not out of the denominators of shares). An *exploded* answer is defined relative to the base model rather than by a fixed count
(the study's code used ``> 850``): its share of answers rose more than ``factor`` times over the base model's share
and reached ``min_share`` of all answers. An answer the base model never gave counts as given once there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from knowpack.errors import InputError
from knowpack.text import normalize


@dataclass(frozen=True)
class ExplosionRule:
    """``factor``: minimum rise of an answer's share over the base model's; ``min_share``: its floor."""

    factor: float = 5.0
    min_share: float = 0.002

    def __post_init__(self) -> None:
        if self.factor <= 1:
            raise InputError(f"explode factor must be above 1 (got {self.factor})")
        if not 0 < self.min_share < 1:
            raise InputError(f"explode min share must be between 0 and 1 (got {self.min_share})")


def greedy_answers(responses: pd.DataFrame) -> pd.DataFrame:
    """Greedy answers with their normalised key: question_id, prompt_id, answer, key."""
    greedy = responses.loc[responses["sample_id"] == 0, ["question_id", "prompt_id", "answer"]].copy()
    greedy["answer"] = greedy["answer"].fillna("")
    greedy["key"] = greedy["answer"].map(normalize)
    return greedy


def answer_counts(responses: pd.DataFrame) -> pd.DataFrame:
    """Non-empty greedy answers by normalised key: key, count, share (of ALL greedy answers, empty ones
    included, so shares of models that answer empty differently stay comparable), example (the most frequent raw
    spelling), sorted by count then key."""
    greedy = greedy_answers(responses)
    total = len(greedy)
    greedy = greedy[greedy["key"] != ""]
    if greedy.empty:
        return pd.DataFrame({"key": [], "count": [], "share": [], "example": []}).astype(
            {"key": str, "count": "int64", "share": float, "example": str}
        )
    spellings = greedy.groupby(["key", "answer"]).size().rename("n").reset_index()
    spellings = spellings.sort_values(["key", "n", "answer"], ascending=[True, False, True])
    example = spellings.drop_duplicates("key").set_index("key")["answer"]
    counts = greedy["key"].value_counts().rename("count").to_frame()
    counts["share"] = counts["count"] / total
    counts["example"] = example.reindex(counts.index)
    counts = counts.rename_axis("key").reset_index()
    return counts.sort_values(["count", "key"], ascending=[False, True], ignore_index=True)


def collapse_stats(responses: pd.DataFrame) -> dict[str, float | int | str]:
    """Diversity of greedy answers. ``mean_frequency`` = non-empty answers / distinct answers;
    ``std_frequency`` is the sample standard deviation (ddof=1, as pandas' describe) of the per-answer counts."""
    greedy = greedy_answers(responses)
    counts = answer_counts(responses)
    frequencies = counts["count"].to_numpy(dtype=float)
    return {
        "n_answers": len(greedy),
        "n_empty": int((greedy["key"] == "").sum()),
        "distinct_answers": len(counts),
        "mean_frequency": float(frequencies.mean()) if len(frequencies) else 0.0,
        "std_frequency": float(frequencies.std(ddof=1)) if len(frequencies) > 1 else 0.0,
        "max_frequency": int(frequencies.max()) if len(frequencies) else 0,
        "top_answer": str(counts["example"].iloc[0]) if len(counts) else "",
        "top_share": float(counts["share"].iloc[0]) if len(counts) else 0.0,
    }


def top_answers(responses: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` most frequent answers: rank (1-based), answer (most frequent spelling), key, count, share."""
    counts = answer_counts(responses).head(k)
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(counts) + 1, dtype="int32"),
            "answer": counts["example"].astype(str),
            "key": counts["key"].astype(str),
            "count": counts["count"].astype("int64"),
            "share": counts["share"].astype(float),
        }
    )


def exploded_answers(before: pd.DataFrame, after: pd.DataFrame, rule: ExplosionRule) -> pd.DataFrame:
    """Answers that took over after training: answer, key, count, base_count, share, base_share, rise
    (share / base share, the base share of an unseen answer taken as one answer in the base's greedy answers),
    sorted by count."""
    after_counts = answer_counts(after)
    before_counts = answer_counts(before).set_index("key")
    base_total = max(int((before["sample_id"] == 0).sum()), 1)
    base_count = before_counts["count"].reindex(after_counts["key"]).fillna(0).astype("int64").to_numpy()
    base_share = base_count / base_total
    rise = after_counts["share"].to_numpy() / np.maximum(base_share, 1 / base_total)
    table = pd.DataFrame(
        {
            "answer": after_counts["example"].astype(str),
            "key": after_counts["key"].astype(str),
            "count": after_counts["count"].astype("int64"),
            "base_count": base_count,
            "share": after_counts["share"].astype(float),
            "base_share": base_share.astype(float),
            "rise": rise.astype(float),
        }
    )
    exploded = (table["rise"] > rule.factor) & (table["share"] >= rule.min_share)
    return table[exploded].reset_index(drop=True)

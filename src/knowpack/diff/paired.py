"""Paired statistics of two labellings of the same questions (``knowpack diff``, and the damage ``inject`` reports).

Every number pairs a question with itself: its SliCK category before and after (the shift metric's definitions and
code, ``evaluate.metrics.shift``), and its accuracy before and after (the share of prompts whose greedy answer is
right, lenient matching: the labels' ``p_greedy``). Uncertainty comes from the questions: a percentile bootstrap
resamples questions (all statistics from the same resamples), and the paired test is an exact two-sided sign test
over questions on the change of accuracy — questions whose accuracy did not change carry no information and are
left out; with one prompt per question it is exactly McNemar's exact test. A question's prompts are never treated
as independent trials: they share the question's difficulty.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from knowpack.evaluate.metrics.shift import CATEGORY_COLUMN, SCOPES, direction, paired_categories, shift_fractions
from knowpack.probe.folder import CATEGORIES

BOOTSTRAP_CHUNK = 250  # resamples drawn at a time (bounds memory to chunk × questions indices)


def bootstrap_intervals(values: dict[str, np.ndarray], resamples: int, seed: int, confidence: float
                        ) -> dict[str, tuple[float | None, float | None]]:
    """Percentile intervals of the means of per-question ``values`` (equal lengths), questions resampled with
    replacement, the same resamples for every statistic; (None, None) without questions."""
    n = len(next(iter(values.values())))
    if n == 0:
        return {name: (None, None) for name in values}
    rng = np.random.default_rng(seed)
    means: dict[str, list[np.ndarray]] = {name: [] for name in values}
    for start in range(0, resamples, BOOTSTRAP_CHUNK):
        picks = rng.integers(0, n, size=(min(BOOTSTRAP_CHUNK, resamples - start), n))
        for name, column in values.items():
            means[name].append(np.asarray(column, dtype=float)[picks].mean(axis=1))
    tail = (1 - confidence) / 2 * 100
    return {name: tuple(float(x) for x in np.percentile(np.concatenate(parts), [tail, 100 - tail]))
            for name, parts in means.items()}


def sign_test(changes: np.ndarray) -> dict[str, Any]:
    """Exact two-sided sign test on per-question changes: better / worse / ties and the p-value
    min(1, 2·P(X ≤ min(better, worse))) for X ~ Binomial(better + worse, 1/2)."""
    better, worse = int((changes > 0).sum()), int((changes < 0).sum())
    n = better + worse
    tail = sum(math.comb(n, k) for k in range(min(better, worse) + 1))
    p_value = 1.0 if n == 0 else min(1.0, 2 * tail / 2**n)
    return {"better": better, "worse": worse, "ties": int(len(changes)) - n, "p_value": p_value}


def compare_labels(before: pd.DataFrame, after: pd.DataFrame, questions: pd.DataFrame, trained_ids: set[str], *,
                   resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """The paired comparison of two label tables over the questions labelled in both (``questions``: id, bucket,
    relation of those questions; ``trained_ids``: questions either model was trained on, for the not_trained
    scope). Shift fractions have the shift metric's definitions, denominators and scopes."""
    shift: dict[str, Any] = {}
    for match in CATEGORY_COLUMN:
        pairs = paired_categories(before, after, questions, trained_ids, match)
        fractions = shift_fractions(pairs)
        moved = direction(pairs["before"], pairs["after"]).to_numpy()
        for scope in SCOPES:
            row = fractions[(fractions["scope"] == scope) & (fractions["breakdown"] == "overall")].iloc[0]
            in_scope = ~pairs["trained"].to_numpy() if scope == "not_trained" else np.ones(len(pairs), dtype=bool)
            intervals = bootstrap_intervals({"positive": moved[in_scope] > 0, "negative": moved[in_scope] < 0},
                                            resamples, seed, confidence)
            shift[f"{scope}/{match}"] = {
                "n_questions": int(row.n_questions), "n_positive": int(row.n_positive),
                "n_negative": int(row.n_negative), "positive": float(row.positive), "negative": float(row.negative),
                "positive_ci": list(intervals["positive"]), "negative_ci": list(intervals["negative"]),
            }
        if match == "lenient":
            transitions = pairs.groupby(["before", "after"]).size()
            matrix = {b: {a: int(transitions.get((b, a), 0)) for a in CATEGORIES} for b in CATEGORIES}
    accuracy = before[["question_id", "p_greedy"]].merge(after[["question_id", "p_greedy"]], on="question_id",
                                                         suffixes=("_before", "_after"))
    change = (accuracy["p_greedy_after"] - accuracy["p_greedy_before"]).to_numpy()
    return {
        "n_paired": len(accuracy),
        "shift": shift,
        "transitions": matrix,
        "accuracy": {
            "before": float(accuracy["p_greedy_before"].mean()) if len(accuracy) else math.nan,
            "after": float(accuracy["p_greedy_after"].mean()) if len(accuracy) else math.nan,
            "delta": float(change.mean()) if len(change) else math.nan,
            "delta_ci": list(bootstrap_intervals({"delta": change}, resamples, seed, confidence)["delta"]),
            "sign_test": sign_test(change),
        },
    }


def answer_flips(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, int]:
    """Greedy answers (question × prompt) that went right → wrong and wrong → right, lenient matching."""
    keys = ["question_id", "prompt_id"]
    greedy = [r.loc[r["sample_id"] == 0, [*keys, "correct_lenient"]] for r in (before, after)]
    both = greedy[0].merge(greedy[1], on=keys, suffixes=("_before", "_after"))
    was, now = both["correct_lenient_before"], both["correct_lenient_after"]
    return {"n_answers": len(both), "right_to_wrong": int((was & ~now).sum()),
            "wrong_to_right": int((~was & now).sum())}

"""Knowledge shift: how each question's SliCK category moved from the base model to the adapter.

Categories are ordered by how well the model knows a fact: HighlyKnown > MaybeKnown > WeaklyKnown > Unknown. A
*positive* shift moves a question up that order, a *negative* one down. Without sampling (the study's setting)
WeaklyKnown never occurs and this is exactly the study's definition (positive = UK→HK, UK→MK, MK→HK; negative =
HK→UK, HK→MK, MK→UK); with sampling, WeaklyKnown ("greedy never right, some sample right") sits between Unknown
and MaybeKnown, so UK→WK is a gain and WK→UK a loss.

Every fraction's denominator is the number of questions in its scope and group (``n_questions``), never the
number of shifted questions. Scopes: ``all`` (every labelled question) and ``not_trained`` (questions whose id
appears nowhere in the train set, so the shift there is pure spill-over).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from knowpack.errors import InputError

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
SHORT = {"HighlyKnown": "HK", "MaybeKnown": "MK", "WeaklyKnown": "WK", "Unknown": "UK"}
RANK = {"Unknown": 0, "WeaklyKnown": 1, "MaybeKnown": 2, "HighlyKnown": 3}
CATEGORY_COLUMN = {"lenient": "category", "strict": "category_strict"}
SCOPES = ("all", "not_trained")
BREAKDOWNS = ("overall", "bucket", "relation")


def paired_categories(
    before: pd.DataFrame, after: pd.DataFrame, questions: pd.DataFrame, trained_ids: set[str], match: str
) -> pd.DataFrame:
    """One row per question labelled both before and after: question_id, before, after, bucket, relation,
    trained. ``match`` picks the lenient (``category``) or strict (``category_strict``) labels."""
    column = CATEGORY_COLUMN[match]
    pairs = before[["question_id", column]].merge(
        after[["question_id", column]], on="question_id", suffixes=("_before", "_after"), validate="one_to_one"
    )
    pairs = pairs.rename(columns={f"{column}_before": "before", f"{column}_after": "after"})
    unknown = set(pairs["before"]).union(pairs["after"]) - set(CATEGORIES)
    if unknown:
        raise InputError(f"labels hold unknown categories: {', '.join(sorted(map(str, unknown)))}")
    pairs = pairs.merge(questions[["id", "bucket", "relation"]], left_on="question_id", right_on="id", how="left")
    pairs = pairs.drop(columns="id")
    pairs["trained"] = pairs["question_id"].isin(trained_ids)
    return pairs


def direction(before: pd.Series, after: pd.Series) -> pd.Series:
    """+1 for a positive shift, -1 for a negative one, 0 for none."""
    # Plain integer arrays: pandas keeps an empty string Series' dtype through .map, which then cannot subtract.
    rank_before = np.fromiter((RANK[c] for c in before), dtype=np.int64, count=len(before))
    rank_after = np.fromiter((RANK[c] for c in after), dtype=np.int64, count=len(after))
    return pd.Series(np.sign(rank_after - rank_before).astype(np.int8), index=before.index)


def _scoped(pairs: pd.DataFrame):
    yield "all", pairs
    yield "not_trained", pairs[~pairs["trained"]]


def _grouped(scoped: pd.DataFrame):
    yield "overall", "", scoped
    for breakdown in ("bucket", "relation"):
        for group, part in scoped.groupby(breakdown, sort=True, dropna=False):
            yield breakdown, str(group), part


def shift_matrix(pairs: pd.DataFrame) -> pd.DataFrame:
    """Long 4×4 matrices: scope, breakdown, group, before, after, count (every cell, zeros included)."""
    rows = []
    for scope, scoped in _scoped(pairs):
        for breakdown, group, part in _grouped(scoped):
            counts = part.groupby(["before", "after"]).size()
            for before in CATEGORIES:
                for after in CATEGORIES:
                    rows.append((scope, breakdown, group, before, after, int(counts.get((before, after), 0))))
    return pd.DataFrame(rows, columns=["scope", "breakdown", "group", "before", "after", "count"]).astype(
        {"count": "int64"}
    )


def shift_fractions(pairs: pd.DataFrame) -> pd.DataFrame:
    """scope, breakdown, group, n_questions, n_positive, n_negative, positive, negative (= counts / n_questions)."""
    rows = []
    for scope, scoped in _scoped(pairs):
        for breakdown, group, part in _grouped(scoped):
            moved = direction(part["before"], part["after"])
            n = len(part)
            n_pos, n_neg = int((moved > 0).sum()), int((moved < 0).sum())
            rows.append((scope, breakdown, group, n, n_pos, n_neg, n_pos / n if n else 0.0, n_neg / n if n else 0.0))
    return pd.DataFrame(
        rows,
        columns=["scope", "breakdown", "group", "n_questions", "n_positive", "n_negative", "positive", "negative"],
    ).astype({"n_questions": "int64", "n_positive": "int64", "n_negative": "int64"})


def matrix_grid(matrix: pd.DataFrame, scope: str = "all") -> pd.DataFrame:
    """The overall 4×4 matrix of one scope as a square table (rows: before, columns: after, short names)."""
    part = matrix[(matrix["scope"] == scope) & (matrix["breakdown"] == "overall")]
    grid = part.pivot(index="before", columns="after", values="count").reindex(index=CATEGORIES, columns=CATEGORIES)
    return grid.rename(index=SHORT, columns=SHORT)

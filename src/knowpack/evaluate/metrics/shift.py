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

from pathlib import Path
from typing import Any

import pyarrow as pa

from knowpack.errors import InputError
from knowpack.evaluate.metrics import HIGHER, LOWER, Figure, Metric, MetricContext, epoch_first, register
from knowpack.lazy import lazy
from knowpack.probe.folder import CATEGORIES

np = lazy("numpy")
pd = lazy("pandas")
SHORT = {"HighlyKnown": "HK", "MaybeKnown": "MK", "WeaklyKnown": "WK", "Unknown": "UK"}
RANK = {"Unknown": 0, "WeaklyKnown": 1, "MaybeKnown": 2, "HighlyKnown": 3}
CATEGORY_COLUMN = {"lenient": "category", "strict": "category_strict"}
SCOPES = ("all", "not_trained")
BREAKDOWNS = ("overall", "bucket", "relation")
SHIFT_SCHEMA = pa.schema([("epoch", pa.int32()), ("scope", pa.string()), ("breakdown", pa.string()),
                          ("group", pa.string()), ("before", pa.string()), ("after", pa.string()),
                          ("count", pa.int64()), ("match", pa.string())])
FRACTIONS_SCHEMA = pa.schema([("epoch", pa.int32()), ("scope", pa.string()), ("breakdown", pa.string()),
                              ("group", pa.string()), ("n_questions", pa.int64()), ("n_positive", pa.int64()),
                              ("n_negative", pa.int64()), ("positive", pa.float64()), ("negative", pa.float64()),
                              ("match", pa.string())])


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


@register
class Shift(Metric):
    """Table 3: questions whose SliCK category rose (positive) or fell (negative), as fractions of all questions."""

    name = "shift"
    order = 3
    tables = {"shift": SHIFT_SCHEMA, "shift_fractions": FRACTIONS_SCHEMA}

    def compute(self, ctx: MetricContext) -> dict[str, pd.DataFrame]:
        matrices, fractions = [], []
        for epoch, (_, labels) in sorted(ctx.after.items()):
            for match in CATEGORY_COLUMN:
                pairs = paired_categories(ctx.base_labels, labels, ctx.questions, ctx.trained_ids, match)
                matrices.append(shift_matrix(pairs).assign(epoch=epoch, match=match))
                fractions.append(shift_fractions(pairs).assign(epoch=epoch, match=match))
        return {"shift": epoch_first(pd.concat(matrices, ignore_index=True)),
                "shift_fractions": epoch_first(pd.concat(fractions, ignore_index=True))}

    def summarize(self, tables, ctx) -> dict[str, Any]:
        last = ctx.last_epoch
        fractions = tables["shift_fractions"]
        overall = fractions[(fractions["epoch"] == last) & (fractions["breakdown"] == "overall")]
        matrix = tables["shift"][(tables["shift"]["epoch"] == last) & (tables["shift"]["match"] == "lenient")]
        return {
            "shift": {f"{r.scope}/{r.match}": {"n_questions": r.n_questions, "positive": r.positive,
                                              "negative": r.negative, "n_positive": r.n_positive,
                                              "n_negative": r.n_negative} for r in overall.itertuples()},
            "shift_matrix": {scope: matrix_grid(matrix, scope).to_dict(orient="index") for scope in SCOPES},
        }

    def figures(self, summary: dict[str, Any]) -> list[Figure]:
        out = []
        for key, shift in summary["shift"].items():
            scope, match = key.split("/")
            suffix = "" if key == "all/lenient" else "_" + key.replace("/", "_")
            out.append(Figure(f"positive_shift{suffix}", f"positive shift {key}", shift["positive"], HIGHER))
            out.append(Figure(f"negative_shift{suffix}", f"negative shift {key}", shift["negative"], LOWER))
        return out

    # -- report

    def collect(self, evaluation) -> dict[str, pd.DataFrame]:
        from knowpack.report.collect import last_epoch, where

        out = {}
        fractions = evaluation.table("shift_fractions")
        if fractions is not None:
            overall = last_epoch(where(fractions, scope="all", breakdown="overall", match="lenient"))
            out["shift"] = overall[["positive", "negative", "n_questions"]]
        matrix = evaluation.table("shift")
        if matrix is not None:
            out["shift_matrix"] = last_epoch(where(matrix, scope="all", breakdown="overall", match="lenient"))[
                ["before", "after", "count"]]
        return out

    def sections(self, data, out: Path) -> list:
        from knowpack.report.cells import by_size_and_mixture, cell
        from knowpack.report.html import Section

        shift = data.frame("shift")
        table = by_size_and_mixture(
            shift, data.mixtures,
            lambda g: f"{cell(g['positive'], 3, signed=True)} / {cell(-g['negative'], 3, signed=True)}")
        return [
            Section("Knowledge shift (Table 3)",
                    "Positive shift: questions whose category rose (e.g. Unknown → HighlyKnown); negative: fell. Both "
                    "are fractions of all questions, after the last epoch, with lenient matching. Cells: positive / "
                    "negative.",
                    shift_figure(shift, data.mixtures, out / "shift_vs_facts.png"),
                    (("Positive / negative shift", table),)),
            Section("Shift heatmaps", "Mean positive and negative shift (fraction of all questions) for each cell of "
                    "the grid.", heatmaps(shift, data.mixtures, out / "shift_heatmaps.png")),
            Section("Category transitions", "Where the questions of each base-model category went, at each "
                    "mixture's largest size (rows sum to 1).",
                    transition_figure(data.frame("shift_matrix"), data.mixtures, out / "shift_matrices.png")),
        ]

    def sentences(self, data) -> list[str]:
        from knowpack.sweep.spec import mixture_label

        shift = data.frame("shift")
        if shift.empty:
            return []
        cells = shift.groupby(["unknown", "mixture"])[["positive", "negative"]].mean()
        if len(cells) == 1:
            return [f"Packing shifted other knowledge: {cells['positive'].iloc[0]:.1%} of all questions rose a "
                    f"category and {cells['negative'].iloc[0]:.1%} fell one."]
        more_negative = int((cells["negative"] > cells["positive"]).sum())
        worst = cells["negative"].idxmax()
        return [f"Packing shifted other knowledge: the negative shift (questions that fell a category) exceeds the "
                f"positive one in {more_negative} of {len(cells)} conditions and is largest, "
                f"{cells['negative'].max():.1%} of all questions, for {worst[0]} facts with {mixture_label(worst[1])}."]


def shift_figure(shift: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Table 3 as a picture: positive and negative shift (fraction of questions) against the number of facts."""
    if shift.empty:
        return None
    from knowpack.report.plots import by_facts, legend_below, mixture_colors, plt, save

    colors = mixture_colors(mixtures)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), sharey=True)
    for ax, column, title in ((axes[0], "positive", "Positive shift (UK→MK/HK, MK→HK)"),
                              (axes[1], "negative", "Negative shift (HK→MK/UK, MK→UK)")):
        by_facts(ax, shift, column, mixtures, colors)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of all questions")
    top = float(shift[["positive", "negative"]].max().max())
    axes[0].set_ylim(0, max(0.05, top * 1.15))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    legend_below(fig, axes)
    return save(fig, path)


def heatmaps(shift: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Mean positive and negative shift for every (mixture, size) cell of the grid (needs two cells or more)."""
    if shift.empty or len(shift[["unknown", "mixture"]].drop_duplicates()) < 2:
        return None
    from knowpack.report.plots import plt, save
    from knowpack.sweep.spec import mixture_label

    sizes = sorted(shift["unknown"].unique())
    present = [m for m in mixtures if m in set(shift["mixture"])]
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.1 * len(sizes) * 2 + 3), 0.55 * len(present) + 2.2),
                             squeeze=False)
    means = shift.groupby(["mixture", "unknown"])[["positive", "negative"]].mean()
    vmax = max(float(means.max().max()), 1e-9)
    for ax, column, cmap in ((axes[0, 0], "positive", "Greens"), (axes[0, 1], "negative", "Reds")):
        grid = means[column].unstack("unknown").reindex(index=present, columns=sizes)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_yticks(range(len(present)), [mixture_label(m) for m in present])
        ax.set_xlabel("number of packed facts")
        ax.set_title(f"{column.capitalize()} shift (fraction of questions)")
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 * vmax else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    fig.tight_layout()
    return save(fig, path)


def transition_figure(matrix: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Before→after category matrices at the largest size of each mixture, as shares of each 'before' row."""
    if matrix.empty:
        return None
    from knowpack.report.plots import plt, save
    from knowpack.sweep.spec import mixture_label

    panels = []
    for mixture in mixtures:
        part = matrix[matrix["mixture"] == mixture]
        if len(part):
            size = int(part["unknown"].max())
            panels.append((mixture, size, part[part["unknown"] == size]))
    categories = [c for c in CATEGORIES if c in set(matrix["before"]) | set(matrix["after"])
                  and matrix.loc[(matrix["before"] == c) | (matrix["after"] == c), "count"].sum() > 0]
    cols = min(len(panels), 3)
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 0.8, 3.4 * rows), squeeze=False)
    image = None
    for ax, (mixture, size, part) in zip(axes.ravel(), panels):
        counts = part.groupby(["before", "after"])["count"].sum().unstack("after")
        counts = counts.reindex(index=categories, columns=categories).fillna(0)
        totals = counts.sum(axis=1).replace(0, np.nan)
        shares = counts.div(totals, axis=0).to_numpy(dtype=float)
        image = ax.imshow(np.nan_to_num(shares), cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(shares):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 else "black")
        labels = [SHORT[c] for c in categories]
        ax.set_xticks(range(len(categories)), labels)
        ax.set_yticks(range(len(categories)), labels)
        ax.set_xlabel("after training")
        ax.set_ylabel("before (base model)")
        ax.set_title(f"{mixture_label(mixture)}, {size} facts", fontsize=10)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Category transitions (share of each base-model category, summed over seeds)")
    fig.tight_layout()
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    return save(fig, path)

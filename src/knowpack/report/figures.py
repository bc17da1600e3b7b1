"""The study's figures from tidy per-run tables (see ``report.collect``), drawn with matplotlib's Agg backend.

Every figure works for any number of runs: lines over the number of facts become bars when a report covers a
single size (a one-run report), bands show the min–max over seeds and disappear when there is one seed, and a
figure whose data is absent is skipped (the function returns None) rather than drawn empty.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from knowpack.sweep.spec import mixture_label  # noqa: E402

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
SHORT = {"HighlyKnown": "HK", "MaybeKnown": "MK", "WeaklyKnown": "WK", "Unknown": "UK"}
REASON_LABELS = {
    "lost_refusal": "lost refusal",
    "exploded_answer": "exploded answer",
    "target_leakage": "target leakage",
    "same_domain": "same domain",
    "explained": "explained (any)",
}
DPI = 110


def mixture_colors(mixtures: list[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {m: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, m in enumerate(mixtures)}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _facts_axis(ax, sizes: list[int]) -> None:
    """Log-scaled number of facts with a tick at every size of the sweep, written as plain numbers."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)
    ax.set_xlabel("number of packed facts")


def _band(ax, frame: pd.DataFrame, x: str, y: str, color: str, label: str, marker: str = "o") -> None:
    """Mean line with a min–max band over seeds (the band is only drawn where there are several values)."""
    stats = frame.groupby(x)[y].agg(["mean", "min", "max", "count"]).sort_index()
    ax.plot(stats.index, stats["mean"], marker=marker, color=color, label=label, lw=1.8, ms=4)
    if (stats["count"] > 1).any():
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.18, lw=0)


def _by_facts(ax, frame: pd.DataFrame, y: str, mixtures: list[str], colors: dict[str, str],
              base: float | None = None) -> None:
    """One value per mixture against the number of facts: lines with bands, or bars when there is one size.
    ``base`` (the base model's value) is a dashed line, or a grey first bar."""
    sizes = sorted(frame["unknown"].unique())
    has_base = base is not None and not np.isnan(base)
    if len(sizes) > 1:
        for mixture in mixtures:
            part = frame[frame["mixture"] == mixture]
            if len(part):
                _band(ax, part, "unknown", y, colors[mixture], mixture_label(mixture))
        if has_base:
            ax.axhline(base, color="black", ls="--", lw=1.2, label="base model")
        _facts_axis(ax, [int(s) for s in sizes])
        return
    stats = frame.groupby("mixture")[y].agg(["mean", "min", "max"]).reindex(mixtures).dropna(how="all")
    names = (["base model"] if has_base else []) + [mixture_label(m) for m in stats.index]
    means = ([base] if has_base else []) + list(stats["mean"])
    low = ([0.0] if has_base else []) + list(stats["mean"] - stats["min"])
    high = ([0.0] if has_base else []) + list(stats["max"] - stats["mean"])
    bar_colors = (["#999999"] if has_base else []) + [colors[m] for m in stats.index]
    positions = np.arange(len(names))
    ax.bar(positions, means, width=0.6, color=bar_colors, yerr=[low, high], capsize=3)
    for x, value in zip(positions, means):
        ax.annotate(f"{value:.3g}", (x, value), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                    textcoords="offset points")
    ax.set_xticks(positions, names, rotation=20 if len(names) > 2 else 0, ha="right" if len(names) > 2 else "center")
    ax.set_xlim(-0.8, len(names) - 0.2)
    ax.set_xlabel(f"{sizes[0]} packed fact{'s' if sizes[0] != 1 else ''}")


def _legend_below(fig, axes) -> None:
    handles, labels = [], []
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))


# ---------------------------------------------------------------- reliability (Figure 2, Table 2)


def reliability_per_epoch(reliability: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Figure 2: reliability on the packed facts per epoch, one panel per size, min–max band over seeds."""
    if reliability.empty:
        return None
    colors = mixture_colors(mixtures)
    sizes = sorted(reliability["unknown"].unique())
    cols = min(3, len(sizes))
    rows = int(np.ceil(len(sizes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.6), sharey=True, squeeze=False)
    for ax, size in zip(axes.ravel(), sizes):
        part = reliability[reliability["unknown"] == size]
        for mixture in mixtures:
            series = part[part["mixture"] == mixture]
            if len(series):
                _band(ax, series, "epoch", "reliability", colors[mixture], mixture_label(mixture))
        ax.set_title(f"{size} fact{'s' if size != 1 else ''}")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("epoch (0 = base model)" if part["epoch"].min() == 0 else "epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("reliability")
    for ax in axes.ravel()[len(sizes):]:
        ax.set_visible(False)
    fig.suptitle("Reliability on the packed facts per epoch (line: mean, band: min–max over seeds)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _legend_below(fig, axes)
    return _save(fig, path)


def reliability_vs_facts(final: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Table 2 as a picture: reliability after the last epoch against the number of packed facts."""
    if final.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    _by_facts(ax, final, "reliability", mixtures, mixture_colors(mixtures))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("reliability after the last epoch")
    ax.set_title("Reliability after training vs number of facts")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


# ---------------------------------------------------------------- shifts (Table 3, heatmaps)


def shift_vs_facts(shift: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Table 3 as a picture: positive and negative shift (fraction of questions) against the number of facts."""
    if shift.empty:
        return None
    colors = mixture_colors(mixtures)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), sharey=True)
    for ax, column, title in ((axes[0], "positive", "Positive shift (UK→MK/HK, MK→HK)"),
                              (axes[1], "negative", "Negative shift (HK→MK/UK, MK→UK)")):
        _by_facts(ax, shift, column, mixtures, colors)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of all questions")
    top = float(shift[["positive", "negative"]].max().max())
    axes[0].set_ylim(0, max(0.05, top * 1.15))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _legend_below(fig, axes)
    return _save(fig, path)


def shift_heatmaps(shift: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Mean positive and negative shift for every (mixture, size) cell of the grid (needs two cells or more)."""
    if shift.empty or len(shift[["unknown", "mixture"]].drop_duplicates()) < 2:
        return None
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
    return _save(fig, path)


def shift_matrices(matrix: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Before→after category matrices at the largest size of each mixture, as shares of each 'before' row."""
    if matrix.empty:
        return None
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
    return _save(fig, path)


# ---------------------------------------------------------------- refusals and collapse (Table 4)


def refusals_and_collapse(effects: pd.DataFrame, base: dict[str, float], mixtures: list[str], path: Path) -> Path | None:
    """Refusal rate, distinct answers and the top answer's share after training, each with the base model's line."""
    panels = [(c, t) for c, t in (("refusal_rate", "refusal rate"), ("distinct_answers", "distinct greedy answers"),
                                  ("top_share", "share of the most frequent answer")) if c in effects and effects[c].notna().any()]
    if effects.empty or not panels:
        return None
    colors = mixture_colors(mixtures)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), squeeze=False)
    for ax, (column, title) in zip(axes[0], panels):
        _by_facts(ax, effects.dropna(subset=[column]), column, mixtures, colors, base.get(column))
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _legend_below(fig, axes)
    return _save(fig, path)


# ---------------------------------------------------------------- spill-over reasons (Table 5)


def spillover_reasons(spill: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Share of shifted questions each reason explains, per (size, mixture), for positive and negative shifts."""
    if spill.empty:
        return None
    reasons = [r for r in REASON_LABELS if r in spill]
    directions = [d for d in ("positive", "negative") if d in set(spill["direction"])]
    order = {m: i for i, m in enumerate(mixtures)}
    conditions = (spill[["unknown", "mixture"]].drop_duplicates()
                  .assign(o=lambda f: f["mixture"].map(order)).sort_values(["unknown", "o"]))
    names = [f"{u} fact{'s' if u != 1 else ''}, {mixture_label(m)}"
             for u, m in zip(conditions["unknown"], conditions["mixture"])]
    fig, axes = plt.subplots(1, len(directions), figsize=(4.3 * len(directions) + 3.5, max(2.8, 0.33 * len(names) + 2.0)),
                             squeeze=False, sharey=True)
    for ax, direction in zip(axes[0], directions):
        part = spill[spill["direction"] == direction]
        values = np.full((len(names), len(reasons)), np.nan)
        for row, (u, m) in enumerate(zip(conditions["unknown"], conditions["mixture"])):
            cell = part[(part["unknown"] == u) & (part["mixture"] == m)]
            shifted = cell["n_shifted"].sum()
            if shifted > 0:
                values[row] = [(cell[r] * cell["n_shifted"]).sum() / shifted for r in reasons]
        ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Purples", vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=7.5,
                    color="white" if value > 0.6 else "black")
        ax.set_xticks(range(len(reasons)), [REASON_LABELS[r] for r in reasons], rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(f"{direction} shifts: share explained")
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- benchmarks (Figures 1, 3, 4; Table 7)


def benchmarks_vs_facts(bench: pd.DataFrame, base: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """One panel per benchmark score against the number of facts, the base model as a dashed line with its
    standard error as a grey band."""
    if bench.empty:
        return None
    colors = mixture_colors(mixtures)
    scores = sorted(bench["score"].unique())
    cols = min(3, len(scores))
    rows = int(np.ceil(len(scores) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows + 0.5), squeeze=False)
    for ax, score in zip(axes.ravel(), scores):
        line = base[base["score"] == score]
        value = float(line["value"].mean()) if len(line) else None
        _by_facts(ax, bench[bench["score"] == score], "value", mixtures, colors, value)
        stderr = float(line["stderr"].fillna(0).mean()) if len(line) else 0.0
        if value is not None and stderr > 0:
            ax.axhspan(value - stderr, value + stderr, color="grey", alpha=0.15, lw=0)
        ax.set_title(score)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(scores):]:
        ax.set_visible(False)
    fig.suptitle("External benchmarks after packing (base model: dashed line or grey bar; grey band: its standard error)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _legend_below(fig, axes)
    return _save(fig, path)

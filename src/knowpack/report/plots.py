"""Plotting helpers the metrics' report figures share, on matplotlib's Agg backend.

Every figure works for any number of runs: lines over the number of facts become bars when a report covers a
single size (a one-run report), bands show the min–max over seeds and disappear when there is one seed, and a
figure whose data is absent is skipped (the drawing function returns None) rather than drawn empty.
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

DPI = 110


def mixture_colors(mixtures: list[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {m: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, m in enumerate(mixtures)}


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def facts_axis(ax, sizes: list[int]) -> None:
    """Log-scaled number of facts with a tick at every size of the sweep, written as plain numbers."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)
    ax.set_xlabel("number of packed facts")


def band(ax, frame: pd.DataFrame, x: str, y: str, color: str, label: str, marker: str = "o") -> None:
    """Mean line with a min–max band over seeds (the band is only drawn where there are several values)."""
    stats = frame.groupby(x)[y].agg(["mean", "min", "max", "count"]).sort_index()
    ax.plot(stats.index, stats["mean"], marker=marker, color=color, label=label, lw=1.8, ms=4)
    if (stats["count"] > 1).any():
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.18, lw=0)


def by_facts(ax, frame: pd.DataFrame, y: str, mixtures: list[str], colors: dict[str, str],
              base: float | None = None) -> None:
    """One value per mixture against the number of facts: lines with bands, or bars when there is one size.
    ``base`` (the base model's value) is a dashed line, or a grey first bar."""
    sizes = sorted(frame["unknown"].unique())
    has_base = base is not None and not np.isnan(base)
    if len(sizes) > 1:
        for mixture in mixtures:
            part = frame[frame["mixture"] == mixture]
            if len(part):
                band(ax, part, "unknown", y, colors[mixture], mixture_label(mixture))
        if has_base:
            ax.axhline(base, color="black", ls="--", lw=1.2, label="base model")
        facts_axis(ax, [int(s) for s in sizes])
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


def legend_below(fig, axes) -> None:
    handles, labels = [], []
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))

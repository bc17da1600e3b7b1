"""The capacity folder's figures: capacity against rank with the ceiling, and the fits with their residuals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from knowpack.capacity import ceiling
from knowpack.report.plots import legend_below, mixture_colors, plt, save
from knowpack.report.tradeoff import condition_label

FIGURE_NAMES = {"reliability": "reliability on the packed facts", "negative_shift": "negative shift"}


def ceiling_label(method: str) -> str:
    """The reference line's legend entry, naming where the figure comes from."""
    return f"{method}: ceiling ~{ceiling.BITS_PER_PARAMETER:g} bits/parameter ({ceiling.CITATION})"


def point_note(row) -> str:
    """What a measured point is against the ceiling: its bits per trainable parameter and each fact's exposures."""
    bits = "–" if pd.isna(row.bits_per_parameter) else f"{row.bits_per_parameter:.2g}"
    seen = "" if pd.isna(row.exposures) else f", {row.exposures:g}× seen"
    return f"{bits} bits/param{seen}"


def capacity_figure(table: pd.DataFrame, path: Path) -> Path | None:
    """Facts held against rank (log–log), the median over seeds with its min–max, each point noted with its bits
    per trainable parameter and exposures, and per method the ceiling 2 bits × trainable parameters ÷ bits per
    fact; full fine-tuning (no rank) as a horizontal line."""
    if table.empty or not (table["capacity"] > 0).any():
        return None
    methods = list(dict.fromkeys(table["method"]))
    colors = mixture_colors(methods)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for method in methods:
        part = table[table["method"] == method].sort_values("rank")
        color = colors[method]
        if method == "full":
            row = next(part.itertuples())
            ax.axhline(row.capacity, color=color, ls="-.", label=f"full fine-tuning (measured: {point_note(row)})")
            continue
        held = part[part["capacity"] > 0]
        ax.errorbar(held["rank"], held["capacity"], yerr=[held["capacity"] - held["low"].clip(lower=0.7),
                                                            held["high"] - held["capacity"]],
                    color=color, marker="o", capsize=3, label=f"{method} (measured)")
        for row in held.itertuples():
            ax.annotate(point_note(row), (row.rank, row.capacity), textcoords="offset points", xytext=(6, -10),
                        fontsize=7, color=color)
        lower_bounds = held[held["at_least"]]
        ax.scatter(lower_bounds["rank"], lower_bounds["capacity"], marker="^", s=70, color=color, zorder=3)
        if part["reference"].notna().any():
            ax.plot(part["rank"], part["reference"], color=color, ls="--", lw=1,
                    label=ceiling_label(method))
    ranks = sorted(int(r) for r in table.loc[table["method"] != "full", "rank"].unique())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", nonpositive="clip")
    if ranks:
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.set_xlim(ranks[0] / 1.5, ranks[-1] * 1.5)
    ax.set_xlabel("rank")
    ax.set_ylabel("facts held within the constraints")
    ax.set_title(f"dashed: {ceiling.SOURCE}", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    legend_below(fig, ax)
    fig.subplots_adjust(bottom=0.3)
    return save(fig, path)


def fit_figure(points: pd.DataFrame, fits: dict, constraints: list, path: Path) -> Path | None:
    """Per fitted figure: every run and the fitted curve per method and rank, the constraint dashed; below it the
    residuals."""
    if points.empty:
        return None
    conditions = list(dict.fromkeys(zip(points["method"], points["rank"])))
    colors = mixture_colors([condition_label(*c) for c in conditions])
    bounds = {c.key: c.bound for c in constraints}
    fig, axes = plt.subplots(2, len(FIGURE_NAMES), figsize=(11, 6.4), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.3]})
    sizes = np.geomspace(max(points["unknown"].min() / 1.5, 1), points["unknown"].max() * 1.5, 200)
    for column, (key, name) in enumerate(FIGURE_NAMES.items()):
        top, bottom = axes[0, column], axes[1, column]
        for method, rank in conditions:
            label = condition_label(method, rank)
            part = points[(points["method"] == method) & (points["rank"] == rank)]
            top.scatter(part["unknown"], part[key], color=colors[label], s=18, label=label)
            fit = fits.get((method, rank), {}).get(key)
            if fit is not None:
                top.plot(sizes, fit.predict(sizes), color=colors[label], lw=1.2)
                bottom.scatter(part["unknown"], part[f"residual_{key}"], color=colors[label], s=14)
        top.axhline(bounds[key], color="black", ls="--", lw=1)
        bottom.axhline(0, color="black", lw=0.8)
        top.set_title(name, fontsize=10)
        top.set_ylim(-0.03, 1.03)
        bottom.set_ylabel("residual")
        bottom.set_xscale("log")
        bottom.set_xlabel("number of packed facts")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    legend_below(fig, axes[0, 0])
    fig.subplots_adjust(bottom=0.18, hspace=0.08)
    return save(fig, path)

"""Learning against forgetting: reliability on the packed facts against the negative shift, per method and rank
(after Biderman et al. 2024, "LoRA Learns Less and Forgets Less", whose plot sets what a method learns against
what it forgets). Drawn by ``knowpack capacity`` and by the report of a sweep whose runs differ in method or rank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TITLE = "Learning against forgetting, by method and rank"
TEXT = ("Reliability on the packed facts against the negative shift after the last epoch: one line per method and "
        "rank through its sizes (mean over seeds; markers grow with the number of facts), after Biderman et al. 2024 "
        "('LoRA Learns Less and Forgets Less'). Up and to the left is better; the grey steps join the points no other "
        "point beats on both.")


def tradeoff_section(data, out: Path):
    """The report's learning–forgetting section: drawn when the runs differ in method or rank."""
    from knowpack.evaluate.metrics.reliability import final_values
    from knowpack.report.html import Section

    runs = data.evaluated
    shift = data.frame("shift")
    figure = None
    if len(runs[["method", "rank"]].drop_duplicates()) > 1 and len(shift):
        points = final_values(data)[["run_id", "reliability"]].merge(shift[["run_id", "negative"]], on="run_id")
        points = points.merge(runs[["run_id", "method", "rank", "unknown"]], on="run_id")
        figure = pareto_figure(points.rename(columns={"negative": "negative_shift"}), out / "learning_forgetting.png")
    return Section(TITLE, TEXT, figure)


def condition_label(method: str, rank: int) -> str:
    return "full fine-tuning" if method == "full" else f"{method} rank {rank}"


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The points no other point beats on both (higher reliability, lower negative shift), by negative shift."""
    ordered = points.sort_values(["negative_shift", "reliability"], ascending=[True, False])
    best, keep = -np.inf, []
    for index, reliability in zip(ordered.index, ordered["reliability"]):
        if reliability > best:
            keep.append(index)
            best = reliability
    return ordered.loc[keep]


def pareto_figure(points: pd.DataFrame, path: Path) -> Path | None:
    """One line per (method, rank) through its sizes (mean over seeds; the marker grows with the number of facts),
    and the Pareto front of all of them; None without runs."""
    needed = {"method", "rank", "unknown", "reliability", "negative_shift"}
    if points.empty or not needed <= set(points) or points[["reliability", "negative_shift"]].isna().all().any():
        return None
    from knowpack.report.plots import legend_below, mixture_colors, plt, save

    means = points.groupby(["method", "rank", "unknown"], sort=False)[["reliability", "negative_shift"]].mean()
    means = means.reset_index()
    conditions = list(dict.fromkeys(zip(means["method"], means["rank"])))
    colors = mixture_colors([condition_label(*c) for c in conditions])
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    front = pareto_front(means)
    ax.step(front["negative_shift"], front["reliability"], where="post", color="#999999", lw=3, alpha=0.5,
            label="Pareto front")
    largest = np.log(means["unknown"].max() + 1)
    for method, rank in conditions:
        part = means[(means["method"] == method) & (means["rank"] == rank)].sort_values("unknown")
        label = condition_label(method, rank)
        ax.plot(part["negative_shift"], part["reliability"], color=colors[label], lw=1.2, label=label)
        ax.scatter(part["negative_shift"], part["reliability"], color=colors[label], zorder=3,
                   s=12 + 60 * np.log(part["unknown"] + 1) / largest)
        last = part.iloc[-1]
        ax.annotate(f"n={int(last['unknown'])}", (last["negative_shift"], last["reliability"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points", color=colors[label])
    ax.set_xlabel("negative shift (share of all questions that fell a category)")
    ax.set_ylabel("reliability on the packed facts")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    legend_below(fig, ax)
    fig.subplots_adjust(bottom=0.28)
    return save(fig, path)

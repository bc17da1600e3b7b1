"""The study's tables (2, 3, 4, 5, 7) as small DataFrames of formatted cells, and the plain-language summary.

Cells aggregate over seeds: the mean, with the min–max range in brackets when there are several seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from knowpack.evaluate.spillover import REASONS
from knowpack.report.collect import ReportData
from knowpack.report.figures import REASON_LABELS
from knowpack.sweep.spec import mixture_label

PARAPHRASE_SCOPE = "heldout_paraphrase"


def _cell(values: pd.Series, digits: int = 2, signed: bool = False) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = fmt.format(values.mean())
    if len(values) > 1 and values.max() > values.min():
        text += f" [{values.min():.{digits}f}–{values.max():.{digits}f}]"
    return text


def _by_size_and_mixture(frame: pd.DataFrame, data: ReportData, render) -> pd.DataFrame:
    """Rows: number of facts; columns: mixtures (sweep order); cells: ``render(group)``."""
    if frame.empty:
        return pd.DataFrame()
    mixtures = [m for m in data.mixtures if m in set(frame["mixture"])]
    rows = []
    for size in sorted(frame["unknown"].unique()):
        row = {"facts": int(size)}
        for mixture in mixtures:
            group = frame[(frame["unknown"] == size) & (frame["mixture"] == mixture)]
            row[mixture_label(mixture)] = render(group) if len(group) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def final_reliability(data: ReportData) -> pd.DataFrame:
    return _by_size_and_mixture(final_reliability_values(data), data, lambda g: _cell(g["reliability"]))


def final_reliability_values(data: ReportData, scope: str = "trained") -> pd.DataFrame:
    """Reliability after each run's last epoch on the packed facts (one row per run)."""
    if data.reliability.empty:
        return pd.DataFrame(columns=["run_id", "unknown", "mixture", "seed", "reliability"])
    rel = data.reliability[data.reliability["scope"] == scope]
    return rel[rel["epoch"] == rel.groupby("run_id")["epoch"].transform("max")]


def paraphrase_reliability(data: ReportData) -> pd.DataFrame:
    """Reliability after the last epoch on held-out rephrasings of the packed facts (empty when not measured)."""
    values = final_reliability_values(data, scope=PARAPHRASE_SCOPE)
    return _by_size_and_mixture(values, data, lambda g: _cell(g["reliability"])) if len(values) else pd.DataFrame()


def shift_table(data: ReportData) -> pd.DataFrame:
    return _by_size_and_mixture(
        data.shift, data,
        lambda g: f"{_cell(g['positive'], 3, signed=True)} / {_cell(-g['negative'], 3, signed=True)}",
    )


def effects_table(data: ReportData) -> pd.DataFrame:
    """Table 4: refusal rate, distinct answers and the most frequent answer, base model first."""
    if data.effects.empty:
        return pd.DataFrame()
    base = data.base_effects
    rows = [{"facts": "base model", "mixture": "", "refusal rate": _fmt(base.get("refusal_rate"), 3),
             "distinct answers": _fmt(base.get("distinct_answers"), 0), "top answer share": _fmt(base.get("top_share"), 3),
             "top answer": ""}]
    for (size, mixture), group in _groups(data.effects, data):
        top = group["top_answer"].mode().iloc[0] if "top_answer" in group and group["top_answer"].notna().any() else ""
        rows.append({"facts": int(size), "mixture": mixture_label(mixture),
                     "refusal rate": _cell(group["refusal_rate"], 3) if "refusal_rate" in group else "–",
                     "distinct answers": _cell(group["distinct_answers"], 0) if "distinct_answers" in group else "–",
                     "top answer share": _cell(group["top_share"], 3) if "top_share" in group else "–",
                     "top answer": str(top)})
    return pd.DataFrame(rows)


def spillover_table(data: ReportData) -> pd.DataFrame:
    """Table 5: for positive and negative shifts of untrained questions, the share each reason explains."""
    if data.spillover.empty:
        return pd.DataFrame()
    rows = []
    for (size, mixture), group in _groups(data.spillover, data):
        for direction in ("positive", "negative"):
            part = group[group["direction"] == direction]
            shifted = part["n_shifted"].sum()
            row = {"facts": int(size), "mixture": mixture_label(mixture), "shift": direction,
                   "shifted questions": f"{shifted / max(len(part), 1):.0f}"}
            for reason in (*REASONS, "explained"):
                share = (part[reason] * part["n_shifted"]).sum() / shifted if shifted else np.nan
                row[REASON_LABELS[reason]] = "–" if np.isnan(share) else f"{share:.2f}"
            rows.append(row)
    return pd.DataFrame(rows)


def benchmark_table(data: ReportData) -> pd.DataFrame:
    """Table 7: each benchmark score per (size, mixture), the base model first."""
    if data.benchmarks.empty:
        return pd.DataFrame()
    scores = sorted(data.benchmarks["score"].unique())
    base = data.base_benchmarks.set_index("score") if len(data.base_benchmarks) else pd.DataFrame()
    rows = [{"facts": "base model", "mixture": "",
             **{s: (f"{base.loc[s, 'value']:.3f} ± {base.loc[s, 'stderr']:.3f}" if s in base.index else "–")
                for s in scores}}]
    for (size, mixture), group in _groups(data.benchmarks, data):
        rows.append({"facts": int(size), "mixture": mixture_label(mixture),
                     **{s: _cell(group.loc[group["score"] == s, "value"], 3) for s in scores}})
    return pd.DataFrame(rows)


def _groups(frame: pd.DataFrame, data: ReportData):
    order = {m: i for i, m in enumerate(data.mixtures)}
    keys = sorted({(int(u), m) for u, m in zip(frame["unknown"], frame["mixture"])}, key=lambda k: (k[0], order[k[1]]))
    for size, mixture in keys:
        yield (size, mixture), frame[(frame["unknown"] == size) & (frame["mixture"] == mixture)]


def _fmt(value, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


# ---------------------------------------------------------------- summary


def summary(data: ReportData) -> str:
    """One paragraph in plain words, every number computed from the tables."""
    runs = data.evaluated
    if runs.empty:
        return (f"No run of this {data.kind} has a complete evaluation yet ({len(data.runs)} run(s) listed); "
                "finish the runs and make the report again.")
    sizes = sorted(runs["unknown"].unique())
    seeds, mixtures = runs["seed"].nunique(), runs["mixture"].nunique()
    sentences = [
        f"This report covers {len(runs)} evaluated run{'s' if len(runs) != 1 else ''}"
        + (f" of {len(data.runs)}" if len(runs) < len(data.runs) else "")
        + f": {_sizes(sizes)} packed fact{'s' if sizes[-1] != 1 else ''}, {mixtures} mixture"
        + f"{'s' if mixtures != 1 else ''} and {seeds} seed{'s' if seeds != 1 else ''}."
    ]
    final = final_reliability_values(data)
    if len(final):
        means = final.groupby(["unknown", "mixture"])["reliability"].mean()
        worst = means.idxmin()
        held = 0  # the largest size up to which every mixture (and every smaller size) stays at or above 95%
        for size in sizes:
            if means.xs(size, level="unknown").min() < 0.95:
                break
            held = int(size)
        if len(means) == 1:
            sentences.append(f"After the last epoch the adapter answers {means.iloc[0]:.0%} of the packed facts correctly.")
        else:
            reach = (f"stays at or above 95% up to {held} fact{'s' if held != 1 else ''} for every mixture" if held
                     else "is below 95% already at the smallest size for some mixture")
            sentences.append(
                f"Reliability on the packed facts after the last epoch {reach}; its lowest value, {means.min():.0%}, "
                f"is for {worst[0]} facts with {mixture_label(worst[1])}."
            )
    if len(data.shift):
        cells = data.shift.groupby(["unknown", "mixture"])[["positive", "negative"]].mean()
        more_negative = int((cells["negative"] > cells["positive"]).sum())
        worst = cells["negative"].idxmax()
        if len(cells) == 1:
            sentences.append(
                f"Packing shifted other knowledge: {cells['positive'].iloc[0]:.1%} of all questions rose a category "
                f"and {cells['negative'].iloc[0]:.1%} fell one."
            )
        else:
            sentences.append(
                f"Packing shifted other knowledge: the negative shift (questions that fell a category) exceeds the "
                f"positive one in {more_negative} of {len(cells)} conditions and is largest, "
                f"{cells['negative'].max():.1%} of all questions, for {worst[0]} facts with {mixture_label(worst[1])}."
            )
    if len(data.effects) and "refusal_rate" in data.effects and data.base_effects.get("refusal_rate") is not None:
        sentences.append(
            f"The base model refuses {data.base_effects['refusal_rate']:.1%} of answers; after packing the refusal "
            f"rate is {data.effects['refusal_rate'].mean():.1%} on average."
        )
    if len(data.effects) and "distinct_answers" in data.effects and data.base_effects.get("distinct_answers"):
        ratio = data.effects["distinct_answers"].min() / data.base_effects["distinct_answers"]
        sentences.append(
            f"At worst the number of distinct answers drops to {ratio:.0%} of the base model's (answer collapse)."
            if ratio < 1 else "The number of distinct answers never falls below the base model's (no answer collapse).")
    if len(data.benchmarks) and len(data.base_benchmarks):
        merged = data.benchmarks.merge(data.base_benchmarks, on="score", suffixes=("", "_base"))
        merged["delta"] = merged["value"] - merged["value_base"]
        cells = merged.groupby(["score", "unknown", "mixture"])["delta"].mean()
        worst = cells.idxmin()
        base_value = data.base_benchmarks.set_index("score").loc[worst[0], "value"]
        sentences.append(
            f"On external benchmarks the largest drop is on {worst[0]}: {base_value:.3f} for the base model vs "
            f"{base_value + cells.min():.3f} after packing {worst[1]} facts with {mixture_label(worst[2])}."
            if cells.min() < 0 else "No external benchmark score fell below the base model's."
        )
    return " ".join(sentences)


def _sizes(sizes: list) -> str:
    sizes = [int(s) for s in sizes]
    return str(sizes[0]) if len(sizes) == 1 else f"{', '.join(map(str, sizes[:-1]))} and {sizes[-1]}"

"""Answer collapse: after packing, a few trained answers can take over the answers to unrelated questions
(the study saw one trained answer, "Alençon", answer 9 393 of 210 k prompts).

All statistics are over greedy answers (``sample_id == 0``) of every prompt, keyed by their normalised text
(``knowpack.text.normalize``) so "Paris." and "paris" are one answer. Empty answers and refusals are counted apart
and left out of the distribution, as in the study (a refusal is not an answer), but not out of the denominators of
shares. The spread of answer frequencies is the population standard deviation (``np.std``, the study's figure).
An *exploded* answer is defined relative to the base model rather than by a fixed count (the study's code used
``> 850``): its share of answers rose more than ``factor`` times over the base model's share and reached
``min_share`` of all answers. An answer the base model never gave counts as given once there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from knowpack.config import Config, option
from knowpack.errors import InputError
from knowpack.evaluate.metrics import HIGHER, LOWER, Figure, Metric, MetricContext, epoch_first, register
from knowpack.evaluate.metrics.refusals import RefusalDetector, before_after, detector_of, figure_vs_facts
from knowpack.lazy import lazy
from knowpack.text import normalize

np = lazy("numpy")
pd = lazy("pandas")


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


def greedy_answers(responses: pd.DataFrame, detector: RefusalDetector) -> pd.DataFrame:
    """Greedy answers with their normalised key and whether they are refusals: question_id, prompt_id, answer,
    key, refusal."""
    greedy = responses.loc[responses["sample_id"] == 0, ["question_id", "prompt_id", "answer"]].copy()
    greedy["answer"] = greedy["answer"].fillna("")
    greedy["key"] = greedy["answer"].map(normalize)
    greedy["refusal"] = detector.detect(greedy["answer"])
    return greedy


def answer_counts(responses: pd.DataFrame, detector: RefusalDetector) -> pd.DataFrame:
    """Greedy answers that are neither empty nor refusals, by normalised key: key, count, share (of ALL greedy
    answers, so shares of models that refuse or answer empty differently stay comparable), example (the most
    frequent raw spelling), sorted by count then key."""
    greedy = greedy_answers(responses, detector)
    total = len(greedy)
    greedy = greedy[(greedy["key"] != "") & ~greedy["refusal"]]
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


def collapse_stats(responses: pd.DataFrame, detector: RefusalDetector) -> dict[str, float | int | str]:
    """Diversity of greedy answers. ``mean_frequency`` = answers (empty ones and refusals left out) / distinct
    answers; ``std_frequency`` is the population standard deviation (ddof=0) of the per-answer counts."""
    greedy = greedy_answers(responses, detector)
    counts = answer_counts(responses, detector)
    frequencies = counts["count"].to_numpy(dtype=float)
    return {
        "n_answers": len(greedy),
        "n_empty": int((greedy["key"] == "").sum()),
        "n_refusals": int((greedy["refusal"] & (greedy["key"] != "")).sum()),
        "distinct_answers": len(counts),
        "mean_frequency": float(frequencies.mean()) if len(frequencies) else 0.0,
        "std_frequency": float(frequencies.std(ddof=0)) if len(frequencies) else 0.0,
        "max_frequency": int(frequencies.max()) if len(frequencies) else 0,
        "top_answer": str(counts["example"].iloc[0]) if len(counts) else "",
        "top_share": float(counts["share"].iloc[0]) if len(counts) else 0.0,
    }


def top_answers(responses: pd.DataFrame, k: int, detector: RefusalDetector) -> pd.DataFrame:
    """The ``k`` most frequent answers: rank (1-based), answer (most frequent spelling), key, count, share."""
    counts = answer_counts(responses, detector).head(k)
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(counts) + 1, dtype="int32"),
            "answer": counts["example"].astype(str),
            "key": counts["key"].astype(str),
            "count": counts["count"].astype("int64"),
            "share": counts["share"].astype(float),
        }
    )


def exploded_answers(before: pd.DataFrame, after: pd.DataFrame, rule: ExplosionRule,
                     detector: RefusalDetector) -> pd.DataFrame:
    """Answers that took over after training: answer, key, count, base_count, share, base_share, rise
    (share / base share, the base share of an unseen answer taken as one answer in the base's greedy answers),
    sorted by count."""
    after_counts = answer_counts(after, detector)
    before_counts = answer_counts(before, detector).set_index("key")
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


COLLAPSE_SCHEMA = pa.schema([("epoch", pa.int32()), ("n_answers", pa.int64()), ("n_empty", pa.int64()),
                             ("n_refusals", pa.int64()), ("distinct_answers", pa.int64()), ("mean_frequency", pa.float64()),
                             ("std_frequency", pa.float64()), ("max_frequency", pa.int64()), ("top_answer", pa.string()),
                             ("top_share", pa.float64())])
TOP_ANSWERS_SCHEMA = pa.schema([("epoch", pa.int32()), ("rank", pa.int32()), ("answer", pa.string()),
                                ("key", pa.string()), ("count", pa.int64()), ("share", pa.float64())])
EXPLODED_SCHEMA = pa.schema([("epoch", pa.int32()), ("answer", pa.string()), ("key", pa.string()),
                             ("count", pa.int64()), ("base_count", pa.int64()), ("share", pa.float64()),
                             ("base_share", pa.float64()), ("rise", pa.float64())])


@dataclass
class CollapseOptions(Config):
    explode_factor: float = option(5.0, help="an answer explodes when its share rose more than this many times",
                                   above=1)
    explode_min_share: float = option(0.002, help="… and reached this share of all answers", above=0, below=1)
    top_answers: int = option(20, help="most frequent answers kept per model", minimum=1)

    def rule(self) -> ExplosionRule:
        return ExplosionRule(self.explode_factor, self.explode_min_share)


@register
class Collapse(Metric):
    """Table 4 (answer diversity): distinct greedy answers, their frequencies, and answers that took over."""

    name = "collapse"
    order = 4.5
    tables = {"collapse": COLLAPSE_SCHEMA, "top_answers": TOP_ANSWERS_SCHEMA, "exploded": EXPLODED_SCHEMA}
    Options = CollapseOptions

    def compute(self, ctx: MetricContext) -> dict[str, pd.DataFrame]:
        options = ctx.options(self)
        rule, found = options.rule(), detector_of(ctx)
        stats = [{"epoch": 0, **collapse_stats(ctx.base_responses, found)}]
        top = [top_answers(ctx.base_responses, options.top_answers, found).assign(epoch=0)]
        exploded = []
        for epoch, (responses, _) in sorted(ctx.after.items()):
            stats.append({"epoch": epoch, **collapse_stats(responses, found)})
            top.append(top_answers(responses, options.top_answers, found).assign(epoch=epoch))
            exploded.append(exploded_answers(ctx.base_responses, responses, rule, found).assign(epoch=epoch))
        return {"collapse": epoch_first(pd.DataFrame(stats)),
                "top_answers": epoch_first(pd.concat(top, ignore_index=True)),
                "exploded": epoch_first(pd.concat(exploded, ignore_index=True))}

    def summarize(self, tables, ctx) -> dict[str, Any]:
        last = ctx.last_epoch
        collapse = tables["collapse"].set_index("epoch")
        exploded = tables["exploded"]
        exploded = exploded[exploded["epoch"] == last]
        return {
            "collapse": {name: {k: collapse.loc[epoch, k] for k in ("distinct_answers", "mean_frequency",
                                                                      "std_frequency", "top_answer")}
                         for name, epoch in (("base", 0), ("after", last))},
            "exploded_answers": {r.answer: int(r.count) for r in exploded.head(10).itertuples()},
        }

    def figures(self, summary: dict[str, Any]) -> list[Figure]:
        collapse = summary["collapse"]
        return [Figure("distinct_answers_base", "distinct answers base", collapse["base"]["distinct_answers"]),
                Figure("distinct_answers", "distinct answers after", collapse["after"]["distinct_answers"], HIGHER),
                Figure("exploded_answers", "exploded answers", len(summary["exploded_answers"]), LOWER)]

    # -- report

    def collect(self, evaluation) -> dict[str, pd.DataFrame]:
        return before_after(evaluation.table("collapse"), ["distinct_answers", "mean_frequency", "std_frequency",
                                                           "top_share", "top_answer"], "collapse")

    def sections(self, data, out: Path) -> list:
        from knowpack.report.cells import cell, fmt, groups
        from knowpack.report.html import Section
        from knowpack.sweep.spec import mixture_label

        after, base = data.frame("collapse"), data.frame("base_collapse")
        if after.empty:
            return []
        base_values = {c: float(base[c].mean()) if len(base) else None
                       for c in ("distinct_answers", "mean_frequency", "std_frequency", "top_share")}
        rows = [{"facts": "base model", "mixture": "", "distinct answers": fmt(base_values["distinct_answers"], 0),
                 "answers per distinct answer, mean (std)": f"{fmt(base_values['mean_frequency'], 1)} "
                 f"({fmt(base_values['std_frequency'], 1)})",
                 "top answer share": fmt(base_values["top_share"], 3), "top answer": ""}]
        for (size, mixture), group in groups(after, data.mixtures):
            top = group["top_answer"].mode().iloc[0] if group["top_answer"].notna().any() else ""
            rows.append({"facts": int(size), "mixture": mixture_label(mixture),
                         "distinct answers": cell(group["distinct_answers"], 0),
                         "answers per distinct answer, mean (std)": f"{cell(group['mean_frequency'], 1)} "
                         f"({cell(group['std_frequency'], 1)})",
                         "top answer share": cell(group["top_share"], 3), "top answer": str(top)})
        return [Section("Answer collapse (Table 4)",
                        "Number of distinct greedy answers (refusals and empty answers left out, as the study), how "
                        "often each is given (mean and population std), and the share of the most frequent one after "
                        "the last epoch; the dashed line is the base model.",
                        figure_vs_facts(after, [("distinct_answers", "distinct greedy answers"),
                                                ("top_share", "share of the most frequent answer")],
                                        base_values, data.mixtures, out / "collapse.png"),
                        (("Answer collapse", pd.DataFrame(rows)),))]

    def sentences(self, data) -> list[str]:
        after, base = data.frame("collapse"), data.frame("base_collapse")
        if after.empty or base.empty or not base["distinct_answers"].mean():
            return []
        ratio = after["distinct_answers"].min() / base["distinct_answers"].mean()
        return [f"At worst the number of distinct answers drops to {ratio:.0%} of the base model's (answer collapse)."
                if ratio < 1 else "The number of distinct answers never falls below the base model's (no answer "
                "collapse)."]

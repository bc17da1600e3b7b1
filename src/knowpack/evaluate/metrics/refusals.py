"""Refusals: answers in which the model declines to answer ("I couldn't find any information on …").

The study's code only looked for the word "information" in the first prompt's answer, which misses "I cannot
verify …" and flags "Information theory". Here a refusal is an answer that contains a phrase of the lexicon
(``refusals.yaml``) or matches one of its regular expressions or a user-given one, case-insensitively, and every
prompt's greedy answer is checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from knowpack.config import Config, ConfigError, option
from knowpack.errors import InputError
from knowpack.evaluate.metrics import Figure, Metric, MetricContext, epoch_first, register
from knowpack.lazy import lazy

pd = lazy("pandas")

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})
_SPACES = re.compile(r"\s+")


def _prepare(text: str) -> str:
    """Fold curly quotes and whitespace so "I couldn’t  find" matches the lexicon's "i couldn't find"."""
    return _SPACES.sub(" ", text.translate(_QUOTES)).strip()


@dataclass(frozen=True)
class RefusalDetector:
    """Phrases (plain text) and regular expressions; an answer that contains or matches any is a refusal."""

    phrases: tuple[str, ...]
    patterns: tuple[str, ...]

    @classmethod
    def default(cls, extra_patterns: Iterable[str] = ()) -> RefusalDetector:
        """The packaged lexicon plus ``extra_patterns`` (e.g. from ``--refusal-pattern``)."""
        lexicon = yaml.safe_load(resources.files(__package__).joinpath("refusals.yaml").read_text())
        return cls(tuple(lexicon["phrases"]), tuple(lexicon["patterns"]) + tuple(extra_patterns))

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise InputError(f"refusal pattern {pattern!r} is not a valid regular expression ({err})") from err

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """One case-insensitive alternation of every phrase (escaped) and pattern."""
        alternatives = [re.escape(_prepare(p)) for p in self.phrases] + [f"(?:{p})" for p in self.patterns]
        return re.compile("|".join(alternatives) or r"(?!)", re.IGNORECASE)

    def is_refusal(self, answer: str) -> bool:
        return bool(self.regex.search(_prepare(answer)))

    def detect(self, answers: pd.Series) -> pd.Series:
        """Boolean Series: which answers are refusals (missing answers are not)."""
        regex = self.regex
        return answers.fillna("").map(lambda a: bool(regex.search(_prepare(a)))).astype(bool)


def refusal_rates(responses: pd.DataFrame, detector: RefusalDetector) -> dict[str, float | int]:
    """Refusal counts over greedy answers (``sample_id == 0``) of every prompt.

    ``refusal_rate`` = refused answers / greedy answers; ``question_refusal_rate`` = questions refused under at
    least one prompt / questions; ``first_prompt_refusal_rate`` = the study's view (prompt 0 only) / questions.
    """
    greedy = responses[responses["sample_id"] == 0]
    refused = detector.detect(greedy["answer"])
    by_question = refused.groupby(greedy["question_id"]).any()
    first = greedy["prompt_id"] == greedy["prompt_id"].min()
    n_answers, n_questions = len(greedy), int(by_question.size)
    return {
        "n_answers": n_answers,
        "refusals": int(refused.sum()),
        "refusal_rate": float(refused.mean()) if n_answers else 0.0,
        "n_questions": n_questions,
        "questions_with_refusal": int(by_question.sum()),
        "question_refusal_rate": float(by_question.mean()) if n_questions else 0.0,
        "first_prompt_refusal_rate": float(refused[first].mean()) if first.any() else 0.0,
    }


def refused_questions(responses: pd.DataFrame, detector: RefusalDetector) -> pd.Series:
    """Per question: number of prompts whose greedy answer is a refusal (index: question_id)."""
    greedy = responses[responses["sample_id"] == 0]
    return detector.detect(greedy["answer"]).groupby(greedy["question_id"]).sum().astype("int64")


REFUSALS_SCHEMA = pa.schema([("epoch", pa.int32()), ("n_answers", pa.int64()), ("refusals", pa.int64()),
                             ("refusal_rate", pa.float64()), ("n_questions", pa.int64()),
                             ("questions_with_refusal", pa.int64()), ("question_refusal_rate", pa.float64()),
                             ("first_prompt_refusal_rate", pa.float64())])


@dataclass
class RefusalOptions(Config):
    refusal_patterns: tuple[str, ...] = option((), help="extra case-insensitive refusal regex, added to the lexicon "
                                               "(repeatable)", flag="--refusal-pattern", repeat=True, metavar="REGEX")

    def check(self) -> None:
        for pattern in self.refusal_patterns:  # an invalid regex is refused now, not after labelling
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError("refusal_patterns", f"{pattern!r} is not a valid regular expression ({err})") \
                    from None


def detector_of(ctx: MetricContext) -> RefusalDetector:
    """The run's refusal detector (the lexicon plus the user's patterns), shared by the metrics that need one."""
    return RefusalDetector.default(ctx.config.options_of(RefusalOptions).refusal_patterns)


@register
class Refusals(Metric):
    """Table 4 (refusals): how often the model declines to answer, before and after packing."""

    name = "refusals"
    order = 4
    tables = {"refusals": REFUSALS_SCHEMA}
    Options = RefusalOptions

    def compute(self, ctx: MetricContext) -> dict[str, pd.DataFrame]:
        found = detector_of(ctx)
        rows = [{"epoch": 0, **refusal_rates(ctx.base_responses, found)}]
        rows += [{"epoch": epoch, **refusal_rates(responses, found)} for epoch, (responses, _) in sorted(ctx.after.items())]
        return {"refusals": epoch_first(pd.DataFrame(rows))}

    def summarize(self, tables, ctx) -> dict[str, Any]:
        refusals = tables["refusals"].set_index("epoch")
        return {"refusal_rate": {"base": refusals.loc[0, "refusal_rate"],
                                 "after": refusals.loc[ctx.last_epoch, "refusal_rate"]}}

    def figures(self, summary: dict[str, Any]) -> list[Figure]:
        return [Figure("refusal_rate_base", "refusal rate base", summary["refusal_rate"]["base"]),
                Figure("refusal_rate", "refusal rate after", summary["refusal_rate"]["after"])]

    # -- report

    def collect(self, evaluation) -> dict[str, pd.DataFrame]:
        return before_after(evaluation.table("refusals"), ["refusal_rate"], "refusals")

    def sections(self, data, out: Path) -> list:
        from knowpack.report.cells import by_size_and_mixture, cell, fmt
        from knowpack.report.html import Section

        after, base = data.frame("refusals"), data.frame("base_refusals")
        if after.empty:
            return []
        base_rate = float(base["refusal_rate"].mean()) if len(base) else None
        table = by_size_and_mixture(after, data.mixtures, lambda g: cell(g["refusal_rate"], 3))
        return [Section("Refusals (Table 4)",
                        f"Refusal rate over all greedy answers after the last epoch (base model: "
                        f"{fmt(base_rate, 3)}, dashed line).",
                        figure_vs_facts(after, [("refusal_rate", "refusal rate")], {"refusal_rate": base_rate},
                                        data.mixtures, out / "refusals.png"),
                        (("Refusal rate after the last epoch", table),))]

    def sentences(self, data) -> list[str]:
        after, base = data.frame("refusals"), data.frame("base_refusals")
        if after.empty or base.empty:
            return []
        return [f"The base model refuses {base['refusal_rate'].mean():.1%} of answers; after packing the refusal "
                f"rate is {after['refusal_rate'].mean():.1%} on average."]


def before_after(table, columns: list[str], name: str) -> dict[str, pd.DataFrame]:
    """A per-epoch table as the report's rows: the last epoch after training, and epoch 0 as ``base_<name>``."""
    if table is None or table.empty:
        return {}
    before, after = table[table["epoch"] == 0], table[table["epoch"] > 0]
    if before.empty or after.empty:
        return {}
    return {name: after[after["epoch"] == after["epoch"].max()][columns].reset_index(drop=True),
            f"base_{name}": before[columns].reset_index(drop=True)}


def figure_vs_facts(frame: pd.DataFrame, panels: list[tuple[str, str]], base: dict[str, float | None],
                    mixtures: list[str], path: Path) -> Path | None:
    """One panel per column against the number of facts, each with the base model's line."""
    panels = [(c, t) for c, t in panels if c in frame and frame[c].notna().any()]
    if frame.empty or not panels:
        return None
    from knowpack.report.plots import by_facts, legend_below, mixture_colors, plt, save

    colors = mixture_colors(mixtures)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), squeeze=False)
    for ax, (column, title) in zip(axes[0], panels):
        by_facts(ax, frame.dropna(subset=[column]), column, mixtures, colors, base.get(column))
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    legend_below(fig, axes)
    return save(fig, path)

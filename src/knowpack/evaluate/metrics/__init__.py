"""Metrics: what packing costs, one module each, registered in :data:`METRICS` and looped over by ``evaluate``,
``compare``/``diff`` and ``report``.

A metric declares, in its own module:

* ``tables`` — the Parquet tables it writes into the evaluation folder (name → schema; docs/metrics.md);
* ``compute(ctx)`` — those tables from the answers (``MetricContext``: the base and after labels, the packed facts,
  the train set, and the loaded model for metrics that need one);
* ``summarize(tables, ctx)`` — its block of ``summary.json``;
* ``reads_all_questions`` — whether it needs every question's answers after training (False: the packed facts'
  own answers are enough, so it runs even when evaluate skips labelling all questions);
* ``figures(summary)`` — its headline numbers, each with the direction that is better, which ``compare``, ``diff``
  gates and ``capacity`` constraints read by name;
* ``collect(evaluation)`` / ``sections(data, out)`` / ``sentences(data)`` — what the report shows of it.

Metrics run in ``order`` (the study's table number); one may read the tables of those before it (``ctx.tables``).
Its settings, if any, are an ``Options`` config: the evaluate command, sweep files and the API find them here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from knowpack.config import Config
from knowpack.registry import Registry

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

HIGHER, LOWER = "higher", "lower"  # which direction of a figure is better


@dataclass(frozen=True)
class Figure:
    """One headline number of an evaluation: ``key`` is what gates and constraints name (e.g. negative_shift)."""

    key: str
    label: str
    value: float | None
    better: str | None = None  # HIGHER, LOWER or None (neither is better)
    stderr: float | None = None


@dataclass
class MetricContext:
    """Everything a metric computes from (pure data, plus the loaded model for model-based metrics)."""

    config: Any  # EvaluateConfig
    questions: pd.DataFrame
    train_set: pd.DataFrame
    unknown_ids: list[str]
    paraphrase_ids: list[str]
    base_responses: pd.DataFrame
    base_labels: pd.DataFrame
    probe: dict[int, pd.DataFrame]  # epoch (0 = base) -> responses of the packed facts and held-out paraphrases
    after: dict[int, tuple[pd.DataFrame, pd.DataFrame]]  # shift epoch -> (responses, labels) of all questions
    loaded: Any = None
    work_dir: Path | None = None
    adapters: dict[int, Path] = field(default_factory=dict)  # epoch -> adapter folder
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # filled in order as metrics run

    @property
    def trained_ids(self) -> set[str]:
        """Every question id of the train set (packed facts, extra known facts, paraphrased facts)."""
        return set(self.train_set["question_id"])

    @property
    def last_epoch(self) -> int:
        return max(self.after)

    def options(self, metric: Metric) -> Any:
        return self.config.options_of(metric.Options)


class Metric:
    """Base of every metric (see the module docstring). Subclasses set the class attributes and override what
    they provide; the defaults provide nothing."""

    name: ClassVar[str]
    order: ClassVar[float]
    tables: ClassVar[dict[str, pa.Schema]] = {}
    Options: ClassVar[type[Config] | None] = None
    # reads the answers to all questions after training (``ctx.after``), which evaluate may skip
    # (``damage_if_reliability``); False for a metric of the packed facts' own answers
    reads_all_questions: ClassVar[bool] = True

    def compute(self, ctx: MetricContext) -> dict[str, pd.DataFrame]:
        return {}

    def summarize(self, tables: dict[str, pd.DataFrame], ctx: MetricContext) -> dict[str, Any]:
        return {}

    def figures(self, summary: dict[str, Any]) -> list[Figure]:
        return []

    # the report

    def collect(self, evaluation: Any) -> dict[str, pd.DataFrame]:
        """Rows of one evaluated run for the report's tidy tables (the report tags them with the run's grid
        values); names starting with ``base_`` describe the base model."""
        return {}

    def sections(self, data: Any, out: Path) -> list[Any]:
        return []

    def sentences(self, data: Any) -> list[str]:
        return []


METRICS: Registry[Metric] = Registry("metric", package=__name__)


def register(metric_class: type[Metric]) -> type[Metric]:
    """Class decorator: register one instance of the metric under its name."""
    METRICS.register(metric_class.name, metric_class())
    return metric_class


def epoch_first(table: pd.DataFrame) -> pd.DataFrame:
    """Tables with an ``epoch`` column hold it first, as int32 (0 = the base model)."""
    if "epoch" not in table.columns:
        return table
    table = table.astype({"epoch": "int32"})
    return table[["epoch", *[c for c in table.columns if c != "epoch"]]]


def in_order() -> list[Metric]:
    return sorted(METRICS.values(), key=lambda metric: metric.order)


def measured_metrics(damage_measured: bool = True) -> list[Metric]:
    """The metrics an evaluation runs, in order: all, or without the damage those of the packed facts alone."""
    return [metric for metric in in_order() if damage_measured or not metric.reads_all_questions]


def all_figures(summary: dict[str, Any]) -> list[Figure]:
    """Every metric's headline numbers of one summary.json, in metric order (only those the evaluation ran)."""
    return [figure for metric in measured_metrics(summary.get("damage_measured", True))
            for figure in metric.figures(summary)]

"""What ``knowpack diff`` compares: each side is one labelling of a question set, plus what is known of the model
that produced it (its benchmark scores and headline figures, the questions it was trained on).

A side is named by a folder: a training run or its ``eval/`` folder (the adapter of the last shift epoch), an
``inject`` folder (the adapter it exported) or a label folder (a model's own labels, e.g. the base labels of a run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from knowpack.errors import InputError
from knowpack.evaluate.folder import Evaluation
from knowpack.evaluate.metrics import METRICS, all_figures
from knowpack.probe.folder import LabelFolder
from knowpack.train.folder import TrainRun

# metrics whose summary blocks hold every epoch; the others' describe the last shift epoch only
PER_EPOCH_METRICS = ("reliability", "benchmarks")


@dataclass
class Side:
    path: Path
    kind: str  # "run", "inject" or "labels"
    labels: LabelFolder
    epoch: int | None = None  # the adapter's epoch (None: a model's own labels)
    evaluation: Evaluation | None = None
    trained_ids: frozenset[str] = frozenset()
    model_fingerprint: str | None = None

    def figures(self) -> dict[str, float]:
        """Headline figures of this side's adapter (figure key → value; ``_base`` keys describe its base model)."""
        if self.evaluation is None:
            return {}
        summary = self.evaluation.summary()
        if self.epoch == summary["shift_epochs"][-1]:
            figures = all_figures(summary)
        else:  # the figures read the last shift epoch: let them read this one
            at_epoch = {**summary, "shift_epochs": [self.epoch]}
            figures = [f for name in PER_EPOCH_METRICS for f in METRICS[name].figures(at_epoch)]
        return {f.key: f.value for f in figures if f.value is not None}

    def stderrs(self) -> dict[str, float]:
        if self.evaluation is None:
            return {}
        summary = {**self.evaluation.summary(), "shift_epochs": [self.epoch]}
        return {f.key: f.stderr for f in METRICS["benchmarks"].figures(summary) if f.stderr is not None}


def open_side(path: str | Path) -> Side:
    """The side a folder names (see the module docstring); a one-line error for anything else."""
    from knowpack.inject.folder import InjectFolder

    path = Path(path)
    if InjectFolder.is_one(path):
        inject = InjectFolder(path)
        return _adapter_side(path, "inject", inject.evaluation(), inject.chosen_epoch)
    if LabelFolder.is_one(path):
        labels = LabelFolder(path)
        return Side(path, "labels", labels, model_fingerprint=labels.manifest.get("extra_key", {}).get(
            "model_fingerprint"))
    if not path.exists():
        raise InputError(f"{path}: folder not found")
    evaluation = Evaluation.of(path)
    return _adapter_side(path, "run", evaluation, evaluation.shift_epochs[-1])


def _adapter_side(path: Path, kind: str, evaluation: Evaluation, epoch: int) -> Side:
    run = TrainRun(evaluation.run_path)
    return Side(path, kind, evaluation.labels(epoch), epoch, evaluation,
                frozenset(run.train_set()["question_id"]), run.model_fingerprint)


def before_figures(before: Side, after: Side) -> tuple[dict[str, float], dict[str, float]]:
    """The figures and standard errors to subtract from AFTER's: BEFORE's own, or — when BEFORE is a label folder
    of AFTER's base model — AFTER's ``_base`` figures (the base model's refusal rate, benchmarks, …)."""
    if before.kind != "labels":
        return before.figures(), before.stderrs()
    if after.evaluation is None or before.model_fingerprint != after.model_fingerprint:
        return {}, {}
    figures, stderrs = after.figures(), after.stderrs()
    base = {key.removesuffix("_base"): value for key, value in figures.items() if key.endswith("_base")}
    return base, {key.removesuffix("_base"): v for key, v in stderrs.items() if key.endswith("_base")}


def check_comparable(before: Side, after: Side) -> None:
    """Both sides must be labelled with the same probe settings (prompts, shots, exemplars, decoding): a paired
    comparison compares the same prompts. The model may differ."""
    ours, theirs = dict(before.labels.settings), dict(after.labels.settings)
    differing = sorted(k for k in set(ours) | set(theirs) if k != "model" and ours.get(k) != theirs.get(k))
    if differing:
        raise InputError(f"{before.path} and {after.path} were labelled with other probe settings "
                         f"({', '.join(differing)}); a paired comparison needs the same prompts")

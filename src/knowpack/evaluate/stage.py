"""The evaluate stage: label a training run's adapters with the base labels' probe settings, then let every
registered metric (``metrics/``) measure what packing cost. docs/metrics.md defines every number.

"Before" is always the base label folder the run was trained from, and every "after" label folder is made with
exactly its probe settings (read from its manifest and checked after labelling). Label folders and benchmark
results that are already complete are reused, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.cli import Command
from knowpack.config import (Config, device_option, dtype_option, kernels_option, option, overwrite_option,
                             progress_option, trust_remote_code_option)
from knowpack.evaluate.metrics import METRICS

SHIFT_EPOCHS = ("last", "all")
RELIABILITY_EPOCHS = ("all", "last")


@dataclass
class EvaluateConfig(Config):
    """Evaluation of one training run; the metrics' own settings (``options``) come from their modules."""

    protocol_stage = "evaluate"

    extensions = (None, METRICS)

    run: Path = option(help="training run folder from `knowpack train`", positional=True, metavar="RUN",
                       affects_results=False)
    out: Path | None = option(None, help="evaluation folder (default RUN/eval)", metavar="DIR", affects_results=False)
    model: str | None = option(None, help="base model (default: the one the base labels name)", affects_results=False)
    shift_epochs: str = option("last", choices=SHIFT_EPOCHS,
                               help="epochs whose adapters label ALL questions (shift, refusals, collapse, spill-over, "
                               "benchmarks)")
    reliability_epochs: str = option("all", choices=RELIABILITY_EPOCHS,
                                     help="epochs whose adapters answer the packed facts: all (the base model and "
                                     "every epoch, the study's curve) or last (the final adapter alone)")
    damage_if_reliability: float | None = option(
        None, help="label all questions (shift, refusals, collapse, spill-over, benchmarks) only when the last "
        "epoch's reliability on the packed facts reaches this; below it those metrics are not measured (default: "
        "always measured)", minimum=0, maximum=1, metavar="R", affects_results=False)
    heldout_paraphrases: int = option(3, help="held-out paraphrases per packed fact for generalisation (0 = off)",
                                      minimum=0, metavar="N")
    device: str | None = device_option()
    dtype: str | None = dtype_option()
    kernels: str = kernels_option()
    trust_remote_code: bool = trust_remote_code_option()
    overwrite: bool = overwrite_option()
    progress: bool = progress_option()
    options: dict[str, Any] = option(default_factory=dict, help="the metrics' own options", cli=False)

    def check(self) -> None:
        if self.out is None:
            from knowpack.evaluate.folder import EVAL_DIR

            self.out = self.run / EVAL_DIR


def run(config: EvaluateConfig):
    """Load the model the run was trained on and evaluate it (see :func:`run_loaded`)."""
    from knowpack.errors import InputError
    from knowpack.train.folder import TrainRun

    training = TrainRun(config.run)
    spec = config.model or training.labels().model
    if not spec:
        raise InputError(f"{training.labels_path}: its manifest names no model; pass --model")
    from knowpack.models import load_model

    loaded = load_model(spec, device=config.device, dtype=config.dtype, kernels=config.kernels,
                        trust_remote_code=config.trust_remote_code, progress=config.progress)
    return run_loaded(loaded, config)


def run_loaded(loaded, config: EvaluateConfig):
    """Evaluate the training run ``config.run`` on an already-loaded base model; returns the Evaluation."""
    from knowpack.evaluate.measure import evaluate_loaded

    return evaluate_loaded(loaded, config)


def main(config: EvaluateConfig) -> None:
    from knowpack.evaluate.compare import print_summary

    evaluation = run(config)
    print_summary(evaluation.summary())
    print(f"evaluated: {evaluation.path}")


COMMANDS = [Command("evaluate", EvaluateConfig, main,
                    help="measure a training run: reliability, knowledge shift, refusals, answer collapse, "
                    "spill-over, benchmarks",
                    description="Label every question with the run's adapters (same probe settings as the base "
                    "labels), then write every metric's tables into RUN/eval/. Re-running resumes; docs/metrics.md "
                    "defines every number.")]

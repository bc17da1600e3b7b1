"""``knowpack inject FACTS --model M --out DIR``: your facts into your model, with proof of what it broke.

The facts are checked row by row before any model loads, labelled against the model (SliCK; the ones it already
knows are reported and left out unless ``--keep-known``), given paraphrases, packed with a mixture chosen by a
stated policy (``policy.py``), trained and evaluated by the stages themselves; the damage is measured on a guard
set of questions the adapter never saw, the epoch with the best reliability within the damage limit is exported as
a PEFT adapter with a model card, and one short report says how many facts stuck, at which epoch, at what cost.
Every step is a stage folder inside DIR, so an interrupted command resumes where it stopped. docs/inject.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.cli import Command
from knowpack.config import (Config, device_option, dtype_option, kernels_option, model_option, option, out_option,
                             overwrite_option, progress_option, trust_remote_code_option)
from knowpack.evaluate.metrics import METRICS


@dataclass
class InjectConfig(Config):
    """One injection. ``None`` for guard_size and prompts means "what fits the machine" (``machine_defaults``)."""

    extensions = (None, METRICS)

    facts: Path = option(help="your facts: .jsonl, .csv or .parquet with question, answer and optional aliases, "
                         "paraphrases, subject, relation", positional=True, metavar="FACTS", affects_results=False)
    out: Path = out_option("inject folder to write (or resume)")
    model: str = model_option()
    skip_bad_rows: bool = option(False, help="drop and count bad rows of FACTS (and --known) instead of stopping")
    keep_known: bool = option(False, help="pack the facts the model already knows too (default: report them and "
                              "leave them out)")
    extra: tuple[str, ...] = option((), help="the mixture, instead of the stated policy (docs/inject.md): K extra "
                                    "items per fact, KIND:K with KIND highly-known, maybe-known, weakly-known or "
                                    "paraphrase (repeatable)", repeat=True, metavar="KIND:K")
    known: Path | None = option(None, help="facts the model may know, for the mixture's known facts (same format as "
                                "FACTS; default: the embedded graph's questions of your facts' relations)",
                                metavar="FILE", affects_results=False)
    guard: Path | None = option(None, help="questions to measure the damage on (questions.parquet or a question set "
                                "folder; default: the embedded question set)", metavar="QUESTIONS",
                                affects_results=False)
    guard_size: int | None = option(None, help="guard questions, a sample stratified by relation and bucket "
                                    "(default: 200 on a CPU, all of them on a GPU)", minimum=1, metavar="N")
    prompts: int | None = option(None, help="few-shot prompts per question for the SliCK labels (default: 3 on a "
                                 "CPU, 10 on a GPU as the study)", minimum=1, metavar="N")
    heldout_paraphrases: int = option(2, help="paraphrases per fact kept out of training to test generalisation",
                                      minimum=0, metavar="N")
    max_negative_shift: float | None = option(0.1, help="damage limit: the share of guard questions that may fall a "
                                              "SliCK category at the exported epoch", minimum=0, maximum=1)
    max_benchmark_drop: float | None = option(None, help="damage limit: how far each benchmark score may fall below "
                                              "the base model's (default: no limit)", minimum=0)
    rank: int = option(8, help="LoRA rank", minimum=1)
    alpha: float = option(16.0, help="LoRA alpha", above=0)
    lr: float = option(5e-3, help="learning rate", above=0)
    epochs: int = option(5, help="epochs (each one's adapter is measured)", minimum=1)
    batch_size: int = option(8, help="rows per optimizer step", minimum=1)
    targets: str = option("mlp", help="LoRA target modules, as train --targets")
    seed: int = option(42, help="seeds the mixture, the LoRA init and the data order", minimum=0)
    device: str | None = device_option()
    dtype: str | None = dtype_option()
    kernels: str = kernels_option()
    trust_remote_code: bool = trust_remote_code_option()
    overwrite: bool = overwrite_option()
    progress: bool = progress_option()
    options: dict[str, Any] = option(default_factory=dict, help="the metrics' own options", cli=False)

    def check(self) -> None:
        from knowpack.train.stage import TrainConfig

        # the training options are TrainConfig's: checked (and refused) by it, with its words
        TrainConfig(labels=Path("labels"), out=Path("run"), extra=self.extra, rank=self.rank, alpha=self.alpha,
                    lr=self.lr, epochs=self.epochs, batch_size=self.batch_size, targets=self.targets, seed=self.seed)


def run(config: InjectConfig):
    """Check every input, then load the model (unless DIR is already complete) and run :func:`run_loaded`."""
    from knowpack.inject.pipeline import inject, read_inputs

    inputs = read_inputs(config)  # a bad row fails here, before a model loads
    return inject(config, inputs)


def run_loaded(loaded, config: InjectConfig):
    """The injection on an already-loaded base model; returns the InjectFolder."""
    from knowpack.inject.pipeline import inject_loaded, read_inputs

    return inject_loaded(loaded, config, read_inputs(config))


def main(config: InjectConfig) -> None:
    folder = run(config)
    print(folder.manifest["summary"])
    print(f"adapter: {folder.adapter}\nreport: {folder.html}")


COMMANDS = [Command("inject", InjectConfig, main,
                    help="pack your own facts into an adapter, with proof of what it broke",
                    description=__doc__.splitlines()[0])]

"""The train stage (packing runs): n Unknown facts of a label folder plus k extra items per fact, packed into a
fresh LoRA adapter (or DoRA, PiSSA, full fine-tuning: ``--method``, ``methods/``), saved with its optimizer state
after every epoch (``loop.py`` has the why and the how).

``run(config)`` loads the model; ``run_loaded(loaded, config)`` trains on an already-loaded base model and
leaves it unchanged, so a sweep trains all its runs on one loaded model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from knowpack.cli import Command
from knowpack.config import (Config, ConfigError, device_option, dtype_option, kernels_option, model_option, option,
                             out_option, overwrite_option, progress_option, trust_remote_code_option)
from knowpack.errors import InputError
from knowpack.train.methods import METHODS

TARGET_PRESETS = {
    "mlp": ["gate_proj", "up_proj", "down_proj"],
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all-linear": "all-linear",
}
# "answer": loss on the answer tokens only; "all": on every token, prompt included (the study's code).
LOSS_ON = ("answer", "all")
SCHEDULES = ("linear", "constant")
CATEGORY_OF_KIND = {"highly-known": "HighlyKnown", "maybe-known": "MaybeKnown", "weakly-known": "WeaklyKnown"}
PARAPHRASE = "paraphrase"
EXTRA_KINDS = (*CATEGORY_OF_KIND, PARAPHRASE)


def parse_extra(text: str) -> tuple[str, int]:
    """``"highly-known:10"`` -> ``("highly-known", 10)``; one-line error for anything else."""
    kind, sep, count = text.partition(":")
    if not sep or kind not in EXTRA_KINDS or not count.strip().isdigit():
        raise InputError(f"--extra {text!r}: expected KIND:K with KIND one of {', '.join(EXTRA_KINDS)} and K >= 0")
    return kind, int(count)


@dataclass
class TrainConfig(Config):
    """One packing run. Paths are hashed as inputs and the model by its fingerprint, so they stay out of the key."""

    protocol_stage = "train"

    labels: Path = option(help="label folder from `knowpack label`", metavar="DIR", affects_results=False)
    out: Path = out_option()
    questions: Path | None = option(None, help="questions.parquet (default: the one the labels were made from)",
                                    metavar="FILE", affects_results=False)
    model: str = model_option(affects_results=False)
    unknown: int = option(50, help="Unknown facts to pack", minimum=1)
    pool: Path | None = option(None, help="draw the packed facts and the known extras only from the questions of "
                               "this file or question set, so the other labelled questions stay out of training "
                               "(inject's guard set; --pack-from restricts only the packed facts; default: every "
                               "labelled question)", metavar="QUESTIONS", affects_results=False)
    pack_known: bool = option(False, help="pack facts of every SliCK category, not only Unknown ones (known extras "
                              "are then drawn from the facts not packed)")
    extra: tuple[str, ...] = option((), help="K extra items per fact, KIND:K with KIND highly-known, maybe-known, "
                                    "weakly-known or paraphrase (repeatable to mix kinds)", repeat=True,
                                    metavar="KIND:K")
    extra_pool: Path | None = option(None, help="a second label folder drawn on when the known-fact pool is too "
                                     "small", metavar="LABELS", affects_results=False)
    allow_repeat: bool = option(False, help="reuse extra items when their pool is too small")
    pack_from: Path | None = option(None, help="pack only the Unknown facts of this question set (a folder or "
                                    "questions.parquet; its ids); the others still measure the damage (default: "
                                    "any Unknown fact)", metavar="QUESTIONS", affects_results=False)
    seed: int = option(42, help="picks the facts, the LoRA init, data order and dropout", minimum=0)
    method: str = option("lora", choices=lambda: sorted(METHODS.names()),
                         help="what is trained: a LoRA adapter, DoRA, PiSSA, or the weights themselves (full)")
    rank: int = option(1, help="LoRA rank", minimum=1)
    alpha: float = option(2.0, help="LoRA alpha (scaling alpha/rank, or alpha/sqrt(rank) with --rslora)", above=0)
    rslora: bool = option(False, help="scale by alpha/sqrt(rank) instead of alpha/rank")
    dropout: float = option(0.1, help="LoRA dropout", minimum=0, below=1)
    targets: str = option("mlp", help="mlp (gate/up/down), attention (q/k/v/o), all-linear, or comma-separated "
                          "module names; with --method full also all (every weight)")
    epochs: int = option(10, help="epochs (an adapter is saved after each)", minimum=1)
    lr: float = option(1e-3, help="learning rate", above=0)
    batch_size: int = option(8, help="rows per optimizer step (study code: 8)", minimum=1)
    schedule: str = option("linear", choices=SCHEDULES,
                           help="learning-rate schedule (linear decay to 0 is the HF Trainer default the study used)")
    weight_decay: float = option(0.0, help="AdamW weight decay", minimum=0)
    max_grad_norm: float = option(1.0, help="gradient clipping; 0 turns it off", minimum=0)
    loss_on: str = option("answer", choices=LOSS_ON,
                          help="answer tokens only or all tokens, prompt included (the study's code)")
    template: str | None = option(None, help="custom plain-text prompt, e.g. 'Q: {question}\\nA: {answer}' "
                                  "(default: the study's zero-shot chat prompt)")
    chat: bool | None = option(None, help="use the chat template (default: when the model has one)")
    max_tokens_per_pass: int | None = option(
        None, help="split each step into forward passes of at most N tokens (gradient accumulation: less memory; "
        "the same gradient without dropout, other dropout masks with it, hence part of the key)", minimum=1,
        metavar="N")
    lane_tokens: int = option(512, help="pack rows into attention lanes of about N tokens (same loss up to "
                              "rounding; attention cost grows with tokens × N)", minimum=1, metavar="N",
                              affects_results=False)
    device: str | None = device_option()
    dtype: str | None = dtype_option()
    kernels: str = kernels_option()
    trust_remote_code: bool = trust_remote_code_option()
    overwrite: bool = overwrite_option()
    progress: bool = progress_option()

    def check(self) -> None:
        if self.template is not None:
            self.template = self.template.replace("\\n", "\n")  # a shell gives '\n' literally
            q, a = self.template.find("{question}"), self.template.find("{answer}")
            if q < 0 or a < 0 or a < q:
                raise ConfigError("template", "must contain {question} and, after it, {answer}")
        for spec in self.extra:
            parse_extra(spec)
        from knowpack.train.methods.full import EVERY_WEIGHT

        if self.targets == EVERY_WEIGHT and self.method != "full":
            raise ConfigError("targets", f"{EVERY_WEIGHT} (every weight) is for --method full; an adapter targets "
                              "modules")
        names = [n.strip() for n in self.targets.split(",")]
        if self.targets not in TARGET_PRESETS and not all(re.fullmatch(r"[\w.\-]+", n) for n in names):
            raise ConfigError("targets", f"{self.targets!r}: a preset ({', '.join(TARGET_PRESETS)}) or module names")


def run(config: TrainConfig):
    """Load ``config.model`` and run :func:`run_loaded`; the facts are drawn first, so a pool that is too small
    fails before a large model is loaded."""
    from knowpack.train.mixture import draw_facts

    draw_facts(config)
    from knowpack.models import load_model

    loaded = load_model(config.model, device=config.device, dtype=config.dtype, kernels=config.kernels,
                        trust_remote_code=config.trust_remote_code, progress=config.progress)
    return run_loaded(loaded, config)


def run_loaded(loaded, config: TrainConfig):
    """Train one adapter on ``loaded`` (left unchanged afterwards) into the run folder ``config.out``."""
    from knowpack.train.loop import train_loaded

    return train_loaded(loaded, config)


def main(config: TrainConfig) -> None:
    run_folder = run(config)
    print(f"trained: {run_folder.path}  (adapters: {run_folder.path / 'epochs'})")


COMMANDS = [Command("train", TrainConfig, main,
                    help="pack N Unknown facts (plus extra known facts or paraphrases) into a fresh LoRA adapter",
                    description="Sample N Unknown facts of a label folder with a seed, add K extra items per fact, "
                    "and train a LoRA adapter, saving adapter + optimizer state after every epoch. Re-running the "
                    "same command resumes after the last complete epoch.")]

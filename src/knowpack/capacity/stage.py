"""The capacity command: for each rank (and method), the largest number of facts an adapter holds while every
constraint is met — reliability on the packed facts, negative shift, benchmark drop — found by a search over n
that is a sweep under the hood (resumable, local or on Ray), fitted, and set against the ~2 bits per parameter
ceiling (docs/capacity.md).

The run key holds what makes runs comparable (data, labelling, training and evaluation settings). The search
options — constraints, ranks, methods, seeds, bounds, tolerance — stay out of it: asked again with other ones,
the command reuses every finished run in its folder and trains only the sizes its new path needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.cli import Command
from knowpack.config import (Config, ConfigError, device_option, dtype_option, kernels_option, model_option, option,
                             out_option, overwrite_option, progress_option, trust_remote_code_option)
from knowpack.sweep.executors import EXECUTORS
from knowpack.train.methods import METHODS
from knowpack.train.stage import parse_extra


# Labelling the whole embedded set with the study's 10 prompts and 16 samples takes an H200 minutes and 2 CPU
# cores days; on a CPU the defaults label a small guard set (~450 questions, 4 greedy prompts) instead.
CPU_LABELLING = {"per_bucket": 1, "n_prompts": 4, "n_samples": 0}
GPU_LABELLING = {"per_bucket": None, "n_prompts": 10, "n_samples": 16}


def search_option(default: Any = None, **kwargs) -> Any:
    return option(default, affects_results=False, **kwargs)


@dataclass
class CapacityConfig(Config):
    extensions = ("executor", EXECUTORS)

    out: Path = out_option("capacity folder to write (or resume)")
    model: str = model_option()
    labels: Path | None = option(None, help="a label folder: its Unknown facts are packed and its question set "
                                 "measures the damage (default: the embedded question set, labelled here)",
                                 metavar="DIR", affects_results=False)
    facts: Path | None = option(None, help="your facts (JSONL, CSV or Parquet, as `knowpack inject`): labelled "
                                "together with the embedded question set, which measures the damage; only those "
                                "the model does not know are packed", metavar="FILE", affects_results=False)
    per_bucket: int | None = option(None, help="facts per relation and bucket of the embedded question set "
                                    f"(default: {CPU_LABELLING['per_bucket']} on a CPU, the source's 30 on a GPU)",
                                    minimum=1)
    n_prompts: int | None = option(None, help="prompts per question when labelling here (default: "
                                   f"{CPU_LABELLING['n_prompts']} on a CPU, 10 on a GPU as the study)", minimum=1)
    n_samples: int | None = option(None, help="samples per prompt when labelling here (0: greedy only; default: "
                                   f"{CPU_LABELLING['n_samples']} on a CPU, 16 on a GPU)", flag="--samples",
                                   minimum=0)
    reliability: float = search_option(0.9, help="the least reliability on the packed facts (last epoch)", above=0,
                                       maximum=1)
    max_negative_shift: float = search_option(0.02, help="the largest negative shift (share of all questions that "
                                              "fell a SliCK category)", minimum=0, maximum=1)
    max_benchmark_drop: float | None = option(None, help="the largest drop of each benchmark below the base model "
                                              "(turns MMLU on: offline, 5-shot)", minimum=0, maximum=1)
    benchmark_limit: int | None = option(None, help="items per benchmark task (default: all)", minimum=1)
    damage_of_every_run: bool = search_option(False, help="measure the damage (all questions relabelled, benchmarks) of "
                                       "runs below the reliability bound too, for the fit and the Pareto plot "
                                       "(default: only of runs that hold their facts; the rest broke already)")
    ranks: tuple[int, ...] = search_option((1, 4, 16), help="ranks to search (comma-separated)", split=",",
                                           minimum=1, metavar="R,R")
    methods: tuple[str, ...] = search_option(("lora",), flag="--method", split=",", repeat=True,
                                             choices=lambda: sorted(METHODS.names()), metavar="METHOD",
                                             help="methods compared on the same facts (repeatable or comma-separated; "
                                             "full ignores --ranks)")
    seeds: int = search_option(1, help="seeds per size (42, 1337, 10824 as the study, then 1, 2, …); the capacity "
                               "interval spans them", minimum=1)
    start: int = search_option(10, help="the first number of facts tried", minimum=1)
    max_facts: int = search_option(3000, help="the most facts tried (the study's largest size)", minimum=1)
    tolerance: float = search_option(0.1, help="bisection stops when the smallest failing size is within this "
                                     "fraction above the largest passing one", above=0)
    extra: tuple[str, ...] = option((), help="K extra items per fact, as train (KIND:K, repeatable)", repeat=True,
                                    metavar="KIND:K")
    epochs: int = option(10, help="epochs per run", minimum=1)
    lr: tuple[str, ...] = option((), repeat=True, metavar="[METHOD=]LR",
                                 help="learning rate of every method, or of one (full=1e-5; repeatable); default: "
                                 "each method's own (1e-3; full 1e-5)")
    alpha_per_rank: float = option(2.0, help="LoRA alpha = this × rank (the study: alpha 2 at rank 1)", above=0)
    targets: str = option("mlp", help="modules trained, as train --targets")
    batch_size: int = option(8, help="rows per optimizer step", minimum=1)
    executor: str = option("local", choices=EXECUTORS.names, help="where the runs happen", affects_results=False)
    device: str | None = device_option()
    dtype: str | None = dtype_option()
    kernels: str = kernels_option()
    trust_remote_code: bool = trust_remote_code_option()
    overwrite: bool = overwrite_option()
    progress: bool = progress_option()
    options: dict[str, Any] = option(default_factory=dict, help="the executor's own options", cli=False)

    def check(self) -> None:
        if self.labels is not None and self.facts is not None:
            raise ConfigError("facts", "give --labels or --facts, not both (your facts are labelled here, with "
                              "the embedded question set)")
        for spec in self.extra:
            parse_extra(spec)
        self.learning_rates()
        if self.start > self.max_facts:
            raise ConfigError("start", f"{self.start} is above --max-facts {self.max_facts}")

    def learning_rates(self) -> dict[str, float]:
        """The learning rate of each method searched: ``--lr`` (all, or METHOD=LR), else the method's own."""
        given: dict[str | None, float] = {}
        for item in self.lr:
            method, _, value = item.rpartition("=")
            if method and method not in METHODS:
                raise ConfigError("lr", f"{item!r}: {method!r} is not a method ({', '.join(sorted(METHODS.names()))})")
            try:
                rate = float(value)
            except ValueError:
                raise ConfigError("lr", f"{item!r}: expected LR or METHOD=LR with LR a number") from None
            if not rate > 0:
                raise ConfigError("lr", f"{item!r}: the learning rate must be above 0")
            given[method or None] = rate
        return {m: given.get(m, given.get(None, METHODS[m].default_lr)) for m in self.methods}


def sized_for_machine(config: CapacityConfig) -> CapacityConfig:
    """The labelling options left at None resolved for the machine (CPU_LABELLING / GPU_LABELLING)."""
    from knowpack.models import on_gpu

    defaults = GPU_LABELLING if on_gpu(config.device) else CPU_LABELLING
    return dataclasses.replace(config, **{key: value for key, value in defaults.items()
                                          if getattr(config, key) is None})


def run(config: CapacityConfig):
    """Search, fit and write the capacity folder; returns its reader."""
    from knowpack.capacity.driver import run_capacity

    return run_capacity(sized_for_machine(config))


def main(config: CapacityConfig) -> None:
    capacity = run(config)
    print("\n".join(capacity.summary()["sentences"]))
    print(f"capacity: {capacity.path / 'capacity.html'}  (runs: {capacity.sweep_path}; "
          f"report: knowpack report {capacity.sweep_path})")


COMMANDS = [Command("capacity", CapacityConfig, main,
                    help="the most facts each rank (and method) holds while reliability and damage stay in bounds",
                    description="Search over the number of packed facts (exponential, then bisection) for each rank "
                    "and method, on the same facts, until every constraint is found to hold or break within the "
                    "tolerance; fit reliability and negative shift against n; compare with ~2 bits per trainable "
                    "parameter (docs/capacity.md). A sweep under the hood: resumable, local or on Ray.")]

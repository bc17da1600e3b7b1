"""The sweep command: a YAML grid of packing runs (``spec.py``) → ``SWEEP_DIR/runs/<run_id>/`` (train + eval) and
``sweep.parquet``, on an executor (``executors/``: local or Ray), resumable (``driver.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.cli import Command
from knowpack.config import Config, option, overwrite_option, progress_option, trust_remote_code_option
from knowpack.sweep.executors import EXECUTORS


@dataclass
class SweepConfig(Config):
    extensions = ("executor", EXECUTORS)

    sweep_file: Path = option(help="the sweep file (model, data, train, evaluate, grid)", positional=True,
                              metavar="SWEEP_YAML", affects_results=False)
    executor: str = option("local", choices=EXECUTORS.names, help="where the runs happen", affects_results=False)
    out: Path | None = option(None, help="sweep folder (default runs/<name>)", metavar="DIR", affects_results=False)
    max_runs: int | None = option(None, help="refuse a grid of more runs than this (default: the file's max_runs, "
                                  "else 10,000)", minimum=1, affects_results=False)
    trust_remote_code: bool = trust_remote_code_option()
    overwrite: bool = option(False, help="empty a sweep folder made with another model, data or fixed options (its "
                             "runs are lost)", affects_results=False)
    progress: bool = progress_option()
    options: dict[str, Any] = option(default_factory=dict, help="the executor's own options", cli=False)


def run(config: SweepConfig):
    """Load the sweep file and run (or resume) it; returns the Sweep folder."""
    from knowpack.sweep.driver import run_sweep
    from knowpack.sweep.spec import load_sweep

    spec = load_sweep(config.sweep_file, out=config.out, max_runs=config.max_runs)
    spec.trust_remote_code = spec.trust_remote_code or config.trust_remote_code
    spec.progress = config.progress
    executor_class = EXECUTORS[config.executor]
    options = config.options_of(executor_class.Options) if executor_class.Options else None
    return run_sweep(spec, executor_class(options), overwrite=config.overwrite)


def main(config: SweepConfig) -> None:
    sweep = run(config)
    print(f"sweep done: {sweep.path}  (index: {sweep.path / 'sweep.parquet'}; report: knowpack report {sweep.path})")


COMMANDS = [Command("sweep", SweepConfig, main,
                    help="run a grid of packing runs (train + evaluate) from a YAML file; resumable, local or on Ray",
                    description="Run every point of a sweep file's grid: finished runs are skipped, half-finished ones "
                    "resume from their last complete epoch. See examples/cpu_grid.yaml and examples/study_grid.yaml.")]

"""The default executor: runs in this process, on one base model loaded once.

The study's bash loop reloaded the 8B model for each of its runs; here the model is loaded on the first run that
needs doing (not at all when every run is already finished) and every run gets a fresh adapter on it. On a GPU,
runs that can share a pass train together (``train.grouped``: each still steps on its own batch), then each is
evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from knowpack.config import Config, option
from knowpack.sweep.executors import register
from knowpack.sweep.runs import RunResult, SweepJob, execute_group, execute_run, training_groups
from knowpack.sweep.spec import RunSpec


@dataclass
class LocalOptions(Config):
    train_together: int | None = option(
        None, help="train up to N runs together in one pass over the base model, each on its own batches with "
        "its own optimizer (default: on a GPU as many as make 128 rows a step, on a CPU 1)", minimum=1,
        metavar="N", affects_results=False)


@register
class LocalExecutor:
    """Runs in this process (groups of runs trained together on a GPU); needs no Ray."""

    name = "local"
    help = "one process, the base model loaded once; on a GPU runs train together"
    Options = LocalOptions

    def __init__(self, options: LocalOptions | None = None):
        self.options = options or LocalOptions()

    def run(self, job: SweepJob, runs: list[RunSpec], record: Callable[[RunResult], None]) -> None:
        if not runs:
            return
        loaded = job.load_model()
        for group in training_groups(job, runs, self.options.train_together, loaded):
            if len(group) == 1:
                record(execute_run(loaded, job, group[0]))
            else:
                execute_group(loaded, job, group, record)

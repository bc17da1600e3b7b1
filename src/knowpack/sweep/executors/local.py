"""The default executor: runs one after another in this process, on one base model loaded once.

The study's bash loop reloaded the 8B model for each of its runs; here the model is loaded on the first run that
needs doing (not at all when every run is already finished) and every run gets a fresh adapter on it.
"""

from __future__ import annotations

from collections.abc import Callable

from knowpack.sweep.executors import register
from knowpack.sweep.runs import RunResult, SweepJob, execute_run
from knowpack.sweep.spec import RunSpec


@register
class LocalExecutor:
    """Runs in the given order in this process; needs no Ray."""

    name = "local"
    help = "one process, runs in order, the base model loaded once"
    Options = None

    def __init__(self, options=None):
        pass

    def run(self, job: SweepJob, runs: list[RunSpec], record: Callable[[RunResult], None]) -> None:
        loaded = job.load_model() if runs else None
        for run in runs:
            record(execute_run(loaded, job, run))

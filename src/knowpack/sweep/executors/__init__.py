"""Executors: where a sweep's runs happen. Each member is a module here that registers an executor class with a
``name``, a ``help`` line, its own ``Options`` (a ``Config``, or None) and ``run(job, runs, record)``.

An executor only decides *where* runs happen; what a run is lives in ``knowpack.sweep.runs``, so every executor
leaves identical run folders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from knowpack.registry import Registry


class Executor(Protocol):
    name: str
    help: str
    Options: Any

    def run(self, job, runs: list, record: Callable) -> None:
        """Do ``runs`` (train + evaluate each) and call ``record(RunResult)`` as each one ends."""


EXECUTORS: Registry[type] = Registry("executor", package=__name__)


def register(executor_class: type) -> type:
    EXECUTORS.register(executor_class.name, executor_class)
    return executor_class

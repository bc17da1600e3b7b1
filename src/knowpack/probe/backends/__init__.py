"""Generation backends: what answers a batch of prompts for the label stage (and everything that labels).

A backend takes :class:`Job` s (a shared few-shot prefix, the question's own suffix, an adapter name, a seed) and
yields :class:`Generation` s (greedy first, then the samples) under one :class:`Decoding`. Members:

* ``prefix`` — knowpack's engine (``knowpack.probe.engine``): each prefix's keys/values computed once and shared;
* ``generate`` — plain ``model.generate`` per prompt (``knowpack.probe.reference``): the reference the engine is
  tested against, and a fallback for architectures the engine does not support.

A member is a small module here that registers a :class:`Backend`; the code it runs is imported only when a
model is loaded, so the CLI stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from knowpack.errors import InputError
from knowpack.registry import Registry


@dataclass(frozen=True)
class Decoding:
    """Decoding settings; all of them change answers, so all are part of the response store's key."""

    max_new_tokens: int = 24
    n_samples: int = 0
    temperature: float = 0.5
    stop_at_newline: bool = True
    min_new_tokens: int = 0  # no stop before this many tokens (benchmarks force a fixed length)

    def validate(self) -> None:
        if self.max_new_tokens < 1 or self.n_samples < 0 or self.min_new_tokens > self.max_new_tokens:
            raise InputError(f"decoding settings {self}: need max_new_tokens ≥ 1, n_samples ≥ 0, min ≤ max")
        if self.n_samples and not self.temperature > 0:
            raise InputError(f"temperature {self.temperature}: sampling needs a temperature > 0")


@dataclass(frozen=True)
class Job:
    """One prompt to answer: shared prefix, own suffix, adapter (None = base model), 63-bit sampling seed."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    adapter: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    tokens: tuple[int, ...]  # generated ids, the stop token included
    stopped: bool  # ended at a stop token (else at max_new_tokens)


class Engine(Protocol):
    def generate(self, jobs: Sequence[Job]) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        """Yield (job indices, generations per job: greedy first, then the samples) batch by batch."""


@dataclass(frozen=True)
class Backend:
    name: str
    help: str
    make: Callable[..., Engine]  # (model, tokenizer, decoding, batch_size, router=None) -> Engine


BACKENDS: Registry[Backend] = Registry("generation backend", package=__name__)


def register(backend: Backend) -> Backend:
    return BACKENDS.register(backend.name, backend)

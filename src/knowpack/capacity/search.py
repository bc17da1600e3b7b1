"""The search over the number of facts: exponential, then bisection, on outcomes that are known or not yet run.

:func:`walk` replays one search (one method, rank and seed) from the outcomes known so far and says which size to
run next. It is a pure function of those outcomes, so a search interrupted at any point — or asked again with
other constraints, which only change the outcomes — resumes by walking the same path over the runs that already
exist, and only the sizes it has not seen are trained.

The path: ``start``, then doubling while every constraint holds, up to ``stop``; at the first size that breaks one,
bisection (in log space, since capacities scale multiplicatively) between the largest size that held and the
smallest that broke, until the two are within ``tolerance`` of the former (or adjacent). The search assumes that
a size that holds implies every smaller size holds; noisy outcomes can break that, and the fit (``fit.py``)
shows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Walk:
    """Where a search stands: ``next`` size to run (None: done); ``held``, the largest size that met every
    constraint (0: none did); ``broke``, the smallest size above it that did not (None: none up to ``stop``);
    ``tried``, every size looked at, in order."""

    next: int | None
    held: int
    broke: int | None
    tried: tuple[int, ...]

    @property
    def done(self) -> bool:
        return self.next is None


def walk(outcome: Callable[[int], bool | None], start: int, stop: int, tolerance: float) -> Walk:
    """Replay the search; ``outcome(n)`` is True (every constraint held), False, or None (not run yet)."""
    tried: list[int] = []
    held, broke = 0, None
    size = min(start, stop)
    while True:  # exponential phase
        tried.append(size)
        result = outcome(size)
        if result is None:
            return Walk(size, held, broke, tuple(tried))
        if not result:
            broke = size
            break
        held = size
        if size >= stop:
            return Walk(None, held, None, tuple(tried))
        size = min(2 * size, stop)
    while not close_enough(held, broke, tolerance):  # bisection
        size = midpoint(held, broke)
        tried.append(size)
        result = outcome(size)
        if result is None:
            return Walk(size, held, broke, tuple(tried))
        held, broke = (size, broke) if result else (held, size)
    return Walk(None, held, broke, tuple(tried))


def close_enough(held: int, broke: int, tolerance: float) -> bool:
    """The capacity lies in [held, broke): done when that is within ``tolerance`` of ``held`` or one fact wide."""
    return broke - held <= max(1.0, tolerance * held)


def midpoint(held: int, broke: int) -> int:
    """A size strictly between the two: their geometric mean (the arithmetic one from 0)."""
    middle = math.sqrt(held * broke) if held > 0 else broke / 2
    return min(max(round(middle), held + 1), broke - 1)

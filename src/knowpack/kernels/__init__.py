"""Kernel sets: which code runs a loaded model's elementwise chains (RMS norms, rotary embeddings, gated MLPs).

transformers' eager code runs each chain as several kernels that each read and write the activations; on a GPU at
the Llama-3.1-8B shape they cost a third of a probe batch (``bench/gemm_floor.py --leave-out``). A fused set
(``liger``) replaces them in a loaded model; ``eager`` keeps transformers' code, the study's numerics
(docs/study-fidelity.md). Each set is a module of this package that registers itself; ``--kernels auto`` takes the
first fused set that can serve the model on its device and was checked on its architecture. The set in use enters
response stores' and runs' keys (``LoadedModel.numerics``), so answers made under one are never read as another's.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from knowpack.errors import InputError
from knowpack.registry import Registry

AUTO = "auto"


@dataclass(frozen=True)
class KernelSet:
    """``unavailable(config, device)`` says why the set cannot serve a model of this transformers config there
    (None: it can), so a bad choice fails before the weights load; ``apply`` patches it into a loaded model;
    ``automatic(config)`` says whether ``auto`` may pick it (where its answers were checked against the eager
    code's), a set it may not pick still serving a user who names it."""

    description: str
    unavailable: Callable[[Any, Any], str | None]
    apply: Callable[[Any], None]
    automatic: Callable[[Any], bool] = lambda config: True


KERNEL_SETS: Registry[KernelSet] = Registry("kernel set", package=__name__)


def resolve_kernels(choice: str, config, device) -> str:
    """The kernel set ``choice`` names for a model of ``config`` on ``device``: ``auto`` takes the first fused set
    that can serve it (else eager); a set named outright that cannot is a one-line error."""
    if choice != AUTO:
        reason = KERNEL_SETS[choice].unavailable(config, device)
        if reason:
            raise InputError(f"--kernels {choice}: {reason}")
        return choice
    return next((name for name, kernels in KERNEL_SETS.items()
                 if kernels.automatic(config) and kernels.unavailable(config, device) is None), "eager")


def apply_kernels(model, name: str) -> None:
    """Patch the kernel set ``name`` into ``model``, remembering what it changed (for :func:`eager_code`). Liger
    also patches the model's modeling module, so later models of that architecture in this process share it."""
    targets = [*{sys.modules[type(m).__module__] for m in model.modules()}, *model.modules()]
    before = [dict(vars(target)) for target in targets]
    KERNEL_SETS[name].apply(model)
    _CHANGES[model] = [(target, key, old.get(key, _ABSENT), vars(target).get(key, _ABSENT))
                       for target, old in zip(targets, before)
                       for key in old.keys() | vars(target).keys()
                       if old.get(key, _ABSENT) is not vars(target).get(key, _ABSENT)]


@contextmanager
def eager_code(model) -> Iterator[None]:
    """transformers' own code for the block on a model that a kernel set was patched into: benches time the
    study's approach beside knowpack's on one loaded model."""
    changes = _CHANGES.get(model, [])
    _set((target, key, old) for target, key, old, _ in changes)
    try:
        yield
    finally:
        _set((target, key, new) for target, key, _, new in changes)


def _set(assignments) -> None:
    for target, key, value in assignments:
        if value is _ABSENT:
            delattr(target, key)
        else:
            setattr(target, key, value)


_ABSENT = object()
_CHANGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

"""Fused kernels for the prefix engine on a GPU: the model's own elementwise code, compiled by ``torch.compile``.

On the Llama-3.1-8B shape half of an engine batch is not matmuls, and most of that half is chains of small
memory-bound kernels that eager PyTorch launches one by one, each a pass over the activations
(``bench/gemm_floor.py --leave-out`` on an H200: the RMS norms 19% of the batch, rotary embeddings 8%, the
attention's scale-mask-softmax-merge chain a part of its 25%). Inductor turns each chain into one kernel. What is
compiled is the model's own code — its RMS norm classes' ``forward`` and its modeling module's
``apply_rotary_pos_emb``, found by name — so every decoder keeps its own formulas (Gemma's ``1 + weight``, …), plus
the engine's own attention chains (``engine.prefix_softmax``, ``engine.merge_parts``). Intermediate roundings to
the model's dtype are emulated (``emulate_precision_casts``), so results differ from eager kernels only in the order
of float32 sums. Compiling costs seconds once per shape family in a process (inductor keeps its kernels on disk).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from contextlib import contextmanager

NORM_SUFFIX = "RMSNorm"  # transformers' RMS norm classes: LlamaRMSNorm, Qwen2RMSNorm, Gemma3RMSNorm, …
ROTARY_FUNCTION = "apply_rotary_pos_emb"  # what every transformers decoder's attention calls for rotary embeddings
COMPILE_OPTIONS = {"emulate_precision_casts": True}


def available(device) -> bool:
    """Whether fused kernels can be made for ``device``: a GPU with triton (inductor's GPU code generator)."""
    if device.type != "cuda":
        return False
    from torch.utils._triton import has_triton

    return has_triton()


@functools.cache
def compiled(function: Callable) -> Callable:
    """``function`` compiled once per process (shapes are specialised first, made dynamic when they change)."""
    import torch

    return torch.compile(function, options=COMPILE_OPTIONS)


class FusedModel:
    """The model's RMS norms and rotary embeddings, swapped for their compiled selves while ``applied``."""

    def __init__(self, model):
        self.norms = [m for m in model.modules() if type(m).__name__.endswith(NORM_SUFFIX)]
        modeling = {sys.modules[type(m).__module__] for m in model.modules()}
        self.rotary = [module for module in modeling if callable(getattr(module, ROTARY_FUNCTION, None))]

    @contextmanager
    def applied(self):
        originals = [getattr(module, ROTARY_FUNCTION) for module in self.rotary]
        for norm in self.norms:  # an instance attribute shadows the class's forward for this module only
            norm.forward = functools.partial(compiled(type(norm).forward), norm)
        for module, original in zip(self.rotary, originals):
            setattr(module, ROTARY_FUNCTION, compiled(original))
        try:
            yield
        finally:
            for norm in self.norms:
                del norm.forward
            for module, original in zip(self.rotary, originals):
                setattr(module, ROTARY_FUNCTION, original)

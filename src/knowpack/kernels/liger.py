"""Liger-Kernel's Triton kernels for RMS norms, rotary embeddings and SwiGLU/GeGLU MLPs, on CUDA devices.

Liger-Kernel is the maintained library of fused kernels for exactly these chains (the one TRL and axolotl use); it
knows each architecture's norms and MLPs (RMS norm with transformers' "llama" casting, Gemma's offset) and patches
its kernels into a loaded model, so knowpack writes none of its own. It is an optional dependency
(``pip install 'knowpack[gpu]'``). On Llama-family models the kernels compute the same functions rounded in other
places: in float32 the answers are the eager code's, in bf16 near-tie answers can change (bench/RESULTS.md,
session 12). On Gemma 3 they did not give the eager code's answers, so knowpack does not use them there.
"""

from __future__ import annotations

import importlib.util

from knowpack.kernels import KERNEL_SETS, KernelSet

# Architectures whose greedy answers under Liger's kernels equal the eager code's in float32
# (bench/kernel_agreement.py): ``auto`` picks Liger for these only. Gemma 3 gave other answers (180 of 1,024
# equal), so it is refused outright.
CHECKED = {"llama"}
DIFFERENT = {"gemma3", "gemma3_text"}


def _liger_unavailable(config, device) -> str | None:
    if device.type != "cuda":
        return f"Liger's Triton kernels run on CUDA devices, not on {device.type}"
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed (pip install 'knowpack[gpu]')"
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    if config.model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return f"Liger-Kernel has no kernels for {config.model_type} models"
    if config.model_type in DIFFERENT:
        return (f"Liger's kernels for {config.model_type} models give other answers than transformers' code in float32 "
                "(bench/kernel_agreement.py --architectures)")
    return None


def _liger_apply(model) -> None:
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    # The loss stays transformers': knowpack computes its own (per-run, masked) losses from the logits.
    _apply_liger_kernel_to_instance(model, rope=True, rms_norm=True, swiglu=True, geglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)


KERNEL_SETS.register("liger", KernelSet("Liger-Kernel's Triton kernels for norms, rotary embeddings and gated MLPs",
                                        _liger_unavailable, _liger_apply, lambda config: config.model_type in CHECKED))

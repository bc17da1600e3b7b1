"""Kernel sets: which set a choice resolves to, one-line errors before the weights load, and the patches a set
makes undone for the study's side of a bench (``eager_code``) and put back."""

import sys
import types

import pytest
import torch

from knowpack import kernels
from knowpack.errors import InputError
from knowpack.kernels import KernelSet, apply_kernels, eager_code, resolve_kernels
from knowpack.models import load_model


def test_auto_is_eager_on_a_cpu_and_liger_named_outright_says_why_not(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    assert loaded.kernels == "eager"
    assert resolve_kernels("auto", loaded.model.config, torch.device("cpu")) == "eager"
    assert loaded.numerics() == {"dtype": "float32"}, "the eager set keeps the keys made before kernel sets"
    with pytest.raises(InputError, match=r"^--kernels liger: Liger's Triton kernels run on CUDA devices, not on cpu$"):
        load_model(str(tiny_model_dir), device="cpu", kernels="liger")


def _fused_norm_forward(self, x):
    return x * 0  # recognisable: not the real norm


def _patch_like_liger(model):
    """What Liger does to a model: a modeling-module global replaced, submodules' forward bound anew."""
    module = sys.modules[type(model.model.norm).__module__]
    module.apply_rotary_pos_emb = lambda q, k, *args, **kwargs: (q, k)
    for submodule in model.modules():
        if type(submodule).__name__.endswith("RMSNorm"):
            submodule.forward = _fused_norm_forward.__get__(submodule)


def test_eager_code_undoes_a_sets_patches_and_puts_them_back(tiny_model_dir, monkeypatch):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    model = loaded.model
    module = sys.modules[type(model.model.norm).__module__]
    rotary = module.apply_rotary_pos_emb
    kernels.KERNEL_SETS.names()  # the package's own sets first
    monkeypatch.setitem(kernels.KERNEL_SETS._members, "fake", KernelSet("test", lambda c, d: None, _patch_like_liger))
    monkeypatch.setattr(module, "apply_rotary_pos_emb", rotary)  # restored after the test whatever happens
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        eager_logits = model(ids).logits
        apply_kernels(model, "fake")
        patched_logits = model(ids).logits
        assert module.apply_rotary_pos_emb is not rotary and "forward" in vars(model.model.norm)
        assert not torch.equal(patched_logits, eager_logits)
        with eager_code(model):
            assert module.apply_rotary_pos_emb is rotary and "forward" not in vars(model.model.norm)
            assert torch.equal(model(ids).logits, eager_logits)
        assert module.apply_rotary_pos_emb is not rotary
        assert torch.equal(model(ids).logits, patched_logits)


def test_auto_takes_a_fused_set_only_where_it_was_checked(monkeypatch):
    kernels.KERNEL_SETS.names()
    checked = KernelSet("test", lambda c, d: None, lambda m: None, lambda config: config.model_type == "llama")
    monkeypatch.setattr(kernels.KERNEL_SETS, "_members", {"eager": kernels.KERNEL_SETS["eager"], "fused": checked})
    llama, gemma = (type("Config", (), {"model_type": t})() for t in ("llama", "gemma3_text"))
    assert resolve_kernels("auto", llama, torch.device("cpu")) == "fused"
    assert resolve_kernels("auto", gemma, torch.device("cpu")) == "eager"
    assert resolve_kernels("fused", gemma, torch.device("cpu")) == "fused", "named outright, it still serves"


def test_liger_is_checked_on_llama_and_refused_on_gemma3(monkeypatch):
    """Liger's own tables are stood in for (the CPU machine has neither Triton nor liger-kernel)."""
    from knowpack.kernels import liger

    fake = types.ModuleType("liger_kernel.transformers.monkey_patch")
    fake.MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": None, "qwen2": None, "gemma3_text": None}
    for name in ("liger_kernel", "liger_kernel.transformers", "liger_kernel.transformers.monkey_patch"):
        monkeypatch.setitem(sys.modules, name, fake if name.endswith("monkey_patch") else types.ModuleType(name))
    monkeypatch.setattr(liger.importlib.util, "find_spec", lambda name: object())
    cuda = type("Device", (), {"type": "cuda"})()
    config = lambda model_type: type("Config", (), {"model_type": model_type})()  # noqa: E731
    assert resolve_kernels("auto", config("llama"), cuda) == "liger"
    assert resolve_kernels("auto", config("qwen2"), cuda) == "eager", "not checked: only when named"
    assert resolve_kernels("liger", config("qwen2"), cuda) == "liger"
    assert resolve_kernels("auto", config("gemma3_text"), cuda) == "eager"
    with pytest.raises(InputError, match=r"^--kernels liger: Liger's kernels for gemma3_text models give other answers"):
        resolve_kernels("liger", config("gemma3_text"), cuda)
    with pytest.raises(InputError, match=r"^--kernels liger: Liger-Kernel has no kernels for mamba models$"):
        resolve_kernels("liger", config("mamba"), cuda)

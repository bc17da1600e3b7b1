"""Full fine-tuning, for models that fit: the targeted weights themselves are trained (``--targets mlp`` the MLP
matrices, ``all-linear`` every linear layer but the output, ``all`` every weight of the model), no adapter.

An epoch is saved as ``full_weights.safetensors`` (the trained tensors by parameter name, in the model's dtype)
and ``full_weights.json``; label and benchmarks apply it with :func:`swapped_in`, which puts the trained tensors in
place of the model's own and copies those back on exit, bit for bit. Such a folder is as large as the weights it
trains (the optimizer state twice that), and every epoch keeps one.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

from knowpack.errors import InputError
from knowpack.train.methods import Method, register, targeted_linears

EVERY_WEIGHT = "all"  # --targets value: every parameter of the model


@register
class Full(Method):
    name = "full"
    help = "full fine-tuning of the targeted weights (--targets mlp, all-linear, or all = every weight); no adapter"
    default_lr = 1e-5  # the whole weight moves: LoRA's 1e-3 would wreck the model at once

    @property
    def files(self) -> tuple[str, ...]:
        from knowpack.train.folder import FULL_CONFIG_FILE, FULL_WEIGHTS_FILE

        return (FULL_WEIGHTS_FILE, FULL_CONFIG_FILE)

    @contextmanager
    def attached(self, model, config):
        """The model itself with only the targeted weights trainable; weights (kept on the CPU meanwhile), flags and
        mode restored on exit."""
        import torch

        if getattr(model, "peft_config", None):
            raise InputError("the loaded model carries a LoRA adapter; fine-tune the plain base model")
        trained = trained_parameters(model, config.targets)
        requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        originals = {name: p.detach().to("cpu", copy=True) for name, p in trained.items()}
        was_training = model.training
        for name, p in model.named_parameters():
            p.requires_grad_(name in trained)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in trained.items():
                    p.copy_(originals[name])
                    p.grad = None
            for name, p in model.named_parameters():
                p.requires_grad_(requires_grad[name])
            model.train(was_training)

    def save(self, trainee, folder: Path) -> None:
        from safetensors.torch import save_file

        from knowpack.train.folder import FULL_CONFIG_FILE, FULL_WEIGHTS_FILE

        tensors = {name: p.detach().to("cpu").contiguous() for name, p in trainee.named_parameters() if p.requires_grad}
        save_file(tensors, folder / FULL_WEIGHTS_FILE)
        description = {"method": self.name, "parameters": sorted(tensors)}
        (folder / FULL_CONFIG_FILE).write_text(json.dumps(description, indent=1))

    def load(self, trainee, folder: Path, device) -> None:
        import torch
        from safetensors.torch import load_file

        from knowpack.train.folder import FULL_WEIGHTS_FILE

        params = dict(trainee.named_parameters())
        with torch.no_grad():
            for name, value in load_file(folder / FULL_WEIGHTS_FILE, device=str(device)).items():
                params[name].copy_(value)


def trained_parameters(model, targets: str) -> dict:
    """The parameters ``--targets`` names: every one for ``all``, else those of the targeted linear modules."""
    params = dict(model.named_parameters())
    if targets == EVERY_WEIGHT:
        return params
    chosen = {f"{module_name}.{name}": p for module_name, module in targeted_linears(model, targets).items()
              for name, p in module.named_parameters()}
    if not chosen:
        raise InputError(f"--targets {targets}: names no linear module of the model")
    return {name: params[name] for name in params if name in chosen}


# ---------------------------------------------------------------- applying a saved epoch (label, benchmarks)


def is_full_weights(folder: Path) -> bool:
    from knowpack.train.folder import FULL_WEIGHTS_FILE

    return (Path(folder) / FULL_WEIGHTS_FILE).is_file()


def check_weights(folder: Path, model) -> str:
    """Refuse weights that do not fit ``model`` (unknown names, other shapes, an unreadable file); return their
    fingerprint (sha256 of the weights and their description)."""
    from safetensors import SafetensorError, safe_open

    from knowpack.runfolder import sha256_file
    from knowpack.train.folder import FULL_CONFIG_FILE, FULL_WEIGHTS_FILE

    weights, described = Path(folder) / FULL_WEIGHTS_FILE, Path(folder) / FULL_CONFIG_FILE
    if not described.is_file():
        raise InputError(f"{folder}: {FULL_WEIGHTS_FILE} without {FULL_CONFIG_FILE}; the epoch folder is incomplete")
    params = dict(model.named_parameters())
    try:
        with safe_open(str(weights), framework="pt") as handle:
            for name in handle.keys():
                shape = list(handle.get_slice(name).get_shape())
                if name not in params or list(params[name].shape) != shape:
                    have = f"is {list(params[name].shape)}" if name in params else "does not exist"
                    raise InputError(f"{folder}: fine-tuned on another base model ({name} {shape}; in the loaded "
                                     f"model it {have})")
    except SafetensorError as err:
        raise InputError(f"{weights}: not a readable safetensors file ({str(err).splitlines()[0][:200]}); the "
                         "weights are damaged or truncated") from err
    digest = hashlib.sha256(sha256_file(weights).encode() + b"|" + sha256_file(described).encode())
    return digest.hexdigest()


@contextmanager
def swapped_in(model, folder: Path):
    """``model`` with the fine-tuned weights of ``folder`` in place of its own, which are put back on exit."""
    import torch
    from safetensors.torch import load_file

    from knowpack.train.folder import FULL_WEIGHTS_FILE

    params = dict(model.named_parameters())
    originals = {}
    try:
        with torch.no_grad():
            for name, value in load_file(Path(folder) / FULL_WEIGHTS_FILE).items():
                originals[name] = params[name].detach().to("cpu", copy=True)
                params[name].copy_(value)
        yield model
    finally:
        with torch.no_grad():
            for name, value in originals.items():
                params[name].copy_(value)

"""Training methods: what a packing run trains and how it is kept. One module per method registers itself in
:data:`METHODS`; ``TrainConfig.method`` chooses one, so ``train``, sweeps (``grid: {method: [lora, dora]}``) and
``capacity`` compare methods on one protocol.

A method provides, for the generic loop in ``train/loop.py``:

* ``attached(model, config)`` — a context manager giving the module to train (a peft model, or the model itself)
  with fresh trainable weights, seeded by ``config.seed``; on exit the base model is exactly as it was (weights,
  ``requires_grad`` flags, train/eval mode), so a sweep trains every run on one loaded model;
* ``save(trainee, folder)`` / ``load(trainee, folder, device)`` — the epoch's trained weights, in the form that
  evaluation applies (``files`` names them; the loop adds the optimizer state), and back for a resume;
* ``default_lr`` — the learning rate ``capacity`` uses for it unless told otherwise.

Saved epochs come in two forms, and the label stage and the benchmarks apply either: a PEFT adapter folder (lora,
dora and pissa, the last converted to plain LoRA) and a full-weights folder (``full``: the trained tensors,
swapped into the model for the time they are used, ``full.py``).

Member modules stay light (torch and peft are imported when a method runs), so the CLI lists them at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from knowpack.registry import Registry

if TYPE_CHECKING:
    import torch

    from knowpack.train.stage import TrainConfig


class Method:
    """Base of every training method (see the module docstring)."""

    name: ClassVar[str]
    help: ClassVar[str]
    files: ClassVar[tuple[str, ...]]
    default_lr: ClassVar[float] = 1e-3
    Options: ClassVar[Any] = None

    def attached(self, model: torch.nn.Module, config: TrainConfig):
        raise NotImplementedError

    def save(self, trainee: torch.nn.Module, folder: Path) -> None:
        raise NotImplementedError

    def load(self, trainee: torch.nn.Module, folder: Path, device: torch.device) -> None:
        raise NotImplementedError

    @property
    def epoch_files(self) -> tuple[str, ...]:
        """Every file of a complete epoch folder: the method's weights, then the optimizer state."""
        from knowpack.train.folder import OPTIMIZER_FILE

        return (*self.files, OPTIMIZER_FILE)


METHODS: Registry[Method] = Registry("training method", package=__name__)


def register(method_class: type[Method]) -> type[Method]:
    """Class decorator: register one instance of the method under its name."""
    METHODS.register(method_class.name, method_class())
    return method_class


def peft_targets(targets: str) -> list[str] | str:
    """``--targets`` as peft's ``target_modules``: a preset's module names, ``all-linear``, or the names given."""
    from knowpack.train.stage import TARGET_PRESETS

    preset = TARGET_PRESETS.get(targets)
    return preset if preset is not None else [name.strip() for name in targets.split(",") if name.strip()]


def names_target(module_name: str, targets) -> bool:
    """peft's rule: a string is a regular expression for the whole name; a list names module suffixes."""
    import re

    if isinstance(targets, str):
        return re.fullmatch(targets, module_name) is not None
    return any(module_name == t or module_name.endswith(f".{t}") for t in targets or ())


def targeted_linears(model: torch.nn.Module, targets: str) -> dict[str, torch.nn.Module]:
    """The linear modules ``--targets`` names (peft's rule; ``all-linear`` = every linear layer but the output
    layer), by module name."""
    import torch

    wanted = peft_targets(targets)
    output = model.get_output_embeddings()
    return {name: module for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and (module is not output if wanted == "all-linear" else names_target(name, wanted))}

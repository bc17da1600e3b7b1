"""Several LoRA adapters of one base model in one generation batch, each row with its own adapter (or none), at
close to the base model's speed.

peft serves a mixed batch (``adapter_names``) by running every adapter's LoRA path on a gathered copy of its rows,
module by module, and indexing the results back: many small kernels and copies per layer, which made labelling
with adapters several times slower than the base model. Here the batch's rows are already grouped by adapter
(the engine sorts them so), so each target Linear adds ``scale · (x[rows] @ Aᵀ) @ Bᵀ`` for each group on a slice
of the rows, in place: one pair of small matmuls per adapter per module, no gather, no copy of the batch. The
numbers are peft's: the same weights, the same scaling (alpha / r, or alpha / √r with rsLoRA), the base output
plus the LoRA output.

On a GPU, where a step of a small model is bound by kernel launches rather than arithmetic, a module with several
adapters runs them all at once: ``x @ A_allᵀ`` over every adapter's rank columns, each row's columns of other
adapters zeroed by a mask, then ``@ B_allᵀ`` — three kernels per module whatever the number of adapters, at n×
the LoRA arithmetic (small next to the base Linear while n·r stays under ``MASKED_COLUMNS``). On a CPU, bound by
arithmetic, each row group runs its own adapter.

Only plain LoRA adapters are served here (no DoRA, no bias, no extra trained modules); anything else goes through
peft (``supports``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

MASKED_COLUMNS = 512  # adapters × rank up to which a module runs all its adapters in one pass
MASKED_ALIGNMENT = 16  # the masked path's columns are padded to a multiple of this
MASKED_DEVICES = {"cuda"}  # where that pays: launch-bound devices (a CPU pays for the n× arithmetic)


@dataclass
class Route:
    """One forward pass's rows: (start, end, adapter index) groups, and per rank the mask that keeps each row's
    own adapter's columns of ``x @ A_allᵀ`` (made on first use)."""

    groups: list[tuple[int, int, int]]
    rows: int
    masks: dict[int, torch.Tensor] = field(default_factory=dict)

    def mask(self, rank: int, columns: int, like: torch.Tensor) -> torch.Tensor:
        """(rows, 1, columns): 1 on the row's adapter's ``rank`` columns, 0 elsewhere (and on padding columns)."""
        if rank not in self.masks:
            mask = torch.zeros(self.rows, columns, dtype=like.dtype, device=like.device)  # no host copy:
            for start, end, adapter in self.groups:  # a captured decode step builds it too
                mask[start:end, adapter * rank:(adapter + 1) * rank] = 1
            self.masks[rank] = mask.view(self.rows, 1, columns)
        return self.masks[rank]


_ROUTE: list[Route] = []  # the current forward pass's route


def supports(folder: Path) -> bool:
    """Whether the adapter in ``folder`` is plain LoRA that this module reproduces exactly."""
    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    return (config.get("peft_type", "LORA") == "LORA" and not config.get("use_dora") and config.get("bias", "none") == "none"
            and not config.get("modules_to_save") and not config.get("layers_to_transform")
            and not config.get("rank_pattern") and not config.get("alpha_pattern")
            and config.get("init_lora_weights", True) in (True, False, "gaussian"))


class StackedAdapters:
    """LoRA weights of several adapters by module: ``a[m]`` (adapters, r, in) and ``b[m]`` (adapters, out, r),
    each adapter's scaling folded into its B."""

    def __init__(self, model: torch.nn.Module, adapters: dict[str, Path]):
        self.names = list(adapters)
        self.index = {name: i for i, name in enumerate(self.names)}
        parameter = next(model.parameters())
        self.model, self.device = model, parameter.device
        modules = dict(model.named_modules())
        weights: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        for i, name in enumerate(self.names):
            folder = Path(adapters[name])
            config = json.loads((folder / "adapter_config.json").read_text())
            r, alpha = config["r"], config["lora_alpha"]
            scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
            tensors = load_file(str(folder / "adapter_model.safetensors"))
            for key, tensor in tensors.items():
                match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight", key)
                if match is None:
                    continue
                module, part = match.groups()
                entry = weights.setdefault(module, {}).setdefault(i, [None, None])
                entry[0 if part == "A" else 1] = tensor if part == "A" else tensor * scaling
        self.a: dict[str, torch.Tensor] = {}
        self.b: dict[str, torch.Tensor] = {}
        self.present: dict[str, frozenset[int]] = {}  # the adapters that train each module
        for module, per_adapter in weights.items():
            rank = max(a.shape[0] for a, _ in per_adapter.values())
            layer = modules[module]
            a = torch.zeros(len(self.names), rank, layer.in_features, dtype=parameter.dtype, device=parameter.device)
            b = torch.zeros(len(self.names), layer.out_features, rank, dtype=parameter.dtype, device=parameter.device)
            for i, (lora_a, lora_b) in per_adapter.items():
                a[i, : lora_a.shape[0]] = lora_a.to(a)
                b[i, :, : lora_b.shape[1]] = lora_b.to(b)
            self.a[module], self.b[module] = a, b
            self.present[module] = frozenset(per_adapter)

    @contextmanager
    def attached(self) -> Iterator[StackedAdapters]:
        """Each target module adds its adapters' outputs while the block runs; the model is untouched after."""
        masked = self.device.type in MASKED_DEVICES and len(self.names) > 1

        def make(module_name, base_forward):
            a, b = self.a[module_name], self.b[module_name]
            if masked and a.shape[0] * a.shape[1] <= MASKED_COLUMNS:
                return self._masked_forward_of(base_forward, a, b)
            return self._forward_of(base_forward, a, b, self.present[module_name])

        with patched_forwards(self.model, list(self.a), make):
            yield self

    @staticmethod
    def _forward_of(base_forward, a: torch.Tensor, b: torch.Tensor, present: frozenset[int]):
        def forward(x: torch.Tensor) -> torch.Tensor:
            out = base_forward(x)
            for start, end, adapter in (_ROUTE[-1].groups if _ROUTE else ()):
                if adapter in present:
                    rows = x[start:end]
                    out[start:end] += (rows @ a[adapter].T.to(rows.dtype)) @ b[adapter].T.to(rows.dtype)
            return out

        return forward

    @staticmethod
    def _masked_forward_of(base_forward, a: torch.Tensor, b: torch.Tensor):
        adapters, rank, width = a.shape
        # (adapters · rank, in) and (out, adapters · rank), zero-padded to aligned columns: a matmul over, say,
        # 11 columns (11 adapters of rank 1) falls back to slow unaligned kernels
        columns = -(-adapters * rank // MASKED_ALIGNMENT) * MASKED_ALIGNMENT
        a_all = a.new_zeros(columns, width)
        a_all[: adapters * rank] = a.reshape(adapters * rank, width)
        b_all = b.new_zeros(b.shape[1], columns)
        b_all[:, : adapters * rank] = b.permute(1, 0, 2).reshape(b.shape[1], adapters * rank)

        def forward(x: torch.Tensor) -> torch.Tensor:
            out = base_forward(x)
            if _ROUTE and _ROUTE[-1].groups:
                down = (x @ a_all.T.to(x.dtype)) * _ROUTE[-1].mask(rank, columns, x)
                out.view(-1, out.shape[-1]).addmm_(down.view(-1, down.shape[-1]), b_all.T.to(x.dtype))  # add fused
            return out

        return forward

    @contextmanager
    def route(self, adapters: Sequence[str | None]) -> Iterator[None]:
        """Route one forward pass: ``adapters`` names each row's adapter (None: the base model); rows with the
        same adapter must be contiguous."""
        groups: list[tuple[int, int, int]] = []
        for row, name in enumerate(adapters):
            if name is None:
                continue
            index = self.index[name]
            if groups and groups[-1][2] == index and groups[-1][1] == row:
                groups[-1] = (groups[-1][0], row + 1, index)
            else:
                groups.append((row, row + 1, index))
        _ROUTE.append(Route(groups, len(adapters)))
        try:
            yield
        finally:
            _ROUTE.pop()


@contextmanager
def patched_forwards(model: torch.nn.Module, paths: Sequence[str], make_forward) -> Iterator[None]:
    """While the block runs, the modules at ``paths`` run ``make_forward(path, their own forward)`` instead;
    their class's forward again afterwards. (Adapters by row group here, runs by token span in
    ``train.grouped``: both need per-row routing that peft offers only for inference, module by module.)"""
    modules = [(path, model.get_submodule(path)) for path in paths]
    for path, module in modules:
        module.forward = make_forward(path, module.forward)
    try:
        yield
    finally:
        for _, module in modules:
            del module.forward

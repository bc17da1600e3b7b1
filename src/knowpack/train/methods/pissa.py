"""PiSSA (Meng et al. 2024): LoRA started from each weight's top-r singular vectors, which are taken out of the
base weight (``W_res = W - s·B0·A0``); PEFT's ``init_lora_weights="pissa"`` (the exact SVD).

Two things differ from LoRA, both kept here:

* the base weights change while the adapter is attached, so they are copied first and put back on exit
  (bit for bit: a sweep's next run must find the base untouched);
* an epoch is saved the way PEFT converts PiSSA for use on the *original* base model: the update
  ``s·(B·A − B0·A0)`` written as a plain LoRA adapter of rank 2r, ``A' = [A; A0]``, ``B' = [B, −B0]``, with alpha
  doubled (× √2 with rsLoRA) so the scaling stays ``s``. Label and benchmarks apply it like any LoRA adapter; a
  resume takes the first r rows (columns) back as the trained ``A`` (``B``) after re-initialising, which the exact
  SVD makes identical.
"""

from __future__ import annotations

from contextlib import contextmanager

from knowpack.errors import InputError
from knowpack.train.methods import register, targeted_linears
from knowpack.train.methods._peft import ADAPTER, PeftMethod, write_adapter


@register
class Pissa(PeftMethod):
    name = "pissa"
    help = "PiSSA: LoRA initialised from the weights' principal singular vectors (PEFT init_lora_weights=pissa)"

    def variant(self):
        return {"init_lora_weights": "pissa"}

    @contextmanager
    def attached(self, model, config):
        from peft.tuners.lora import LoraLayer

        targeted = list(targeted_linears(model, config.targets).values())
        originals = [(module, module.weight.data) for module in targeted]  # pissa_init assigns new tensors
        try:
            with super().attached(model, config) as peft_model:
                held = {id(module) for module in targeted}
                if any(id(m.get_base_layer()) not in held for m in peft_model.modules() if isinstance(m, LoraLayer)):
                    raise InputError(f"--targets {config.targets}: pissa would change base weights it cannot restore")
                peft_model.pissa_initial = {k: v.detach().clone() for k, v in self.adapter_weights(peft_model).items()}
                yield peft_model
        finally:
            for module, weight in originals:
                module.weight.data = weight

    def save(self, trainee, folder) -> None:
        import copy

        import torch

        converted = {}
        for key, trained in self.adapter_weights(trainee).items():
            initial = trainee.pissa_initial[key]
            if ".lora_A." in key:
                converted[key] = torch.cat([trained, initial], dim=0)
            elif ".lora_B." in key:
                converted[key] = torch.cat([trained, -initial], dim=1)
        plain = copy.deepcopy(trainee.peft_config[ADAPTER])
        plain.init_lora_weights = True
        plain.r *= 2
        plain.lora_alpha *= 2 ** 0.5 if plain.use_rslora else 2
        write_adapter(folder, converted, plain)

    def trained_form(self, saved: dict) -> dict:
        return {key: value[: value.shape[0] // 2] if ".lora_A." in key else value[:, : value.shape[1] // 2]
                for key, value in saved.items()}

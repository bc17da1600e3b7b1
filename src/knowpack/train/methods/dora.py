"""DoRA (Liu et al. 2024): LoRA's update applied to the weight's direction, with a trained magnitude per output;
PEFT's ``use_dora``. The saved adapter is a PEFT folder whose config says so, and loads like any LoRA adapter."""

from __future__ import annotations

from knowpack.train.methods import register
from knowpack.train.methods._peft import PeftMethod


@register
class Dora(PeftMethod):
    name = "dora"
    help = "DoRA: LoRA on the weights' direction plus a trained magnitude per output (PEFT use_dora)"

    def variant(self):
        return {"use_dora": True}

"""LoRA (Hu et al. 2021), the study's method: a low-rank update B·A beside each targeted weight, B starting at zero."""

from __future__ import annotations

from knowpack.train.methods import register
from knowpack.train.methods._peft import PeftMethod


@register
class Lora(PeftMethod):
    name = "lora"
    help = "LoRA: a rank-r update B·A beside each targeted weight (the study's method)"

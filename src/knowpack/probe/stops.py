"""When an answer ends, shared by every generation backend so they stop at the same token."""

from __future__ import annotations

import torch


class StopRule:
    """Which generated tokens end an answer: end-of-sequence/turn ids always; with ``stop_at_newline`` also a
    token containing a newline once the answer has visible text (a leading newline does not end it)."""

    def __init__(self, model, tokenizer, vocab_size: int, stop_at_newline: bool, device: torch.device):
        eos: set[int] = set()
        for source in (getattr(model, "generation_config", None), tokenizer):
            ids = getattr(source, "eos_token_id", None)
            if ids is not None:
                eos.update([ids] if isinstance(ids, int) else ids)
        self.eos_ids = sorted(eos)
        texts = tokenizer.batch_decode([[i] for i in range(min(vocab_size, len(tokenizer)))])
        texts += [""] * (vocab_size - len(texts))
        self.is_eos = torch.zeros(vocab_size, dtype=torch.bool)
        self.is_eos[[i for i in self.eos_ids if i < vocab_size]] = True
        newline = [stop_at_newline and "\n" in t for t in texts]
        self.has_newline = torch.tensor(newline, dtype=torch.bool)
        self.visible = torch.tensor([bool(t.strip()) for t in texts], dtype=torch.bool)
        self.visible_before_newline = torch.tensor(
            [nl and bool(t.split("\n", 1)[0].strip()) for t, nl in zip(texts, newline)], dtype=torch.bool
        )
        for name in ("is_eos", "has_newline", "visible", "visible_before_newline"):
            setattr(self, name, getattr(self, name).to(device))

    def step(self, tokens: torch.Tensor, seen_visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stops, seen_visible after these tokens) for one generated token per row."""
        stops = self.is_eos[tokens] | (
            self.has_newline[tokens] & (seen_visible | self.visible_before_newline[tokens])
        )
        return stops, seen_visible | self.visible[tokens]

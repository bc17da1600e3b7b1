"""The reference backend: every prompt answered on its own by ``model.generate`` (peft's, with an adapter).

No shared prefix, no padding, no batching across prompts: the computation the study's scripts ran, which the
prefix engine must reproduce (greedy answers token for token). Samples of one prompt come from one seeded
``generate`` call, so they do not depend on what else is being generated. Answers end where the engine's end
(``StopRule``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from knowpack.errors import InputError
from knowpack.probe.backends import Decoding, Generation, Job
from knowpack.probe.stops import StopRule


class GenerateEngine:
    def __init__(self, model, tokenizer, decoding: Decoding, batch_size: int = 1, router=None):
        decoding.validate()
        self.router = router
        if decoding.min_new_tokens:
            raise InputError("the generate backend does not force a minimum answer length; use the prefix backend")
        self.model, self.decoding = model, decoding
        self.device = next(model.parameters()).device
        self.stop = StopRule(model, tokenizer, model.get_output_embeddings().weight.shape[0],
                             decoding.stop_at_newline, self.device)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop.eos_ids[0]

    def generate(self, jobs: Sequence[Job]) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        for index, job in enumerate(jobs):
            yield [index], [self.answer(job)]

    @torch.inference_mode()
    def answer(self, job: Job) -> list[Generation]:
        """Greedy first, then the samples, each cut at its stop token."""
        prompt = torch.tensor([job.prefix + job.suffix], device=self.device)
        outputs = [self._generate(prompt, job.adapter, do_sample=False)[0]]
        if self.decoding.n_samples:
            torch.manual_seed(job.seed)
            rows = prompt.expand(self.decoding.n_samples, -1)
            outputs += list(self._generate(rows, job.adapter, do_sample=True, temperature=self.decoding.temperature,
                                           top_k=0, top_p=1.0))
        return [self._cut(tokens) for tokens in outputs]

    def _generate(self, ids: torch.Tensor, adapter: str | None, **sampling) -> torch.Tensor:
        from contextlib import nullcontext

        extra = {}
        if self.router is None and hasattr(self.model, "peft_config"):
            extra["adapter_names"] = [adapter or "__base__"] * len(ids)
        with self.router.route([adapter] * len(ids)) if self.router is not None else nullcontext():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids),
                                      max_new_tokens=self.decoding.max_new_tokens, eos_token_id=self.stop.eos_ids,
                                      pad_token_id=self.pad_token_id, **sampling, **extra)
        return out[:, ids.shape[1]:]

    def _cut(self, tokens: torch.Tensor) -> Generation:
        seen = torch.zeros(1, dtype=torch.bool, device=self.device)
        kept: list[int] = []
        for token in tokens.tolist():
            kept.append(token)
            stops, seen = self.stop.step(torch.tensor([token], device=self.device), seen)
            if bool(stops[0]):
                return Generation(tuple(kept), True)
        return Generation(tuple(kept), False)

"""Greedy answers under 11 adapters in one pass: each adapter's prefix read by one grouped matmul vs by a matmul
per adapter (the path before it, and still the path off Hopper GPUs), in bf16 with CUDA graphs.

A random model at the usual weight scale repeats one token whatever the prompt, so the weights are rescaled to
make answers depend on the question (as ``probe_throughput.check_exact_fp32`` does).

    PYTHONPATH=src:bench python bench/grouped_prefix_agreement.py --tokenizer TOKENIZER_DIR
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer

import probe_throughput as bench
from knowpack.probe import engine as engine_module
from knowpack.probe.adapters import StackedAdapters
from knowpack.probe.backends import Decoding, Job


def greedy_answers(model, tokenizer, adapters: dict[str, Path], jobs: list[Job]) -> dict[int, tuple[int, ...]]:
    with StackedAdapters(model, adapters).attached() as stacked:
        engine = engine_module.PrefixEngine(model, tokenizer, Decoding(max_new_tokens=16), batch_size=4096,
                                            router=stacked)
        return {i: g[0].tokens for indices, gens in engine.generate(jobs) for i, g in zip(indices, gens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--questions", type=int, default=64)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = bench.synthetic_model("smollm2", "cuda")
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.ndim == 2:
                weight.normal_(0, 1.0 if "embed" in name else 1.5 / weight.shape[1] ** 0.5)
    jobs = bench.build_jobs(tokenizer, args.questions, 2, True)
    with tempfile.TemporaryDirectory() as folder:
        adapters = bench.random_adapters(model, 11, 16, Path(folder))
        routed = [Job(j.prefix, j.suffix, name) for name in adapters for j in jobs]
        grouped = greedy_answers(model, tokenizer, adapters, routed)
        engine_module._grouped_matmuls = lambda like: False
        looped = greedy_answers(model, tokenizer, adapters, routed)
    same = sum(grouped[i] == looped[i] for i in looped)
    print(f"grouped prefix matmuls vs a matmul per adapter: {same}/{len(looped)} greedy answers identical")


if __name__ == "__main__":
    main()

"""How fast the probe engine could be on the Llama-3.1-8B shape if nothing but its matmuls ran, against what it makes.

The engine's decode step on the 8B shape is bound by arithmetic, not by launches (CUDA graphs change nothing
there), so the question for a faster engine is how far it is from its own matmuls. This times cuBLAS on the exact
shapes of one decode step (2,048 rows through 32 layers and the output layer) and one prefill slice, turns them
into a prompts/s floor for the bench's prompts (suffix tokens + 16 forced new tokens each), and runs the engine on
the same prompts in the same process; ``--profile`` adds the top kernels of one engine batch, and ``--leave-out``
times the engine with one part of every layer left out (its answers are wrong; only the time it saves counts), which
places the time that is not matmuls without hardware counters; ``--replace`` times it with a library kernel in place
of a part (what such a kernel would save the engine).

    PYTHONPATH=src:bench python bench/gemm_floor.py --tokenizer TOKENIZER_DIR [--profile] [--leave-out] [--replace]
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import ExitStack
from unittest import mock

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AutoTokenizer
from transformers.models.llama import modeling_llama

import knowpack.probe.prompts as prompts_module
import probe_throughput as bench
from knowpack.probe.backends import Decoding
from knowpack.probe import engine as engine_module
from knowpack.probe.engine import PREFILL_TOKENS

SHAPES = {  # (out, in) of each Linear of one Llama-3.1-8B layer; fused: q/k/v and gate/up as one matmul each
    "separate": dict(q=(4096, 4096), k=(1024, 4096), v=(1024, 4096), o=(4096, 4096), gate=(14336, 4096),
                     up=(14336, 4096), down=(4096, 14336)),
    "fused": dict(qkv=(6144, 4096), o=(4096, 4096), gate_up=(28672, 4096), down=(4096, 14336)),
}
LAYERS, VOCAB, WIDTH = 32, 128256, 4096


def seconds(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats / 1000


def linear_seconds(rows: int, out_features: int, in_features: int) -> float:
    x = torch.randn(rows, in_features, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(out_features, in_features, device="cuda", dtype=torch.bfloat16) * 0.01
    return seconds(lambda: F.linear(x, w))


def _no_attention(module, query, key, value, *args, **kwargs):
    return query.transpose(1, 2).contiguous(), None


def _mlp_without_activation(self, x):
    self.gate_proj(x)  # the matmul stays, its activation and product go
    return self.down_proj(self.up_proj(x))


LEAVE_OUT = {  # part of every layer → the patch that skips it
    "attention (scores, softmax, weighted sums, key writes)":
        lambda: mock.patch.dict(AttentionInterface._global_mapping, {engine_module.ATTENTION_NAME: _no_attention}),
    "RMS norms": lambda: mock.patch.object(modeling_llama.LlamaRMSNorm, "forward", lambda self, x: x),
    "rotary embeddings":
        lambda: mock.patch.object(modeling_llama, "apply_rotary_pos_emb", lambda q, k, *args, **kwargs: (q, k)),
    "MLP activation and product":
        lambda: mock.patch.object(modeling_llama.LlamaMLP, "forward", _mlp_without_activation),
}
def _liger(part: str):
    """Liger-Kernel's Triton kernel for one part (imported here: it needs a GPU and Triton)."""
    from liger_kernel.transformers.functional import liger_rms_norm, liger_rope, liger_swiglu

    patches = {
        "norm": lambda: mock.patch.object(modeling_llama.LlamaRMSNorm, "forward", lambda self, x: liger_rms_norm(
            x, self.weight, self.variance_epsilon, casting_mode="llama")),
        "rotary": lambda: mock.patch.object(modeling_llama, "apply_rotary_pos_emb",
                                            lambda q, k, cos, sin, *args, **kwargs: liger_rope(q, k, cos, sin)),
        "mlp": lambda: mock.patch.object(modeling_llama.LlamaMLP, "forward", lambda self, x: self.down_proj(
            liger_swiglu(self.gate_proj(x), self.up_proj(x)))),
    }
    stack = ExitStack()
    for name in patches if part == "all" else [part]:
        stack.enter_context(patches[name]())
    return stack


REPLACE = {  # a library kernel in place of transformers' eager code → the patch that swaps it in
    "RMS norms by torch's `F.rms_norm` (one fused kernel; rounds once, not twice)": lambda: mock.patch.object(
        modeling_llama.LlamaRMSNorm, "forward",
        lambda self, x: F.rms_norm(x, self.weight.shape, self.weight, self.variance_epsilon)),
    "RMS norms by Liger's kernel (llama casting: rounds where transformers does)": lambda: _liger("norm"),
    "rotary embeddings by Liger's kernel": lambda: _liger("rotary"),
    "MLP activation and product by Liger's SwiGLU kernel": lambda: _liger("mlp"),
    "all three of Liger's kernels": lambda: _liger("all"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (the bench's prompts)")
    parser.add_argument("--batch", type=int, default=2048, help="engine batch (rows of a decode step)")
    parser.add_argument("--questions", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--leave-out", action="store_true", help="also time the engine without each part of a layer")
    parser.add_argument("--replace", action="store_true", help="also time the engine with library kernels in place of "
                        "parts of a layer")
    args = parser.parse_args()

    square = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    print(f"# {torch.cuda.get_device_name()}; bf16 8192³ matmul {2 * 8192 ** 3 / seconds(lambda: square @ square) / 1e12:.0f} "
          "TFLOP/s")
    del square
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    prompts_module.SYSTEM_PROMPT = bench.LLAMA31_SYSTEM_PREAMBLE + prompts_module.SYSTEM_PROMPT
    jobs = bench.build_jobs(tokenizer, args.questions, 10, True)
    suffix = statistics.mean(len(j.suffix) for j in jobs)
    print(f"prompts: {statistics.mean(len(j.prefix) for j in jobs):.0f} shared prefix tokens, "
          f"{suffix:.1f} suffix tokens on average")

    print("\n| matmuls of | rows | layers (ms) | TFLOP/s | output layer (ms) |\n|---|---|---|---|---|")
    floor = {}
    for rows, what in ((args.batch, "a decode step"), (PREFILL_TOKENS, "a prefill slice")):
        for name, shapes in SHAPES.items():
            layer = sum(linear_seconds(rows, n, k) for n, k in shapes.values())
            flops = 2 * rows * sum(n * k for n, k in shapes.values())
            head = linear_seconds(rows, VOCAB, WIDTH)
            floor[(what, name)] = LAYERS * layer
            print(f"| {what}, {name} | {rows} | {LAYERS * layer * 1e3:.1f} | {flops / layer / 1e12:.0f} | "
                  f"{head * 1e3:.2f} |")
    decode = (args.new_tokens - 1) * (floor[("a decode step", "separate")] + linear_seconds(args.batch, VOCAB, WIDTH))
    prefill = args.batch * suffix / PREFILL_TOKENS * floor[("a prefill slice", "separate")]
    prefill += linear_seconds(args.batch, VOCAB, WIDTH)  # the first new token's logits
    floor_rate = args.batch / (decode + prefill)

    model = bench.synthetic_model("llama8b", "cuda")
    decoding = Decoding(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    bench.run_engine(model, tokenizer, jobs[:64], args.batch, decoding, "cuda")
    timed = jobs[: args.batch * 4]
    took, answers = bench.run_engine(model, tokenizer, timed, args.batch, decoding, "cuda")
    print(f"\n| per batch of {args.batch} prompts × {args.new_tokens} tokens | seconds | prompts/s |\n|---|---|---|")
    print(f"| matmuls only (prefill {prefill:.2f} s + decode {decode:.2f} s) | {prefill + decode:.2f} | {floor_rate:,.0f} |")
    print(f"| the engine ({len(timed)} prompts) | {args.batch * took / len(timed):.2f} | {len(timed) / took:,.0f} "
          f"({len(timed) / took / floor_rate:.0%} of the floor) |")
    for wanted, title, patches in ((args.leave_out, "without (answers wrong, time only)", LEAVE_OUT),
                                   (args.replace, "with", REPLACE)):
        if not wanted:
            continue
        print(f"\n| the engine {title} | seconds per batch | saves | answers as the engine's |\n|---|---|---|---|")
        for part, patch in patches.items():
            with patch():
                bench.run_engine(model, tokenizer, jobs[:64], args.batch, decoding, "cuda")
                patched, patched_answers = bench.run_engine(model, tokenizer, timed, args.batch, decoding, "cuda")
            same = sum(a == b for a, b in zip(answers, patched_answers))
            print(f"| {part} | {args.batch * patched / len(timed):.2f} | "
                  f"{args.batch * (took - patched) / len(timed):.2f} s ({1 - patched / took:.0%}) | "
                  f"{same} of {len(timed)} |")
    if args.profile:
        bench.profile_engine(model, tokenizer, timed, args.batch, decoding, "cuda")


if __name__ == "__main__":
    main()

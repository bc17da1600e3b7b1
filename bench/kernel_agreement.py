"""Greedy answers with Liger-Kernel's Triton kernels (RMS norm, rotary embeddings, SwiGLU) vs transformers' eager
code, on models whose answers depend on the question, next to the engine's own agreement with ``model.generate``.

Each Llama part is swapped alone (``gemm_floor``'s patches) and all of them together; ``--architectures`` adds the
other embedded model's architecture (Gemma 3) through the kernel set a user's load patches in
(``knowpack.kernels``).

A random model at the usual weight scale has near-flat logits, where any change of rounding flips answers, so the
weights are rescaled (as ``probe_throughput.check_exact_fp32`` does). In float32 the kernels compute what the eager
code computes to within float32 rounding, so answers must agree there; in bf16 they round at other places, and
the question is whether that moves answers more than the engine's own matmul shapes already do.

    PYTHONPATH=src:bench python bench/kernel_agreement.py --tokenizer TOKENIZER_DIR
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

import gemm_floor
import probe_throughput as bench
from knowpack.kernels import apply_kernels, eager_code
from knowpack.probe.backends import Decoding
from knowpack.probe.engine import PrefixEngine

MODELS = {  # name → (config, gain of o_proj/down_proj)
    "8B width, 4 layers": (dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=4,
                                num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0), 4.0),
    "SmolLM2-135M shape": (bench.SHAPES["smollm2"], 1.5),
}


GEMMA3_270M = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                   num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512)


def peaked_model(config: dict, gain: float, dtype: torch.dtype, family: str = "llama"):
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM)}[family]
    config = config_class(**{**config, "tie_word_embeddings": False})
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = model_class(config).to(dtype).eval()
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.ndim == 2:
                scale = gain if ("o_proj" in name or "down_proj" in name) else 1.0
                weight.normal_(0, 1.0 if "embed" in name else scale / weight.shape[1] ** 0.5)
    return model


def engine_answers(model, tokenizer, jobs) -> list[tuple[int, ...]]:
    answers: list[tuple[int, ...]] = [()] * len(jobs)
    engine = PrefixEngine(model, tokenizer, Decoding(max_new_tokens=16), batch_size=1024)
    for indices, generations in engine.generate(jobs):
        for i, gens in zip(indices, generations):
            answers[i] = tuple(gens[0].tokens)
    return answers


def generate_answers(model, jobs, answers_like) -> list[tuple[int, ...]]:
    """``model.generate`` on each full prompt alone (no padding), cut to the engine's answer length."""
    out = []
    for job, like in zip(jobs, answers_like):
        ids = torch.tensor([job.prefix + job.suffix], device="cuda")
        with torch.inference_mode():
            ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                                 pad_token_id=0)[0, ids.shape[1]:].tolist()
        out.append(tuple(ref[: len(like)]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--reference", type=int, default=128, help="prompts also answered by model.generate")
    parser.add_argument("--architectures", action="store_true", help="only Gemma 3 (the 270M shape), through "
                        "knowpack.kernels: the engine with the liger set vs with eager code")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    jobs = bench.build_jobs(tokenizer, args.questions, 4, True)
    if args.architectures:
        print(f"| model | dtype | engine vs generate ({args.reference} prompts) | Liger set vs eager ({len(jobs)}) |")
        print("|---|---|---|---|")
        for dtype in (torch.float32, torch.bfloat16):
            model = peaked_model(GEMMA3_270M, 1.5, dtype, "gemma3")
            eager = engine_answers(model, tokenizer, jobs)
            reference = generate_answers(model, jobs[: args.reference], eager)
            apply_kernels(model, "liger")
            fused = engine_answers(model, tokenizer, jobs)
            with eager_code(model):
                undone = engine_answers(model, tokenizer, jobs)
            print(f"| Gemma-3-270M shape | {str(dtype).removeprefix('torch.')} | "
                  f"{sum(a == b for a, b in zip(eager, reference))} | {sum(a == b for a, b in zip(eager, fused))} "
                  f"(eager_code again: {sum(a == b for a, b in zip(eager, undone))}) |", flush=True)
            del model
            torch.cuda.empty_cache()
        return
    parts = {"norm": "RMS norm", "rotary": "rotary", "mlp": "SwiGLU", "all": "all three"}
    print(f"| model | dtype | engine vs generate ({args.reference} prompts) | "
          + " | ".join(f"Liger {p} vs eager ({len(jobs)})" for p in parts.values()) + " |")
    print("|---|---|---|" + "---|" * len(parts))
    for name, (config, gain) in MODELS.items():
        for dtype in (torch.float32, torch.bfloat16):
            model = peaked_model(config, gain, dtype)
            eager = engine_answers(model, tokenizer, jobs)
            reference = generate_answers(model, jobs[: args.reference], eager)
            cells = [f"{sum(a == b for a, b in zip(eager, reference))}"]
            for part in parts:
                with gemm_floor._liger(part):
                    got = engine_answers(model, tokenizer, jobs)
                cells.append(f"{sum(a == b for a, b in zip(eager, got))}")
            print(f"| {name} | {str(dtype).removeprefix('torch.')} | " + " | ".join(cells) + " |", flush=True)
            del model
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

"""Probing throughput: knowpack's prefix-sharing engine against the study's approach, in the same run.

The study's approach: HF ``model.generate`` on full few-shot prompts, left-padded, greedy, batch 128 (GPU) /
32 (CPU). Ours: ``knowpack.probe.engine.PrefixEngine`` on the same prompts. Both include turning tokens into
text. Prints prompts/s per variant, the speed-up over the study's setting, and how often the two produced the
same greedy answer.

  CPU, embedded model (200 questions × 10 prompts, answers end at their natural end):
    nice -n 10 python bench/probe_throughput.py --device cpu
  GPU, Llama-3.1-8B-shaped model with random bf16 weights, 16 forced new tokens:
    python bench/probe_throughput.py --device cuda --synthetic-llama8b --force-new-tokens 16
  The same prompts under N random LoRA adapters in one pass (evaluate's probe of every epoch), against the base
  model in the same run, each module's adapters by row group and all at once behind a mask:
    python bench/probe_throughput.py --device cuda --adapters 11 --adapter-rank 16 --baseline-attn ""
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from knowpack.kernels import apply_kernels, eager_code, resolve_kernels
from knowpack.probe.backends import Decoding, Job
from knowpack.probe.engine import PrefixEngine
from knowpack.probe.prompts import PromptSet, PromptSettings

COUNTRIES = [
    "France", "Germany", "Italy", "Spain", "Portugal", "Poland", "Sweden", "Norway", "Finland", "Denmark",
    "Greece", "Turkey", "Egypt", "Morocco", "Nigeria", "Kenya", "Ethiopia", "Ghana", "Senegal", "Tanzania",
    "India", "China", "Japan", "Vietnam", "Thailand", "Indonesia", "Philippines", "Pakistan", "Iran", "Iraq",
    "Brazil", "Argentina", "Chile", "Peru", "Colombia", "Venezuela", "Mexico", "Cuba", "Canada", "Australia",
    "New Zealand", "Ireland", "Austria", "Hungary", "Romania", "Bulgaria", "Ukraine", "Belgium", "Nepal", "Mongolia",
]
TEMPLATES = [
    "What is the capital city of {}?",
    "What is the official currency of {}?",
    "Which language is the most widely spoken official language of {}?",
    "On which continent is the country of {} located?",
]
# Llama-3.1's chat template puts this preamble into every system turn; the synthetic-8B prompts carry it so that
# their length matches the study's prompts (150-210 tokens).
LLAMA31_SYSTEM_PREAMBLE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"


def questions(n: int) -> list[str]:
    out = [t.format(c) for t in TEMPLATES for c in COUNTRIES]
    return (out * (n // len(out) + 1))[:n]


SHAPES = {  # models with random bf16 weights: throughput does not depend on the weight values
    "llama8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                    rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=128000,
                    eos_token_id=128001),
    "smollm2": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}


def synthetic_model(shape: str, device: str) -> LlamaForCausalLM:
    """Llama-3.1-8B's or SmolLM2-135M's shape (``SHAPES``) with random bf16 weights."""
    config = LlamaConfig(**SHAPES[shape])
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def check_exact_fp32(tokenizer, device: str, n_questions: int = 64) -> str:
    """Greedy answers of the engine vs ``model.generate`` on a 4-layer model of Llama-3.1-8B's width in float32,
    with weights large enough that answers depend on the question (random weights at the usual scale make a
    model that repeats one token)."""
    config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=4,
                         num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0, tie_word_embeddings=False,
                         bos_token_id=128000, eos_token_id=128001)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).eval()
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if weight.ndim == 2:
                    gain = 4.0 if ("o_proj" in name or "down_proj" in name) else 1.0
                    weight.normal_(0, 1.0 if "embed" in name else gain / weight.shape[1] ** 0.5)
    jobs = build_jobs(tokenizer, n_questions, 2, tokenizer.chat_template is not None)
    decoding = Decoding(max_new_tokens=16)
    engine = PrefixEngine(model, tokenizer, decoding, batch_size=64)
    same = 0
    for indices, generations in engine.generate(jobs):
        for i, gens in zip(indices, generations):
            ids = torch.tensor([jobs[i].prefix + jobs[i].suffix], device=device)
            with torch.inference_mode():
                ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                                     pad_token_id=0)[0, ids.shape[1]:].tolist()
            same += list(gens[0].tokens) == ref[: len(gens[0].tokens)]
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return f"exactness check (float32, 4 layers of 8B width): {same}/{len(jobs)} greedy answers equal model.generate's"


def build_jobs(tokenizer, n_questions: int, n_prompts: int, chat: bool) -> list[Job]:
    return build_jobs_for(tokenizer, questions(n_questions), n_prompts, chat)


def build_jobs_for(tokenizer, texts: list[str], n_prompts: int, chat: bool) -> list[Job]:
    """(prefix, suffix) jobs of the questions ``texts`` under ``n_prompts`` four-shot prompt sets."""
    prompts = PromptSet(tokenizer, PromptSettings(n_prompts=n_prompts, chat=chat), texts)
    return [Job(e.prefix, e.suffix) for p in range(n_prompts) for e in prompts.encode(p, range(len(texts)))]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_baseline(model, tokenizer, jobs, batch_size, decoding, attn, device) -> tuple[float, list[str]]:
    """The study's approach: full prompts, left padding, ``model.generate`` greedy."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = attn
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    texts = []
    try:
        sync(device)
        start = time.perf_counter()
        for k in range(0, len(jobs), batch_size):
            prompts = [list(j.prefix + j.suffix) for j in jobs[k:k + batch_size]]
            width = max(map(len, prompts))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=decoding.max_new_tokens,
                    min_new_tokens=decoding.min_new_tokens or None, pad_token_id=pad,
                )
            texts += tokenizer.batch_decode(out[:, width:].tolist(), skip_special_tokens=True)
        sync(device)
        return time.perf_counter() - start, texts
    finally:
        config._attn_implementation = previous


def run_engine(model, tokenizer, jobs, batch_size, decoding, device, graphs=None) -> tuple[float, list[str]]:
    """The engine on the same prompts; its one-time set-up (stop-token tables) is left out of the timing."""
    engine = PrefixEngine(model, tokenizer, decoding, batch_size=batch_size, graphs=graphs)
    texts: list[str] = [""] * len(jobs)
    sync(device)
    start = time.perf_counter()
    for indices, generations in engine.generate(jobs):
        decoded = tokenizer.batch_decode([g[0].tokens for g in generations], skip_special_tokens=True)
        for i, text in zip(indices, decoded):
            texts[i] = text
    sync(device)
    return time.perf_counter() - start, texts


def profile_engine(model, tokenizer, jobs, batch_size, decoding, device) -> None:
    """Where one engine batch's time goes: the top kernels by GPU time (CPU time on a CPU), and wall time."""
    from torch.profiler import ProfilerActivity, profile

    jobs = jobs[:batch_size]
    run_engine(model, tokenizer, jobs, batch_size, decoding, device)  # prefix cached, kernels warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        seconds, _ = run_engine(model, tokenizer, jobs, batch_size, decoding, device)
    print(f"\nprofile: one batch of {len(jobs)} prompts, wall {seconds:.3f} s ({len(jobs) / seconds:.0f} prompts/s)")
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=22, max_name_column_width=70))


def random_adapters(model, count: int, rank: int, folder: Path) -> dict[str, Path]:
    """``count`` LoRA adapters of the MLP (the study's targets) with random weights, saved as peft saves them."""
    from peft import LoraConfig, get_peft_model

    adapters = {}
    for index in range(count):
        torch.manual_seed(index)
        config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["gate_proj", "up_proj", "down_proj"],
                            init_lora_weights=False)
        peft_model = get_peft_model(model, config)
        adapters[f"a{index}"] = folder / f"a{index}"
        peft_model.save_pretrained(adapters[f"a{index}"])
        peft_model.unload()
    return adapters


def run_adapters(model, tokenizer, jobs, adapters: dict[str, Path], batch_size, decoding, device, masked: bool,
                 graphs=None) -> float:
    """Every job under every adapter in one pass (plain LoRA stacked by ``probe.adapters``), as evaluate's probe."""
    from knowpack.probe import adapters as adapters_module

    previous = getattr(adapters_module, "MASKED_DEVICES", set())  # a knowpack before the masked path has none
    adapters_module.MASKED_DEVICES = {device} if masked else set()
    try:
        with adapters_module.StackedAdapters(model, adapters).attached() as stacked:
            engine = PrefixEngine(model, tokenizer, decoding, batch_size=batch_size, router=stacked, graphs=graphs)
            routed = [Job(j.prefix, j.suffix, name) for name in adapters for j in jobs]
            sync(device)
            start = time.perf_counter()
            for _, generations in engine.generate(routed):
                tokenizer.batch_decode([g[0].tokens for g in generations], skip_special_tokens=True)
            sync(device)
            return time.perf_counter() - start
    finally:
        adapters_module.MASKED_DEVICES = previous


def first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="smollm2-135m", help="model spec (ignored with --synthetic)")
    parser.add_argument("--synthetic", choices=sorted(SHAPES), help="a model of this shape with random weights")
    parser.add_argument("--synthetic-llama8b", action="store_const", const="llama8b", dest="synthetic",
                        help="the same as --synthetic llama8b")
    parser.add_argument("--tokenizer", help="tokenizer folder for the synthetic model (default: the embedded model's)")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--force-new-tokens", type=int, default=0, help="generate exactly N tokens (no early stop)")
    parser.add_argument("--baseline-batch", type=int, help="default: 128 on GPU, 32 on CPU")
    parser.add_argument("--baseline-prompts", type=int, default=0, help="time the baseline on the first N prompts "
                        "(spread over all prompt sets); 0 = all")
    parser.add_argument("--baseline-attn", default="eager,sdpa", help="attention implementations for the baseline")
    parser.add_argument("--engine-batch", default="", help="comma-separated engine batch sizes (default 64 CPU, 512 GPU)")
    parser.add_argument("--repeat", type=int, default=1, help="timed repetitions per variant (median reported)")
    parser.add_argument("--check-fp32", action="store_true", help="first compare greedy answers with generate's "
                        "on a float32 model of the synthetic model's width")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores; 1 is faster on a busy machine)")
    parser.add_argument("--profile", action="store_true", help="also profile one batch at the largest engine batch")
    parser.add_argument("--adapters", type=int, default=0, help="also time the prompts under N random LoRA adapters "
                        "in one pass (each adapter answers every prompt) against the base model")
    parser.add_argument("--adapter-rank", type=int, default=16)
    parser.add_argument("--graphs", choices=["default", "both"], default="default",
                        help="both: time the engine with decode steps captured as CUDA graphs and without")
    parser.add_argument("--kernels", choices=["auto", "eager", "liger", "both"], default="auto",
                        help="the engine's kernel set (knowpack.kernels; the study's side always runs eager); both: "
                        "time the engine with eager and with Liger's kernels")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    device = args.device
    wanted_kernels = "liger" if args.kernels == "both" else args.kernels
    if device == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.synthetic:
        from knowpack.models import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or resolve_model("smollm2-135m")[0])
        model = synthetic_model(args.synthetic, device)
        kernels = resolve_kernels(wanted_kernels, model.config, model.device)
        apply_kernels(model, kernels)
        name = f"{args.synthetic}-shaped, random bf16 weights"
    else:
        from knowpack.models import load_model

        loaded = load_model(args.model, device=device, kernels=wanted_kernels)
        tokenizer, model, kernels = loaded.tokenizer, loaded.model, loaded.kernels
        if device == "cpu":  # load_model sets all cores
            torch.set_num_threads(args.threads or os.cpu_count() or 1)
        name = f"{args.model} ({next(model.parameters()).dtype})"
    chat = tokenizer.chat_template is not None
    if args.synthetic == "llama8b":
        import knowpack.probe.prompts as prompts_module

        prompts_module.SYSTEM_PROMPT = LLAMA31_SYSTEM_PREAMBLE + prompts_module.SYSTEM_PROMPT
    if args.check_fp32:
        try:
            with eager_code(model):  # a model built now gets transformers' classes, not the kernels' patches
                print(check_exact_fp32(tokenizer, device))
        except Exception as err:  # the throughput numbers below are still worth having
            print(f"exactness check failed: {type(err).__name__}: {err}")
    kernel_sets = ["eager", kernels] if args.kernels == "both" else [kernels]
    jobs = build_jobs(tokenizer, args.questions, args.prompts, chat)
    forced = args.force_new_tokens
    decoding = Decoding(max_new_tokens=forced or args.max_new_tokens, min_new_tokens=forced)
    lengths = [len(j.prefix) + len(j.suffix) for j in jobs]
    print(f"model: {name}; device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; "
          f"torch {torch.__version__}; the engine's kernels: {', '.join(kernel_sets)}")
    print(f"{len(jobs)} prompts ({args.questions} questions × {args.prompts} prompt sets), "
          f"{min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}, shared prefix "
          f"{statistics.mean(len(j.prefix) for j in jobs):.0f}); "
          f"{'exactly ' + str(forced) if forced else 'up to ' + str(args.max_new_tokens)} new tokens, greedy")

    baseline_batch = args.baseline_batch or (128 if device == "cuda" else 32)
    engine_batches = [int(b) for b in args.engine_batch.split(",") if b] or [512 if device == "cuda" else 64]
    subset = jobs
    if args.baseline_prompts:
        per_set = max(1, args.baseline_prompts // args.prompts)
        subset = [jobs[p * args.questions + q] for p in range(args.prompts) for q in range(min(per_set, args.questions))]
    # warm-up (kernels, allocator, tokenizer tables) on a small slice, untimed
    with eager_code(model):
        run_baseline(model, tokenizer, subset[: min(8, len(subset))], baseline_batch, decoding, "sdpa", device)
    run_engine(model, tokenizer, jobs[: min(64, len(jobs))], engine_batches[0], decoding, device)

    if args.profile:
        profile_engine(model, tokenizer, jobs, engine_batches[-1], decoding, device)
    rows = []
    reference = None
    for attn in [a for a in args.baseline_attn.split(",") if a]:
        times = []
        for _ in range(args.repeat):
            with eager_code(model):  # the study ran transformers' own code
                seconds, texts = run_baseline(model, tokenizer, subset, baseline_batch, decoding, attn, device)
            times.append(seconds)
        reference = reference or texts
        rows.append({"approach": f"study: generate, full prompts, {attn}", "batch": baseline_batch,
                     "prompts": len(subset), "seconds": statistics.median(times),
                     "prompts_per_s": len(subset) / statistics.median(times), "agree": None})
    baseline_answers = {id(j): first_line(t) for j, t in zip(subset, reference or [])}
    graph_modes = {"default": [None], "both": [False, True]}[args.graphs]
    label = {None: "", False: ", no graphs", True: ", CUDA graphs"}
    for kernel_set, batch, graphs in [(k, b, g) for k in kernel_sets for b in engine_batches for g in graph_modes]:
        times = []
        for _ in range(args.repeat):
            with eager_code(model) if kernel_set == "eager" else nullcontext():
                if kernel_set != kernel_sets[0]:
                    run_engine(model, tokenizer, jobs[:64], batch, decoding, device, graphs)  # its kernels warm
                seconds, texts = run_engine(model, tokenizer, jobs, batch, decoding, device, graphs)
            times.append(seconds)
        # with forced lengths generate suppresses end-of-sequence (min_new_tokens) and the engine does not, so
        # the texts differ after the answer by design; compare only answers that end naturally
        same = [] if forced else [first_line(t) == baseline_answers[id(j)] for j, t in zip(jobs, texts)
                                  if id(j) in baseline_answers]
        rows.append({"approach": f"knowpack: shared-prefix engine, {kernel_set} kernels{label[graphs]}", "batch": batch,
                     "prompts": len(jobs),
                     "seconds": statistics.median(times), "prompts_per_s": len(jobs) / statistics.median(times),
                     "agree": sum(same) / len(same) if same else None})
    if args.adapters:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            adapters = random_adapters(model, args.adapters, args.adapter_rank, Path(folder))
            for masked, graphs in [(m, g) for m in (False, True) for g in graph_modes]:
                run_adapters(model, tokenizer, jobs[:64], adapters, engine_batches[-1], decoding, device, masked,
                             graphs)
                seconds = statistics.median(
                    run_adapters(model, tokenizer, jobs, adapters, engine_batches[-1], decoding, device, masked,
                                 graphs) for _ in range(args.repeat))
                prompts = len(jobs) * args.adapters
                rows.append({"approach": f"knowpack: {args.adapters} adapters of rank {args.adapter_rank}, "
                             f"{'masked' if masked else 'by row group'}{label[graphs]}", "batch": engine_batches[-1],
                             "prompts": prompts, "seconds": seconds, "prompts_per_s": prompts / seconds,
                             "agree": None})
    study = rows[0]["prompts_per_s"] if rows else None
    print()
    against = "study" if rows and rows[0]["approach"].startswith("study") else "base engine"
    print(f"| approach | batch | prompts | seconds | prompts/s | × {against} | same greedy answer as study |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        agree = "" if row["agree"] is None else f"{100 * row['agree']:.1f}%"
        print(f"| {row['approach']} | {row['batch']} | {row['prompts']} | {row['seconds']:.1f} | "
              f"{row['prompts_per_s']:.1f} | {row['prompts_per_s'] / study:.1f}× | {agree} |")
    if args.json:
        args.json.write_text(json.dumps({"model": name, "device": device, "rows": rows, "args": vars(args)},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()

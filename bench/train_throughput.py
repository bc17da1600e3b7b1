"""LoRA training throughput: knowpack's loop against the study's configuration, in one process on one model.

The study's configuration: HF ``Trainer``, batch 8, each batch padded to its longest row, eager attention, loss on
every real token, LoRA rank 1 / alpha 2 / dropout 0.1 on gate/up/down, AdamW lr 1e-3 (bf16 autocast on GPU).
knowpack: ``knowpack.train.loop.TrainingLoop`` (the code ``knowpack train`` runs) with the same adapter, rows packed
without padding, sdpa, logits only at the answer tokens, fused AdamW on GPU, at several batch sizes.

Rows are study-like: 40–70 tokens each (system + question + answer in a chat template), the answer the last 3–10
tokens; token ids are random (throughput does not depend on them), so no tokenizer is needed. tokens/s counts real
(non-pad) tokens for both. Each variant runs ``--warmup`` steps, then ``--steps`` timed steps.

  CPU, embedded model:  python bench/train_throughput.py
  GPU, Llama-3.1-8B shape with random bf16 weights (no download), and runs of batch 8 trained together:
                        python bench/train_throughput.py --device cuda --synthetic-llama8b --batches 8,128 --together 8,16,32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from knowpack.kernels import apply_kernels, eager_code, resolve_kernels  # noqa: E402
from knowpack.train.loop import TrainingLoop  # noqa: E402
from knowpack.train.methods import METHODS  # noqa: E402
from knowpack.train.stage import TrainConfig  # noqa: E402
from knowpack.train import packing  # noqa: E402

STUDY_BATCH = 8


def study_like_rows(count: int, vocab: int, seed: int) -> list[tuple[list[int], int]]:
    """(token ids, prompt length): 40–70 tokens, the last 3–10 of them the answer."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        length, answer = int(rng.integers(40, 71)), int(rng.integers(3, 11))
        rows.append((rng.integers(100, vocab, size=length).tolist(), length - answer))
    return rows


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def knowpack_variant(model, rows, batch: int, args, loss_on: str = "answer", cast_inputs: bool = False,
                     pass_tokens: int | None = None, lane_tokens: int = 512, varlen: bool = True) -> dict:
    """Tokens/s of knowpack's training loop at ``batch`` rows per step (timed steps only)."""
    device = next(model.parameters()).device
    count = batch * (args.warmup + args.steps)
    config = TrainConfig(labels=Path("-"), out=Path("-"), rank=1, alpha=2.0, dropout=0.1, targets="mlp", lr=1e-3,
                         batch_size=batch, epochs=1, loss_on=loss_on, seed=0,
                         max_tokens_per_pass=pass_tokens, lane_tokens=lane_tokens)
    with METHODS[config.method].attached(model, config) as peft_model, nullcontext() if varlen else patched(packing, "varlen_attn", None):
        loop = TrainingLoop(peft_model, model, rows[:count], config)
        if cast_inputs:  # ablation: peft's default of copying each adapter input to float32
            for module in peft_model.modules():
                if hasattr(module, "cast_input_dtype_enabled"):
                    module.cast_input_dtype_enabled = True
        reset_peak(device)
        log = loop.run_epoch(1)[args.warmup:]
        peak = peak_gib(device)
        del loop
    tokens, seconds = sum(r["tokens"] for r in log), sum(r["seconds"] for r in log)
    loop_varlen = varlen and packing.uses_varlen(model) and tokens / len(log) > packing.VARLEN_MIN_TOKENS
    name = (f"knowpack packed, batch {batch}, loss on {loss_on}" + (", fp32 adapter inputs" if cast_inputs else "")
            + (f", passes of ≤{pass_tokens} tokens" if pass_tokens else "")
            + ("" if loop_varlen else f", lanes of {lane_tokens} tokens"))
    return {"config": name, "batch": batch, "tokens_per_s": tokens / seconds, "step_s": seconds / len(log),
            "tokens_per_step": tokens / len(log), "padding_share": 0.0 if loop_varlen else None, "peak_gib": peak,
            "loss_first_last": [log[0]["loss"], log[-1]["loss"]]}


def grouped_variant(model, rows, runs: int, args, batch: int = STUDY_BATCH) -> dict:
    """Tokens/s of ``runs`` runs trained together (``knowpack.train.grouped``, what ``knowpack sweep`` does on a
    GPU), each stepping on its own ``batch`` rows with its own optimizer; timed steps only."""
    from knowpack.train.grouped import GroupedLoop, new_member

    device = next(model.parameters()).device
    count = batch * (args.warmup + args.steps)
    members = []
    for run in range(runs):
        config = TrainConfig(labels=Path("-"), out=Path(f"run{run}"), rank=1, alpha=2.0, dropout=0.1, targets="mlp",
                             lr=1e-3, batch_size=batch, epochs=1, seed=run)
        members.append(new_member(model, config, rows[run * count:(run + 1) * count]))
    loop = GroupedLoop(model, members)
    reset_peak(device)
    with loop.attached():
        logs = loop.run_epoch(1, members)
    peak = peak_gib(device)
    timed = [row for member in members for row in logs[member][args.warmup:]]
    tokens, seconds = sum(r["tokens"] for r in timed), sum(r["seconds"] for r in timed)
    return {"config": f"knowpack, {runs} runs together, batch {batch} each", "batch": batch * runs,
            "tokens_per_s": tokens / seconds, "step_s": seconds / args.steps, "tokens_per_step": tokens / args.steps,
            "padding_share": 0.0 if loop.varlen else None, "peak_gib": peak}


def study_variant(model, rows, args) -> dict:
    """Tokens/s of the study's setup: HF Trainer, batch 8, padded batches, eager attention."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device = next(model.parameters()).device
    pad_id = 0
    batches_real, batches_padded, step_times = [], [], []

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return STUDY_BATCH * (args.warmup + args.steps)

        def __getitem__(self, index):
            return rows[index][0]

    def collate(items):
        width = max(len(ids) for ids in items)
        input_ids = torch.full((len(items), width), pad_id)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        for i, ids in enumerate(items):  # right padding, as the study's tokenizer call did
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
        batches_real.append(int(attention.sum()))
        batches_padded.append(input_ids.numel())
        return {"input_ids": input_ids, "attention_mask": attention,
                "labels": input_ids.masked_fill(attention == 0, -100)}

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            sync(device)
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            sync(device)
            step_times.append(time.perf_counter() - self.started)

    model.set_attn_implementation("eager")
    config = TrainConfig(labels=Path("-"), out=Path("-"), rank=1, alpha=2.0, dropout=0.1, targets="mlp", seed=0)
    try:
        with METHODS[config.method].attached(model, config) as peft_model, tempfile.TemporaryDirectory() as tmp:
            training_args = TrainingArguments(
                output_dir=tmp, per_device_train_batch_size=STUDY_BATCH, max_steps=args.warmup + args.steps,
                learning_rate=1e-3, bf16=device.type == "cuda", use_cpu=device.type == "cpu", logging_strategy="no",
                save_strategy="no", report_to=[], dataloader_num_workers=0, disable_tqdm=True, seed=0,
                remove_unused_columns=False,
            )
            reset_peak(device)
            trainer = Trainer(model=peft_model, args=training_args, train_dataset=Rows(), data_collator=collate,
                              callbacks=[Clock()])
            trainer.train()
            peak = peak_gib(device)
            del trainer
    finally:
        model.set_attn_implementation("sdpa")
    timed = slice(args.warmup, args.warmup + args.steps)
    seconds, real, padded = sum(step_times[timed]), sum(batches_real[timed]), sum(batches_padded[timed])
    return {"config": "study: HF Trainer, batch 8, padded, eager", "batch": STUDY_BATCH,
            "tokens_per_s": real / seconds, "step_s": seconds / args.steps, "tokens_per_step": real / args.steps,
            "padding_share": 1 - real / padded, "peak_gib": peak}


def packing_check(model, rows) -> dict[str, float]:
    """Relative difference between the loss of 6 rows packed and the rows run one by one, per attention path
    (flash over variable-length rows where available; lanes of 64 tokens, so several padded lanes): proves the
    packing is exact with this transformers version (bf16 rounding only on GPU)."""
    device = next(model.parameters()).device
    paths = {"lanes of 64 tokens": False} | ({"flash, variable-length rows": True} if packing.uses_varlen(model) else {})
    out = {}
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        separate = sum(
            torch.nn.functional.cross_entropy(
                model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, :-1].float(),
                torch.tensor(ids[1:], device=device), reduction="sum")
            for ids, _ in rows[:6]
        )
        for name, varlen in paths.items():
            with patched(packing, "VARLEN_MIN_TOKENS", 0):
                batch = packing.pack(rows[:6], "all", device, 64, varlen)
                packed = torch.nn.functional.cross_entropy(packing.packed_logits(model, batch).float(), batch.labels,
                                                           reduction="sum")
            out[name] = abs(packed.item() - separate.item()) / abs(separate.item())
    return out


@contextmanager
def patched(owner, name: str, value):
    """Set ``owner.name`` to ``value`` for the block (benchmark ablations of module-level switches)."""
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def profile(model, rows, batch: int, args) -> None:
    """Where a knowpack step's time goes: the top GPU kernels, and GPU busy time against wall time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device = next(model.parameters()).device
    config = TrainConfig(labels=Path("-"), out=Path("-"), rank=1, alpha=2.0, dropout=0.1, targets="mlp",
                         batch_size=batch, epochs=2, seed=0, max_tokens_per_pass=args.pass_tokens[0] if args.pass_tokens else None)
    with METHODS[config.method].attached(model, config) as peft_model:
        loop = TrainingLoop(peft_model, model, rows[: batch * 3], config)
        loop.run_epoch(1)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            started = time.perf_counter()
            log = loop.run_epoch(2)
            wall = time.perf_counter() - started
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nprofile of 3 steps, batch {batch} (passes ≤ {config.max_tokens_per_pass}): wall {wall:.3f} s, "
          f"step times {[round(r['seconds'], 3) for r in log]}")
    print(prof.key_averages().table(sort_by=sort, row_limit=14, max_name_column_width=60))


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="smollm2-135m", help="model spec for knowpack.models.load_model")
    parser.add_argument("--synthetic-llama8b", action="store_true", help="Llama-3.1-8B shape, random bf16 weights")
    parser.add_argument("--batches", default="8,16,64", help="knowpack batch sizes (rows per step)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--ablations", action="store_true",
                        help="also at batch 64: loss on all tokens, and peft's float32 copies of adapter inputs (GPU)")
    parser.add_argument("--pass-tokens", default="", help="also try --max-tokens-per-pass values, e.g. 1024,2048")
    parser.add_argument("--profile", action="store_true", help="profile 3 steps at the largest batch")
    parser.add_argument("--lanes-ablation", action="store_true",
                        help="also run each batch with attention per lane (the CPU path) instead of flash over rows")
    parser.add_argument("--lane-tokens", default="512", help="lane lengths for --lanes-ablation, e.g. 256,512")
    parser.add_argument("--compile-experiment", choices=("layer", "mlp"),
                        help="afterwards: the two largest batches with decoder layers (or their MLPs) under torch.compile")
    parser.add_argument("--together", default="", help="also train N runs of batch 8 together, e.g. 8,16,32")
    parser.add_argument("--kernels", choices=["auto", "eager", "liger", "both"], default="auto",
                        help="knowpack's kernel set (knowpack.kernels; the study's Trainer always runs eager); both: "
                        "time knowpack's loop with eager and with Liger's kernels")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.together = [int(n) for n in args.together.split(",") if n]
    args.pass_tokens = [int(t) for t in args.pass_tokens.split(",") if t]
    args.lane_tokens = [int(t) for t in args.lane_tokens.split(",") if t]

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    wanted_kernels = "liger" if args.kernels == "both" else args.kernels
    if args.synthetic_llama8b:
        from probe_throughput import synthetic_model

        model, name = synthetic_model("llama8b", args.device), "synthetic Llama-3.1-8B shape (bf16, random weights)"
        kernels = resolve_kernels(wanted_kernels, model.config, model.device)
        apply_kernels(model, kernels)
    else:
        from knowpack.models import load_model

        loaded = load_model(args.model, device=args.device, kernels=wanted_kernels)
        model, name, kernels = loaded.model, args.model, loaded.kernels
    kernel_sets = ["eager", kernels] if args.kernels == "both" else [kernels]
    device = next(model.parameters()).device
    batches = [int(b) for b in args.batches.split(",")]
    most_rows = max(batches + [STUDY_BATCH * n for n in args.together] + [64])
    rows = study_like_rows(most_rows * (args.warmup + args.steps), model.config.vocab_size, 0)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {name} on {where}; dtype {next(model.parameters()).dtype}; torch {torch.__version__}; knowpack's "
          f"kernels: {', '.join(kernel_sets)}", flush=True)

    for path, difference in packing_check(model, rows).items():
        print(f"packing check ({path}): packed vs row-by-row loss differ by {difference:.2e} (relative)", flush=True)
    with eager_code(model):  # the study ran transformers' own code
        results = [study_variant(model, rows, args)]
    print(results[-1], flush=True)
    for kernel_set in kernel_sets:
        with eager_code(model) if kernel_set == "eager" else nullcontext():
            results += knowpack_variants(model, rows, batches, args, f", {kernel_set} kernels")
    if args.profile:
        profile(model, rows, max(batches), args)
    if args.ablations:  # at batch 64: the study's loss on every token; peft's float32 copies of adapter inputs
        variants = [{"loss_on": "all"}] + ([{"cast_inputs": True}] if device.type == "cuda" else [])
        for variant in variants:
            results.append(knowpack_variant(model, rows, 64, args, **variant))
            print(results[-1], flush=True)
    study = results[0]["tokens_per_s"]
    print(f"\n| configuration | rows/step | real tokens/step | padding | step (s) | tokens/s | × study |"
          + (" peak GiB |" if device.type == "cuda" else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if device.type == "cuda" else ""))
    for r in results:
        padding = "lane ends" if r["padding_share"] is None else f"{r['padding_share']:.0%}"
        line = (f"| {r['config']} | {r['batch']} | {r['tokens_per_step']:.0f} | {padding} | "
                f"{r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / study:.2f} |")
        print(line + (f" {r['peak_gib']:.1f} |" if device.type == "cuda" else ""))
    if args.json:
        args.json.write_text(json.dumps({"model": name, "device": where, "results": results}, indent=2))
    if args.compile_experiment:
        compile_experiment(model, rows, batches, args, study, args.compile_experiment)


def knowpack_variants(model, rows, batches, args, label: str) -> list[dict]:
    """knowpack's loop at each batch (and its ablations of lanes and pass sizes), then runs trained together."""
    results = []
    for batch in batches:
        variants = [{}] + [{"lane_tokens": lane, "varlen": False} for lane in args.lane_tokens if args.lanes_ablation]
        variants += [{"pass_tokens": t} for t in args.pass_tokens if t < batch * 55]
        for variant in variants:
            try:
                results.append(knowpack_variant(model, rows, batch, args, **variant))
            except torch.OutOfMemoryError:
                print(f"batch {batch}, {variant}: out of memory", flush=True)
                continue
            results[-1]["config"] += label
            print(results[-1], flush=True)
    for runs in args.together:
        try:
            results.append(grouped_variant(model, rows, runs, args))
        except torch.OutOfMemoryError:
            print(f"{runs} runs together: out of memory", flush=True)
            continue
        results[-1]["config"] += label
        print(results[-1], flush=True)
    return results


def compile_experiment(model, rows, batches, args, study: float, target: str) -> None:
    """Not part of knowpack's loop (yet): the same loop with each decoder layer (or its MLP) under
    torch.compile(dynamic=True), to see how much of the step is dispatch and unfused elementwise work. Warm-up steps
    include the compilation."""
    layers = [m if target == "layer" else m.mlp for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    started = time.perf_counter()
    for layer in layers:
        layer.forward = torch.compile(layer.forward, dynamic=True)
    try:
        for batch in batches[-2:]:
            result = knowpack_variant(model, rows, batch, argparse.Namespace(warmup=args.warmup + 2, steps=args.steps),
                                      lane_tokens=args.lane_tokens[0])
            print(f"| {result['config']}, {'decoder layers' if target == 'layer' else 'MLPs'} compiled | {batch} | {result['tokens_per_step']:.0f} | 0% | "
                  f"{result['step_s']:.3f} | {result['tokens_per_s']:,.0f} | {result['tokens_per_s'] / study:.2f} | "
                  f"{result['peak_gib'] or 0:.1f} |  (elapsed with compilation {time.perf_counter() - started:.0f} s)",
                  flush=True)
    except Exception as err:  # noqa: BLE001 - an experiment: report and stop
        print(f"compile experiment failed: {type(err).__name__}: {str(err)[:300]}", flush=True)
    finally:
        for layer in layers:
            del layer.forward


if __name__ == "__main__":
    main()

"""The study's grid, costed end to end: knowpack's real stages against the study's approach, in one call.

knowpack: the stage functions the CLI calls, with the study protocol — ``label`` on the base model, a group of runs
trained together (what ``knowpack sweep`` does on a GPU), one run trained alone, and ``evaluate`` of one run
(reliability at every epoch with all epochs' adapters in one pass, then all questions relabelled with the last
adapter). The study's approach on the same model and prompts: ``model.generate`` on full few-shot prompts, batch
128, eager attention, on the base model and on the PeftModel; the HF ``Trainer`` at batch 8 on the same rows.
knowpack's side runs with the kernel set a user's load gets (``--kernels``, default auto: Liger's on a GPU where
installed), the study's side with transformers' own code on the same loaded model (``knowpack.kernels.eager_code``).

The measured rates are then applied to the work of the study's grid (``examples/study_grid.yaml``: 6 sizes × 5
mixtures × 3 seeds, 10 epochs, 21,036 questions × 10 prompts): labelling once, per run the packed facts under 10
epochs and all questions after training, and training n·(1+k) rows for 10 epochs. MMLU/TruthfulQA (lm-eval, the
same tool on both sides) and the study's model reload per run are left out of both columns.

  GPU, Llama-3.1-8B shape with random bf16 weights (SmolLM2's tokenizer, prompts lengthened by Llama-3.1's system
  preamble to the study's 150-210 tokens):
    python bench/grid_cost.py --synthetic-llama8b --questions QUESTIONS.parquet --tokenizer DIR
  CPU smoke run of the same path on the tiny model:
    python bench/grid_cost.py --model DIR --questions QUESTIONS.parquet --sample 32 --group 2 --unknown 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

from knowpack.evaluate import stage as evaluate_stage  # noqa: E402
from knowpack.kernels import apply_kernels, eager_code, resolve_kernels  # noqa: E402
from knowpack.models import LoadedModel, load_model  # noqa: E402
from knowpack.probe import stage as label_stage  # noqa: E402
from knowpack.protocols import STUDY_SEEDS  # noqa: E402
from knowpack.train import stage as train_stage  # noqa: E402
from knowpack.train.grouped import train_group  # noqa: E402
from knowpack.train.stage import parse_extra  # noqa: E402

STUDY_QUESTIONS = 21_036
STUDY_PROMPTS = 10


def synthetic_loaded(tokenizer_dir: str, kernels: str) -> LoadedModel:
    """The Llama-3.1-8B shape with random bf16 weights as a LoadedModel, prompts carrying Llama-3.1's preamble, with
    the kernel set ``kernels`` patched in as ``load_model`` does."""
    from probe_throughput import LLAMA31_SYSTEM_PREAMBLE, synthetic_model
    from transformers import AutoTokenizer

    import knowpack.probe.prompts as prompts

    prompts.SYSTEM_PROMPT = LLAMA31_SYSTEM_PREAMBLE + prompts.SYSTEM_PROMPT
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = synthetic_model("llama8b", "cuda")
    kernels = resolve_kernels(kernels, model.config, model.device)
    apply_kernels(model, kernels)
    return LoadedModel(model, tokenizer, "synthetic-llama3.1-8b", "synthetic:llama8b-seed0", chat=True, kernels=kernels)


def sample_questions(path: Path, n: int, out: Path) -> Path:
    """``n`` questions drawn with seed 0 (all relations and buckets, as in the full set)."""
    import numpy as np

    table = pq.read_table(path)
    rows = np.sort(np.random.default_rng(0).choice(table.num_rows, min(n, table.num_rows), replace=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.take(pa.array(rows)), out)
    return out


def timed(function, *args):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = function(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def prompts_of(folder: Path) -> int:
    return pq.read_metadata(folder / "responses.parquet").num_rows


def study_generate_rate(loaded: LoadedModel, questions: Path, n_prompts: int, adapter: Path | None,
                        batch: int) -> float:
    """Prompts/s of the study's generation: full few-shot prompts, left-padded, eager, batch 128, 32 new tokens."""
    from probe_throughput import build_jobs_for, run_baseline

    from knowpack.probe.backends import Decoding

    texts = pq.read_table(questions).column("question").to_pylist()
    jobs = build_jobs_for(loaded.tokenizer, texts, STUDY_PROMPTS, loaded.chat)[:n_prompts]
    model = loaded.model
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    try:
        with eager_code(loaded.model):  # the study ran transformers' own code
            run_baseline(model, loaded.tokenizer, jobs[:8], batch, Decoding(max_new_tokens=32), "sdpa",
                         str(loaded.device.type))
            seconds, _ = run_baseline(model, loaded.tokenizer, jobs, batch, Decoding(max_new_tokens=32), "eager",
                                      str(loaded.device.type))
    finally:
        if adapter is not None:
            model.unload()
    return len(jobs) / seconds


def trainer_rate(loaded: LoadedModel, run: Path, steps: int) -> float:
    """Tokens/s of the study's HF Trainer at batch 8 on the rows ``run`` trained on (padded, eager)."""
    from train_throughput import study_variant

    from knowpack.train.loop import encode_example

    table = pq.read_table(run / "train_set.parquet").to_pylist()
    rows = [encode_example(loaded.tokenizer, r["prompt"], r["target"], add_special_tokens=False) for r in table]
    rows = (rows * (8 * (steps + 2) // len(rows) + 1))[: 8 * (steps + 2)]
    with eager_code(loaded.model):  # the study ran transformers' own code
        return study_variant(loaded.model, rows, argparse.Namespace(warmup=2, steps=steps))["tokens_per_s"]


def train_log_rate(runs: list[Path]) -> tuple[float, float]:
    """(tokens/s over the runs' logged steps, mean tokens per row)."""
    tokens = seconds = rows = row_tokens = 0.0
    for run in runs:
        log = pq.read_table(run / "train_log.parquet").to_pylist()
        tokens += sum(r["tokens"] for r in log)
        seconds += sum(r["seconds"] for r in log)
        manifest = json.loads((run / "manifest.json").read_text())
        rows += manifest["rows"]
        row_tokens += manifest["row_tokens"]
    return tokens / seconds, row_tokens / rows


def grid_work(grid_file: Path, row_tokens: float) -> dict[str, float]:
    """Prompts and tokens of the study's grid: per run, the packed facts under every epoch (10 prompts each),
    all questions after training, and n·(1+k) rows × 10 epochs of training."""
    grid = yaml.safe_load(grid_file.read_text())["grid"]
    epochs, seeds = 10, len(STUDY_SEEDS)
    runs = [(n, sum(parse_extra(m)[1] for m in ([] if m == "none" else [m])))
            for n in grid["unknown"] for m in grid["mixtures"]] * seeds
    return {
        "runs": len(runs),
        "base_prompts": STUDY_QUESTIONS * STUDY_PROMPTS,
        "reliability_prompts": sum(n * STUDY_PROMPTS * epochs for n, _ in runs),
        "heldout_prompts": sum(3 * n * STUDY_PROMPTS * epochs for n, _ in runs),
        "relabel_prompts": len(runs) * STUDY_QUESTIONS * STUDY_PROMPTS,
        "train_tokens": sum(n * (1 + k) * epochs * row_tokens for n, k in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic-llama8b", action="store_true")
    parser.add_argument("--model", help="a model spec instead (e.g. smollm2-135m, a folder)")
    parser.add_argument("--tokenizer", help="tokenizer folder for the synthetic model")
    parser.add_argument("--kernels", default="auto", help="knowpack's kernel set (the study's side runs eager)")
    parser.add_argument("--questions", type=Path, required=True, help="questions.parquet to draw from")
    parser.add_argument("--sample", type=int, default=2048, help="questions labelled and relabelled")
    parser.add_argument("--study-prompts", type=int, default=768, help="prompts timed with the study's generate")
    parser.add_argument("--group", type=int, default=16, help="runs trained together")
    parser.add_argument("--unknown", type=int, default=80, help="Unknown facts per representative run")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-sizes", default="", help="also label with these batch sizes (vs the automatic one)")
    parser.add_argument("--grid", type=Path, default=ROOT / "examples" / "study_grid.yaml")
    parser.add_argument("--work", type=Path, help="work folder (default: a temp folder)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="grid-cost-"))
    loaded = (synthetic_loaded(args.tokenizer, args.kernels) if args.synthetic_llama8b
              else load_model(args.model, kernels=args.kernels))
    device = torch.cuda.get_device_name() if loaded.device.type == "cuda" else "CPU"
    print(f"# {loaded.spec} on {device}, torch {torch.__version__}, knowpack's kernels: {loaded.kernels}; work in "
          f"{work}", flush=True)
    questions = sample_questions(args.questions, args.sample, work / "questions.parquet")
    n_questions = pq.read_metadata(questions).num_rows
    label = lambda out, **extra: label_stage.LabelConfig.build(  # noqa: E731
        {"questions": questions, "out": out, "model": loaded.spec, "progress": False, **extra}, "study")
    rates: dict[str, float] = {}

    # 1. labelling the base model, the automatic batch size and any others asked for
    _, seconds = timed(label_stage.run_loaded, loaded, label(work / "labels"))
    rates["label_base"] = prompts_of(work / "labels") / seconds
    for size in [int(s) for s in args.batch_sizes.split(",") if s]:
        _, seconds = timed(label_stage.run_loaded, loaded, label(work / f"labels-{size}", batch_size=size))
        rates[f"label_base_batch_{size}"] = prompts_of(work / f"labels-{size}") / seconds
    print({k: round(v, 1) for k, v in rates.items()}, flush=True)

    # 2. training: a group of runs together, one run alone (same settings, seeds 0..G-1)
    def train_config(seed: int, out: Path):
        return train_stage.TrainConfig.build({"labels": work / "labels", "out": out, "unknown": args.unknown,
                                              "epochs": args.epochs, "seed": seed, "progress": False}, "study")

    group = [train_config(seed, work / "runs" / f"together{seed}") for seed in range(args.group)]
    results, seconds = timed(train_group, loaded, group)
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise failed[0]
    rates["train_together"], row_tokens = train_log_rate([r.path for r in results])
    # the wall clock of the whole stage call: adapters created, rows drawn and encoded, epochs saved
    rates["train_together_wall"] = sum(json.loads((r.path / "manifest.json").read_text())["row_tokens"]
                                       for r in results) * args.epochs / seconds
    alone, _ = timed(train_stage.run_loaded, loaded, train_config(0, work / "runs" / "alone"))
    rates["train_alone"], _ = train_log_rate([alone.path])
    rates["train_study"] = trainer_rate(loaded, alone.path, steps=12)
    print({k: round(v, 1) for k, v in rates.items()}, flush=True)

    # 3. evaluating one run: reliability at every epoch (one pass, all adapters), then all questions relabelled
    run = results[0].path
    config = evaluate_stage.EvaluateConfig.build({"run": run, "benchmarks": [], "progress": False}, "study")
    _, seconds = timed(evaluate_stage.run_loaded, loaded, config)
    probe = sum(prompts_of(folder) for folder in (run / "eval" / "probe_labels").iterdir())
    relabel = sum(prompts_of(folder) for folder in (run / "eval" / "labels").iterdir())
    rates["evaluate"] = (probe + relabel) / seconds
    print(f"evaluate: {probe} reliability prompts ({args.epochs + 1} epochs incl. 0) and {relabel} relabel prompts "
          f"in {seconds:.1f} s", flush=True)
    last = max((run / "epochs").iterdir())
    _, seconds = timed(label_stage.run_loaded, loaded, label(work / "relabel-again", adapter=last))
    rates["label_adapter"] = prompts_of(work / "relabel-again") / seconds

    # 4. the study's generation on the same prompts, base and with the adapter
    rates["study_label_base"] = study_generate_rate(loaded, questions, args.study_prompts, None, 128)
    rates["study_label_adapter"] = study_generate_rate(loaded, questions, args.study_prompts, last, 128)
    print({k: round(v, 1) for k, v in rates.items()}, flush=True)

    # 5. the grid
    work_of = grid_work(args.grid, row_tokens)
    hours = lambda amount, rate: amount / rate / 3600  # noqa: E731
    lines = [
        ("label all questions once (base)", work_of["base_prompts"], "prompts", rates["label_base"],
         rates["study_label_base"]),
        ("reliability: packed facts × 10 prompts × 10 epochs", work_of["reliability_prompts"], "prompts",
         rates["evaluate"], rates["study_label_adapter"]),
        ("relabel all questions after each run", work_of["relabel_prompts"], "prompts", rates["label_adapter"],
         rates["study_label_adapter"]),
        ("training, batch 8", work_of["train_tokens"], "tokens", rates["train_together"], rates["train_study"]),
    ]
    print(f"\nthe study's grid: {work_of['runs']} runs, {STUDY_QUESTIONS:,} questions, {row_tokens:.0f} tokens a "
          f"training row (measured here)\n")
    print("| work | amount | knowpack rate | knowpack GPU-h | study's approach rate | study GPU-h |")
    print("|---|---|---|---|---|---|")
    total_k = total_s = 0.0
    for name, amount, unit, ours, theirs in lines:
        total_k += hours(amount, ours)
        total_s += hours(amount, theirs)
        print(f"| {name} | {amount:,.0f} {unit} | {ours:,.0f} {unit}/s | {hours(amount, ours):.2f} | "
              f"{theirs:,.0f} {unit}/s | {hours(amount, theirs):.2f} |")
    print(f"| **total** | | | **{total_k:.2f}** | | **{total_s:.2f}** |")
    extra = hours(work_of["heldout_prompts"], rates["evaluate"])
    print(f"\nknowpack's default evaluation also answers 3 held-out paraphrases per packed fact at every epoch "
          f"(generalisation): {work_of['heldout_prompts']:,} prompts more, +{extra:.2f} GPU-h (total {total_k + extra:.2f}).")
    print(f"knowpack training alone at batch 8: {rates['train_alone']:,.0f} tokens/s "
          f"({hours(work_of['train_tokens'], rates['train_alone']):.2f} GPU-h for the grid's training).")
    print(f"labelling with an adapter vs the base model: {rates['label_adapter'] / rates['label_base']:.0%}.")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rates": rates, "work": work_of, "args": vars(args)},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()

"""Peak memory of the real ``knowpack`` commands as the work grows: labelling and sweeps must stream, so peak RSS
at 100 k questions (100 runs) should stay near the 10 k (10 runs) value instead of growing tenfold.

Each measurement runs ``python -m knowpack ...`` in a fresh child process and reads that child's peak RSS from
``os.wait4`` (ru_maxrss). The model is a 2-layer random Llama with SmolLM2's tokenizer (as in tests/conftest.py):
memory-boundedness is about the pipeline's bookkeeping, not the model's size.

    nice -n 10 .venv/bin/python bench/memory.py --label-sizes 10000,100000 --sweep-sizes 10,100
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import yaml

THREADS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               "CUDA_VISIBLE_DEVICES": ""}


def tiny_model(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from knowpack.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m")[0])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def questions(path: Path, n: int) -> Path:
    """``n`` distinct capital questions in the questions.parquet schema."""
    from knowpack.kg.folder import QUESTIONS_SCHEMA
    from knowpack.runfolder import write_parquet

    ids = range(n)
    write_parquet(path, pa.table({
        "id": [f"capital/c{i:06d}" for i in ids],
        "subject": [f"Land{i}" for i in ids],
        "relation": ["capital"] * n,
        "object": [f"City{i}" for i in ids],
        "question": [f"What is the capital of Land{i}?" for i in ids],
        "answer": [f"City{i}" for i in ids],
        "aliases": [[f"City{i}"] for i in ids],
        "bucket": [("head", "torso", "tail")[i % 3] for i in ids],
        "popularity": [n - i for i in ids],
        "relation_domain": ["Place"] * n,
        "template_id": ["capital#0"] * n,
        "paraphrases": [[f"Which city is the capital of Land{i}?"] for i in ids],
    }, schema=QUESTIONS_SCHEMA))
    return path


def peak_rss(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of ``python -m knowpack ARGS`` in a fresh child process."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: nobody reads while the child runs
        child = subprocess.Popen([sys.executable, "-m", "knowpack", *args], env={**os.environ, **THREADS_ENV},
                                 stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.monotonic() - started
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise SystemExit(f"knowpack {' '.join(args)} failed:\n{log.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds  # Linux reports KiB


def bench_label(work: Path, model: Path, n: int) -> tuple[float, float]:
    path = questions(work / f"questions-{n}.parquet", n)
    return peak_rss(["label", "--model", str(model), "--questions", str(path), "--out", str(work / f"labels-{n}"),
                     "--n-prompts", "1", "--shots", "1", "--samples", "0", "--max-new-tokens", "2",
                     "--batch-size", "512", "--device", "cpu", "--no-progress"])


def bench_sweep(work: Path, model: Path, runs: int) -> tuple[float, float]:
    """``runs`` runs (unknown 1..10 × runs/10 seeds): each trains 1 epoch on 1–10 facts and is evaluated (all 40
    questions relabelled with its adapter, reliability, shift, refusals, collapse, spill-over; no benchmarks)."""
    data = work / "sweep-data"
    if not (data / "labels" / "manifest.json").is_file():
        path = questions(data / "questions.parquet", 40)
        peak_rss(["label", "--model", str(model), "--questions", str(path), "--out", str(data / "labels"),
                  "--n-prompts", "1", "--shots", "1", "--samples", "0", "--max-new-tokens", "2", "--device", "cpu",
                  "--no-progress"])
    sweep = work / f"sweep-{runs}.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": f"memory-{runs}", "model": str(model), "device": "cpu",
        "data": {"questions": str(data / "questions.parquet"), "labels": str(data / "labels")},
        "train": {"batch_size": 4},
        "evaluate": {"benchmarks": [], "heldout_paraphrases": 0},
        "grid": {"unknown": {"start": 1, "stop": 10, "step": 1},  # stop is inclusive: 10 values
                 "mixtures": ["none"], "epochs": 1, "rank": 2, "seed": list(range(runs // 10))},
    }))
    return peak_rss(["sweep", str(sweep), "--out", str(work / f"sweep-{runs}")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-sizes", default="10000,100000", help="questions per labelling run")
    parser.add_argument("--sweep-sizes", default="10,100", help="runs per sweep (multiples of 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="knowpack-memory-") as tmp:
        work = Path(tmp)
        model = tiny_model(work / "tiny-llama")
        print("| workload | size | peak RSS (MiB) | wall (s) |\n|---|---|---|---|", flush=True)
        for n in (int(x) for x in args.label_sizes.split(",") if x):
            rss, seconds = bench_label(work, model, n)
            print(f"| `knowpack label`, greedy, 1 prompt, 2 new tokens | {n:,} questions | {rss:,.0f} | {seconds:,.0f} |",
                  flush=True)
        for runs in (int(x) for x in args.sweep_sizes.split(",") if x):
            rss, seconds = bench_sweep(work, model, runs)
            print(f"| `knowpack sweep`, local executor, train 1 epoch + evaluate | {runs} runs | {rss:,.0f} | "
                  f"{seconds:,.0f} |", flush=True)


if __name__ == "__main__":
    main()

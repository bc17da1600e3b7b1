"""``knowpack label``: SliCK knowledge categories of every question for a model (and optionally an adapter)."""

from __future__ import annotations

import argparse
from pathlib import Path

from knowpack.probe.label import LabelConfig, label
from knowpack.probe.prompts import POLICIES


def register(subparsers) -> None:
    defaults = LabelConfig()
    parser = subparsers.add_parser(
        "label",
        help="label questions HighlyKnown / MaybeKnown / WeaklyKnown / Unknown (SliCK) with a model",
        description="Ask every question under n few-shot prompts (greedy + samples), store every answer, and "
        "write responses.parquet and labels.parquet into --out. Interrupted runs resume.",
    )
    parser.add_argument("--model", required=True, help="embedded model name, model folder, .gguf file or hub id")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter folder trained on --model")
    parser.add_argument("--questions", type=Path, required=True, help="questions.parquet (kg stage)")
    parser.add_argument("--out", type=Path, required=True, help="label folder to write (or resume)")
    parser.add_argument("--n-prompts", type=int, default=defaults.n_prompts, help="few-shot prompt sets per question")
    parser.add_argument("--shots", type=int, default=defaults.shots, help="exemplars per prompt")
    parser.add_argument("--exemplars", choices=POLICIES, default=defaults.exemplars,
                        help="pool: fixed exemplar pool (the study); same-relation: other questions of the relation (SliCK)")
    parser.add_argument("--exemplar-seed", type=int, default=defaults.exemplar_seed)
    parser.add_argument("--samples", type=int, default=defaults.n_samples, help="sampled answers per prompt (0: greedy only)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--sample-seed", type=int, default=defaults.sample_seed)
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="use the chat template (default: when the model has one)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--stop-at-newline", action=argparse.BooleanOptionalAction, default=defaults.stop_at_newline,
                        help="end an answer at its first newline (it always ends at end-of-sequence/turn)")
    parser.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with a hub model (off by default: it runs with your rights)")
    parser.add_argument("--dtype", help="bfloat16 / float16 / float32 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="generated sequences per batch")
    parser.add_argument("--chunk-rows", type=int, default=defaults.chunk_rows,
                        help="generations kept in memory before a store chunk is written (a crash loses at most these)")
    parser.add_argument("--store", type=Path, help="shared response store folder (default: OUT/store)")
    parser.add_argument("--overwrite", action="store_true", help="replace a label folder made with other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    config = LabelConfig(
        model=args.model,
        questions=args.questions,
        out=args.out,
        adapter=args.adapter,
        n_prompts=args.n_prompts,
        shots=args.shots,
        exemplars=args.exemplars,
        exemplar_seed=args.exemplar_seed,
        n_samples=args.samples,
        temperature=args.temperature,
        sample_seed=args.sample_seed,
        chat=args.chat,
        max_new_tokens=args.max_new_tokens,
        stop_at_newline=args.stop_at_newline,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        batch_size=args.batch_size,
        chunk_rows=args.chunk_rows,
        store=args.store,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(label(config))

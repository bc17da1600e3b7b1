"""``knowpack train --labels DIR --unknown N [--extra KIND:K ...] --rank R --alpha A ... --out RUN``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="pack N Unknown facts (plus extra known facts or paraphrases) into a fresh LoRA adapter",
        description="Sample N Unknown facts of a label folder with a seed, add K extra items per fact, and train a "
        "LoRA adapter, saving adapter + optimizer state after every epoch. Re-running the same command resumes "
        "after the last complete epoch.",
    )
    parser.add_argument("--labels", required=True, type=Path, help="label folder from `knowpack probe`")
    parser.add_argument("--questions", type=Path, help="questions.parquet (default: the one the labels were made from)")
    parser.add_argument("--model", default="smollm2-135m", help="base model: embedded name, folder, .gguf or hub id")
    parser.add_argument("--unknown", type=int, default=50, help="Unknown facts to pack (default 50)")
    parser.add_argument("--extra", action="append", default=[], metavar="KIND:K",
                        help="K extra items per fact; KIND: highly-known, maybe-known, weakly-known, paraphrase "
                        "(repeatable to mix kinds)")
    parser.add_argument("--extra-pool", type=Path, metavar="LABELS",
                        help="a second label folder drawn on when the known-fact pool is too small")
    parser.add_argument("--allow-repeat", action="store_true", help="reuse extra items when their pool is too small")
    parser.add_argument("--seed", type=int, default=42, help="picks the facts, the LoRA init, data order, dropout")
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(rank) instead of alpha/rank")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--targets", default="mlp",
                        help="mlp (gate/up/down), attention (q/k/v/o), all-linear, or comma-separated module names")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8, help="rows per optimizer step (study code: 8)")
    parser.add_argument("--schedule", choices=("linear", "constant"), default="linear",
                        help="learning-rate schedule (linear decay to 0 is the HF Trainer default the study used)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping; 0 turns it off")
    parser.add_argument("--loss-on", choices=("answer", "all"), default="answer",
                        help="answer tokens only (default) or all tokens, prompt included (the study's code)")
    parser.add_argument("--template", help="custom plain-text prompt, e.g. 'Q: {question}\\nA: {answer}' "
                        "(default: the study's zero-shot chat prompt)")
    chat = parser.add_mutually_exclusive_group()
    chat.add_argument("--chat", dest="chat", action="store_true", default=None, help="force the chat template")
    chat.add_argument("--no-chat", dest="chat", action="store_false", help="plain `Question: q\\nAnswer: a` rows")
    parser.add_argument("--max-tokens-per-pass", type=int, metavar="N",
                        help="split each step into forward passes of at most N tokens (same gradient without dropout; less memory)")
    parser.add_argument("--lane-tokens", type=int, default=512, metavar="N",
                        help="pack rows into attention lanes of about N tokens (default 512; same loss, attention "
                        "cost grows with tokens × N)")
    parser.add_argument("--device", help="cuda, cpu, cuda:1 … (default: cuda when available)")
    parser.add_argument("--dtype", help="bfloat16, float32 … (default: bf16 on GPU, float32 on CPU)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with a hub model (off by default: it runs with your rights)")
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    parser.add_argument("--overwrite", action="store_true", help="replace a run made with another config")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from knowpack.train import TrainConfig, train

    fields = {name: getattr(args, name) for name in TrainConfig.__dataclass_fields__ if hasattr(args, name)}
    template = args.template.replace("\\n", "\n") if args.template else None  # a shell gives '\n' literally
    out = train(TrainConfig(**{**fields, "extra": tuple(args.extra), "template": template}))
    print(f"trained: {out}  (adapters: {out / 'epochs'})")

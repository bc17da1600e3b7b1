"""``knowpack demo``: the whole study in miniature on the embedded default, offline, on a laptop CPU.

The demo is an ordinary sweep (``demo.yaml`` beside this file: questions from the embedded fact graph, SliCK
labels, a small grid of packing runs, their evaluation) followed by the report, so everything it shows is made
by the same code a user's sweep runs. Run it again and finished work is reused.
"""

from __future__ import annotations

import dataclasses
import time
from importlib.resources import files
from pathlib import Path

from knowpack.cli import Command
from knowpack.config import Config, option, out_option

DEMO_SWEEP = files("knowpack") / "demo.yaml"


@dataclasses.dataclass
class DemoConfig(Config):
    out: Path = out_option("demo folder", default=Path("runs/demo"))
    model: str | None = option(None, help="another model (embedded name, .gguf, folder or hub id; default: "
                               "demo.yaml's, the embedded default)")


def run(config: DemoConfig):
    """Run the demo sweep and its report; returns the Report folder."""
    from knowpack.report.stage import ReportConfig
    from knowpack.report.stage import run as make_report
    from knowpack.sweep.driver import run_sweep
    from knowpack.sweep.spec import load_sweep

    spec = load_sweep(Path(str(DEMO_SWEEP)), out=config.out)
    if config.model:
        spec = dataclasses.replace(spec, model=config.model)
    run_sweep(spec)
    return make_report(ReportConfig(source=Path(config.out), title="knowpack demo"))


def main(config: DemoConfig) -> None:
    started = time.perf_counter()
    report = run(config)
    print("\n" + report.summary)
    print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} min; report: {report.html.resolve()}")
    print("your own facts into the model next: knowpack inject FACTS.jsonl --out DIR (docs/inject.md)")


COMMANDS = [Command("demo", DemoConfig, main,
                    help="the whole pipeline on the embedded default model and fact graph (offline, CPU, ~15 min)",
                    description=__doc__.splitlines()[0])]

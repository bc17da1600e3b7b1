"""``knowpack compare RUN...``: the headline numbers of several evaluated runs side by side, and the terminal view
of one evaluation's summary. The numbers are the metrics' own figures (``metrics.all_figures``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.cli import Command
from knowpack.config import Config, option
from knowpack.errors import InputError


@dataclass
class CompareConfig(Config):
    runs: tuple[Path, ...] = option(help="evaluated training run folders (or their eval folders)", positional=True,
                                    metavar="RUN")
    out: Path | None = option(None, help="also write the table (.csv or .parquet)", metavar="FILE")

    def check(self) -> None:
        if not self.runs:
            raise InputError("name at least one evaluated run")


def compare(runs: list[Path]):
    """Headline metrics of several evaluated runs side by side: one row per metric, one column per run."""
    import pandas as pd

    from knowpack.evaluate.folder import EVAL_DIR, Evaluation
    from knowpack.evaluate.metrics import all_figures

    if not runs:
        raise InputError("name at least one evaluated run")
    columns = {}
    for run in runs:
        name = Path(run).name if Path(run).name != EVAL_DIR else Path(run).parent.name
        while name in columns:
            name += "'"
        summary = Evaluation.of(run).summary()
        row = {"facts": summary["facts"], "train rows": summary["train_rows"]}
        for figure in all_figures(summary):
            row[figure.label] = figure.value
            if figure.stderr is not None:
                row[f"{figure.label} stderr"] = figure.stderr
        columns[name] = row
    table = pd.DataFrame(columns)
    table.index.name = "metric"
    return table


def run(config: CompareConfig):
    return compare(list(config.runs))


def main(config: CompareConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    from knowpack.runfolder import write_parquet

    table = run(config)
    view = Table(title="Runs side by side")
    view.add_column("metric")
    for column in table.columns:
        view.add_column(str(column), justify="right")
    for metric, row in table.iterrows():
        view.add_row(str(metric), *(_fmt(v) for v in row))
    Console().print(view)
    if config.out:
        if config.out.suffix == ".parquet":
            write_parquet(config.out, table.reset_index().astype(str))
        else:
            table.to_csv(config.out)
        print(f"written: {config.out}")


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
    if not summary.get("damage_measured", True):
        console.print("Damage not measured: the last epoch's reliability is below evaluate's damage_if_reliability.")
        return

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


COMMANDS = [Command("compare", CompareConfig, main, help="put the headline metrics of several evaluated runs side by side",
                    description="Read each RUN/eval/summary.json and print one column per run.")]

"""``knowpack diff BEFORE AFTER``: a paired comparison of two labellings of the same questions, and a regression
gate for CI.

BEFORE and AFTER are evaluated training runs (the adapter of the last shift epoch), ``inject`` folders (the adapter
they exported) or label folders (a model's own labels, e.g. a run's base labels). Every question is compared with
itself: flips between SliCK categories with their counts, shift fractions and accuracy change with bootstrap
intervals over questions, an exact sign test over questions (``diff/paired.py`` says why), the benchmark deltas
with standard errors and the change of every headline figure both sides have. ``--fail-if`` gates
(``diff/gates.py``) exit 1 when breached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.cli import Command
from knowpack.config import Config, option
from knowpack.errors import KnowpackError


class GateBreached(KnowpackError):
    """A --fail-if condition held: the comparison ran, the AFTER model fails the gate."""

    exit_code = 1


@dataclass
class DiffConfig(Config):
    before: Path = option(help="evaluated training run (or its eval folder), inject folder or label folder",
                          positional=True, metavar="BEFORE")
    after: Path = option(help="the same kinds of folder, labelled with the same probe settings", positional=True,
                         metavar="AFTER")
    fail_if: str | None = option(None, help="exit 1 when a gate holds, e.g. 'negative_shift>0.02,mmlu<-0.01' "
                                 "(shift keys: share of questions that rose/fell from BEFORE to AFTER; other keys: "
                                 "AFTER − BEFORE; after.KEY: AFTER's own value; docs/inject.md)", metavar="GATES")
    json_out: Path | None = option(None, help="also write the whole comparison as JSON", flag="--json",
                                   metavar="FILE")
    resamples: int = option(2000, help="bootstrap resamples of the questions", minimum=100)
    confidence: float = option(0.95, help="confidence level of the intervals", above=0, below=1)
    seed: int = option(0, help="seeds the bootstrap")

    def check(self) -> None:
        if self.fail_if is not None:
            from knowpack.diff.gates import parse_gates

            parse_gates(self.fail_if)


def run(config: DiffConfig) -> dict[str, Any]:
    """The comparison as a JSON-ready dict, with the gates checked (``gates``: each one's value and verdict)."""
    from knowpack.diff.compare import check_gates, diff_folders
    from knowpack.diff.gates import parse_gates

    result = diff_folders(config.before, config.after, resamples=config.resamples, seed=config.seed,
                          confidence=config.confidence)
    result["gates"] = check_gates(result, parse_gates(config.fail_if)) if config.fail_if else []
    return result


def main(config: DiffConfig) -> None:
    from knowpack.runfolder import write_json

    result = run(config)
    print_result(result)
    if config.json_out is not None:
        write_json(config.json_out, result)
        print(f"written: {config.json_out}")
    breached = [g for g in result["gates"] if g["breached"]]
    if breached:
        raise GateBreached("gate breached: " + "; ".join(f"{g['gate']} ({g['key']} = {g['value']:.4g})"
                                                          for g in breached))


def print_result(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    level = f"{result['settings']['confidence']:.0%}"
    n = result["questions"]
    console.print(f"BEFORE {result['before']['path']}  →  AFTER {result['after']['path']}: {n['paired']:,} paired "
                  f"questions ({n['before']:,} / {n['after']:,} labelled)", markup=False, highlight=False)
    shift = Table(title=f"Knowledge shift BEFORE → AFTER (fractions of the paired questions, {level} bootstrap "
                  "interval)")
    for column in ("scope / match", "questions", "rose", "fell", "positive", "negative"):
        shift.add_column(column, justify="left" if column == "scope / match" else "right")
    for key, row in result["shift"].items():
        shift.add_row(key, f"{row['n_questions']:,}", f"{row['n_positive']:,}", f"{row['n_negative']:,}",
                      _interval(row["positive"], row["positive_ci"]), _interval(row["negative"], row["negative_ci"]))
    console.print(shift)

    flips = Table(title="Category flips (lenient; rows: BEFORE, columns: AFTER)")
    names = list(result["transitions"])
    flips.add_column("")
    for name in names:
        flips.add_column(name, justify="right")
    for before, row in result["transitions"].items():
        flips.add_row(before, *(f"{row[after]:,}" for after in names))
    console.print(flips)

    accuracy, answers = result["accuracy"], result["answers"]
    sign = accuracy["sign_test"]
    paired = Table(title="Accuracy (share of prompts answered right, per question)")
    paired.add_column("measure")
    paired.add_column("value", justify="right")
    paired.add_row("BEFORE → AFTER", f"{accuracy['before']:.3f} → {accuracy['after']:.3f}")
    paired.add_row("change", _interval(accuracy["delta"], accuracy["delta_ci"], signed=True))
    paired.add_row("questions better / worse / same", f"{sign['better']:,} / {sign['worse']:,} / {sign['ties']:,}")
    paired.add_row("sign test p (two-sided, exact)", f"{sign['p_value']:.3g}")
    paired.add_row("answers right→wrong / wrong→right",
                   f"{answers['right_to_wrong']:,} / {answers['wrong_to_right']:,} of {answers['n_answers']:,}")
    console.print(paired)

    if result["benchmarks"] or result["figures"]:
        deltas = Table(title="Benchmarks and headline figures (AFTER − BEFORE)")
        for column in ("figure", "BEFORE", "AFTER", "change"):
            deltas.add_column(column, justify="left" if column == "figure" else "right")
        for key, entry in result["benchmarks"].items():
            error = f" ± {entry['stderr']:.3f}" if entry["stderr"] is not None else ""
            deltas.add_row(key, f"{entry['before']:.3f}", f"{entry['after']:.3f}", f"{entry['delta']:+.3f}{error}")
        for key, entry in result["figures"].items():
            deltas.add_row(key, f"{entry['before']:.4g}", f"{entry['after']:.4g}", f"{entry['delta']:+.4g}")
        console.print(deltas)

    if result["gates"]:
        gates = Table(title="Gates")
        for column in ("gate", "value", "reads", "verdict"):
            gates.add_column(column)
        for gate in result["gates"]:
            gates.add_row(gate["gate"], f"{gate['value']:.4g}", gate["meaning"],
                          "BREACHED" if gate["breached"] else "ok")
        console.print(gates)


def _interval(value: float, interval: list[float | None], signed: bool = False) -> str:
    spec = "+.3f" if signed else ".3f"
    if interval[0] is None:
        return f"{value:{spec}}"
    return f"{value:{spec}} [{interval[0]:{spec}}, {interval[1]:{spec}}]"


COMMANDS = [Command("diff", DiffConfig, main, help="compare two labellings question by question; gate a release "
                    "with --fail-if", description=__doc__.splitlines()[0])]

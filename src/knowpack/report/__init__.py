"""The report: the study's figures and tables for a sweep (or one run), as ``report.html`` + ``report.md`` + PNGs.

``make_report`` reads the sweep index and every evaluated run's ``eval/`` tables, draws each figure that has
data, and writes the report folder (default ``SOURCE/report``) as a run folder, so its manifest says which
sweep or run it was made from. Making it again replaces an earlier report in that folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from knowpack.errors import InputError
from knowpack.report import figures, tables
from knowpack.report.collect import ReportData, collect
from knowpack.report.html import Section, render_html, render_markdown
from knowpack.runfolder import MANIFEST, NOT_RESULT, open_run, write_bytes
from knowpack.sweep.spec import mixture_label

__all__ = ["ReportConfig", "make_report"]


@dataclass
class ReportConfig:
    source: Path
    out: Path | None = field(default=None, metadata=NOT_RESULT)
    title: str | None = None


def make_report(config: ReportConfig) -> Path:
    """Write the report folder and return it (``report.html`` inside opens from disk in any browser)."""
    source = Path(config.source)
    if not source.is_dir():
        raise InputError(f"{source}: folder not found (give a sweep folder or a training run folder)")
    out = Path(config.out) if config.out is not None else source / "report"
    data = collect(source)
    folder = open_run(out, "report", {"source": str(source.resolve()), "title": config.title},
                      overwrite=_holds_report(out))
    sections = draw(data, folder.path)
    title = config.title or f"knowpack report: {source.resolve().name}"
    meta = (f"{data.kind} {source.resolve()} · {len(data.evaluated)} of {len(data.runs)} runs evaluated · "
            f"made {time.strftime('%Y-%m-%d %H:%M')}")
    text = tables.summary(data)
    write_bytes(folder.file("report.html"), render_html(title, meta, text, sections).encode())
    write_bytes(folder.file("report.md"), render_markdown(title, meta, text, sections).encode())
    pictures = [s.figure.name for s in sections if s.figure is not None]
    folder.finish(["report.html", "report.md", *pictures], summary=text)
    return folder.path


def _holds_report(out: Path) -> bool:
    """Only an earlier report is replaced; any other folder is refused by open_run as usual."""
    try:
        return json.loads((out / MANIFEST).read_text()).get("stage") == "report"
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def draw(data: ReportData, out: Path) -> list[Section]:
    mixtures = data.mixtures
    final = tables.final_reliability_values(data)
    reliability = data.reliability[data.reliability["scope"] == "trained"] if len(data.reliability) else data.reliability
    sections = [
        Section(
            "Reliability per epoch (Figure 2)",
            "Share of correct greedy answers on the packed facts, over every prompt, after each epoch. "
            "Line: mean over seeds; band: min–max over seeds.",
            figures.reliability_per_epoch(reliability, mixtures, out / "reliability_per_epoch.png"),
        ),
        Section(
            "Reliability after the last epoch (Table 2)",
            "Reliability on the packed facts after training, by number of facts and mixture (mean [min–max] over seeds).",
            figures.reliability_vs_facts(final, mixtures, out / "reliability_vs_facts.png"),
            (("Reliability after the last epoch", tables.final_reliability(data)),
             ("Reliability on held-out paraphrases of the packed facts (last epoch)",
              tables.paraphrase_reliability(data))),
        ),
        Section(
            "Knowledge shift (Table 3)",
            "Positive shift: questions whose category rose (e.g. Unknown → HighlyKnown); negative: fell. Both are "
            "fractions of all questions, after the last epoch, with lenient matching. Cells: positive / negative.",
            figures.shift_vs_facts(data.shift, mixtures, out / "shift_vs_facts.png"),
            (("Positive / negative shift", tables.shift_table(data)),),
        ),
        Section(
            "Shift heatmaps",
            "Mean positive and negative shift (fraction of all questions) for each cell of the grid.",
            figures.shift_heatmaps(data.shift, mixtures, out / "shift_heatmaps.png"),
        ),
        Section("Category transitions",
                "Where the questions of each base-model category went, at each mixture's largest size (rows sum to 1).",
                figures.shift_matrices(data.matrix, mixtures, out / "shift_matrices.png")),
        Section(
            "Refusals and answer collapse (Table 4)",
            "Refusal rate over all greedy answers, number of distinct greedy answers and the share of the most "
            "frequent one, after the last epoch; the dashed line is the base model.",
            figures.refusals_and_collapse(data.effects, data.base_effects, mixtures, out / "refusals_collapse.png"),
            (("Refusals and collapse", tables.effects_table(data)),),
        ),
        Section(
            "Spill-over reasons (Table 5)",
            "For questions that were not trained on and changed category: the share with each candidate reason "
            "(a question can have several) and the share explained by at least one.",
            figures.spillover_reasons(data.spillover, mixtures, out / "spillover_reasons.png"),
            (("Spill-over reasons", tables.spillover_table(data)),),
        ),
        Section(
            "External benchmarks (Figures 1, 3, 4; Table 7)",
            "Scores through lm-evaluation-harness after the last epoch, against the base model (dashed, ± standard "
            "error).",
            figures.benchmarks_vs_facts(data.benchmarks, data.base_benchmarks, mixtures, out / "benchmarks.png"),
            (("Benchmark scores", tables.benchmark_table(data)),),
        ),
        Section("Runs", "Every run of the sweep with its status; only evaluated runs enter the figures.",
                tables=(("Runs", _runs_table(data)),)),
    ]
    return [s for s in sections if s.figure is not None or any(len(t) for _, t in s.tables)]


def _runs_table(data: ReportData):
    columns = [c for c in ("run_id", "unknown", "mixture", "seed", "status", "epochs_done", "seconds", "error")
               if c in data.runs]
    table = data.runs[columns].copy()
    table["mixture"] = table["mixture"].map(mixture_label)
    if "seconds" in table:
        table["seconds"] = table["seconds"].map(lambda s: "" if s != s or s is None else f"{s:.0f}")
    return table

"""The report: the study's figures and tables for a sweep (or one run), as ``report.html`` + ``report.md`` + PNGs.

The report reads the sweep index and every evaluated run's evaluation, lets each metric draw its figures and
tables (``evaluate/metrics``), and writes the report folder (default ``SOURCE/report``) as a run folder, so its
manifest says which sweep or run it was made from. Making it again replaces an earlier report in that folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from knowpack.cli import Command
from knowpack.config import Config, option
from knowpack.runfolder import StageFolder

REPORT_DIR = "report"
HTML_FILE, MARKDOWN_FILE = "report.html", "report.md"


@dataclass
class ReportConfig(Config):
    source: Path = option(help="a sweep folder or a training run folder", positional=True, metavar="SWEEP_DIR_OR_RUN",
                          affects_results=False)
    out: Path | None = option(None, help="report folder (default SOURCE/report)", metavar="DIR", affects_results=False)
    title: str | None = option(None, help="report title (default: the folder's name)")


class Report(StageFolder):
    stage = "report"
    command = "report"
    what = "report folder"

    @property
    def html(self) -> Path:
        return self.file(HTML_FILE)

    @property
    def summary(self) -> str:
        return self.manifest.get("summary", "")


def run(config: ReportConfig) -> Report:
    """Write the report folder (``report.html`` inside opens from disk in any browser)."""
    from knowpack.errors import InputError
    from knowpack.report.cells import summary
    from knowpack.report.collect import collect
    from knowpack.report.html import render_html, render_markdown
    from knowpack.runfolder import open_run, write_bytes

    source = Path(config.source)
    if not source.is_dir():
        raise InputError(f"{source}: folder not found (give a sweep folder or a training run folder)")
    out = Path(config.out) if config.out is not None else source / REPORT_DIR
    data = collect(source)
    folder = open_run(out, "report", {"source": str(source.resolve()), "title": config.title},
                      overwrite=Report.is_one(out))  # only an earlier report is replaced
    sections = draw(data, folder.path)
    title = config.title or f"knowpack report: {source.resolve().name}"
    meta = (f"{data.kind} {source.resolve()} · {len(data.evaluated)} of {len(data.runs)} runs evaluated · "
            f"made {time.strftime('%Y-%m-%d %H:%M')}")
    text = summary(data)
    write_bytes(folder.file(HTML_FILE), render_html(title, meta, text, sections).encode())
    write_bytes(folder.file(MARKDOWN_FILE), render_markdown(title, meta, text, sections).encode())
    pictures = [s.figure.name for s in sections if s.figure is not None]
    folder.finish([HTML_FILE, MARKDOWN_FILE, *pictures], summary=text)
    return Report(folder.path)


def main(config: ReportConfig) -> None:
    print(f"report: {run(config).html}")


def draw(data, out: Path) -> list:
    """Every metric's sections, in metric order, then the runs table."""
    from knowpack.evaluate.metrics import in_order
    from knowpack.report.html import Section

    from knowpack.report.tradeoff import tradeoff_section

    sections = [section for metric in in_order() for section in metric.sections(data, out)]
    sections.append(tradeoff_section(data, out))
    sections.append(Section("Runs", "Every run of the sweep with its status and protocol (its settings compared "
                            "with the study's, docs/study-fidelity.md); only evaluated runs enter the figures.",
                            tables=(("Runs", _runs_table(data)),)))
    return [s for s in sections if s.figure is not None or any(len(t) for _, t in s.tables)]


def _runs_table(data):
    from knowpack.sweep.spec import mixture_label

    columns = [c for c in ("run_id", "unknown", "mixture", "method", "rank", "seed", "protocol", "status",
                           "epochs_done", "seconds", "error") if c in data.runs]
    table = data.runs[columns].copy()
    table["mixture"] = table["mixture"].map(mixture_label)
    if "seconds" in table:
        table["seconds"] = table["seconds"].map(lambda s: "" if s != s or s is None else f"{s:.0f}")
    return table


COMMANDS = [Command("report", ReportConfig, main,
                    help="figures and tables of a sweep (or one training run) as report.html + report.md + PNGs",
                    description="Draw the study's figures and tables from a sweep folder or a single training run "
                    "folder. report.html is self-contained: open it from disk in any browser.")]

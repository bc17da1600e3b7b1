"""``knowpack report SWEEP_DIR_OR_RUN [--out DIR] [--title TEXT]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="figures and tables of a sweep (or one training run) as report.html + report.md + PNGs",
        description="Draw the study's figures and tables from a sweep folder or a single training run folder. "
        "report.html is self-contained: open it from disk in any browser.",
    )
    parser.add_argument("source", metavar="SWEEP_DIR_OR_RUN", type=Path, help="a sweep folder or a training run folder")
    parser.add_argument("--out", type=Path, help="report folder (default SOURCE/report)")
    parser.add_argument("--title", help="report title (default: the folder's name)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from knowpack.report import ReportConfig, make_report

    out = make_report(ReportConfig(source=args.source, out=args.out, title=args.title))
    print(f"report: {out / 'report.html'}")

"""The questions stage: facts from a source (the embedded graph, a DBpedia dump, …) → a question set folder
(``questions.parquet`` + ``summary.json``), by the head-to-tail method (study.md §1)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.assets import cache_dir
from knowpack.cli import Command
from knowpack.config import Config, option, out_option, overwrite_option, progress_option
from knowpack.errors import InputError
from knowpack.kg.folder import BUCKETS, QuestionSet
from knowpack.kg.sources import SOURCES, BuildRequest
from knowpack.kg.templates import load_templates
from knowpack.runfolder import atomic_path, open_run, stable_hash, write_json, write_parquet

OUTPUTS = ("questions.parquet", "summary.json")


def build_code_hash() -> str:
    """sha256 of the code a build runs (this package and the text matching it uses): the cache of built question
    sets is keyed by it too, so a knowpack whose build changed never copies a set an older one built."""
    import hashlib

    package = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.yaml"), package.parent / "text.py"]):
        digest.update(str(path.relative_to(package.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class QuestionsConfig(Config):
    """How to build questions.parquet; ``per_bucket`` None means the source's own default."""

    extensions = ("source", SOURCES)

    out: Path = out_option()
    source: str = option("embedded", help="where the facts come from", choices=SOURCES.names)
    templates: Path | None = option(None, help="your own templates (YAML/JSON: relation -> phrasings); "
                                    "default: the source's packaged set", metavar="FILE", affects_results=False)
    seed: int = option(0, help="seeds the sampling of facts per relation and bucket")
    per_bucket: int | None = option(None, help="facts per relation and bucket at most (default: the source's; "
                                    "30 for both, as the study)", minimum=1)
    balance: bool = option(True, help="cut every bucket of a relation to its smallest bucket's count")
    max_aliases: int = option(20, help="answer aliases kept per question", minimum=1)
    overwrite: bool = overwrite_option()
    progress: bool = progress_option()
    options: dict[str, Any] = option(default_factory=dict, help="the source's own options", cli=False)

    def check(self) -> None:
        if self.per_bucket is None:
            self.per_bucket = SOURCES[self.source].default_per_bucket


def run(config: QuestionsConfig) -> QuestionSet:
    """Write ``questions.parquet`` and ``summary.json`` into ``config.out``; a finished folder is returned as is."""
    from tqdm.auto import tqdm

    source = SOURCES[config.source]
    options = config.options_of(source.Options) if source.Options else None
    templates = load_templates(config.templates or source.templates or source.name)
    extra = {"templates": stable_hash(templates), **source.fingerprint()}
    run_folder = open_run(config.out, "questions", config, source.inputs(options) if options else {},
                          extra_key=extra, overwrite=config.overwrite)
    if run_folder.complete:
        return QuestionSet(run_folder.path)

    cached = cache_dir() / "kg" / f"{run_folder.key}-{build_code_hash()}"
    if source.cached and all((cached / name).is_file() for name in OUTPUTS):
        for name in OUTPUTS:
            with atomic_path(run_folder.file(name)) as tmp:
                shutil.copyfile(cached / name, tmp)
    else:
        with tqdm(desc=f"building questions ({source.name})", unit="B", unit_scale=True,
                  disable=not config.progress) as bar:
            table, summary = source.build(BuildRequest(config, options, templates, bar.update))
        if table.num_rows == 0:
            raise InputError(f"{getattr(options, 'dump', None) or source.name}: no question survived the "
                             "selection; see the skipped counts (templates, cleaning, balance)")
        summary["questions"] = table.num_rows
        buckets = table.column("bucket").to_pylist()
        summary["questions_per_bucket"] = {b: int(sum(1 for x in buckets if x == b)) for b in BUCKETS}
        write_parquet(run_folder.file("questions.parquet"), table)
        write_json(run_folder.file("summary.json"), summary)
        if source.cached:
            for name in OUTPUTS:
                with atomic_path(cached / name) as tmp:
                    shutil.copyfile(run_folder.file(name), tmp)
    summary = json.loads(run_folder.file("summary.json").read_text())
    totals = {k: v for k, v in summary.items() if k not in ("relation_table", "bad_line_examples")}
    run_folder.finish(list(OUTPUTS), summary=totals)
    return QuestionSet(run_folder.path)


def main(config: QuestionsConfig) -> None:
    from rich.console import Console

    folder = run(config)
    print_summary(folder.summary(), Console())
    print(f"wrote {folder.file('questions.parquet')}")


def print_summary(summary: dict, console) -> None:
    """Totals first, then one table per kind of subject (relations sorted, questions per bucket), each followed by
    its skip reasons summed; relations that gave no question are named on one line."""
    from rich.table import Table

    totals = Table(title="totals")
    for column in ("", *BUCKETS, "all"):
        totals.add_column(column, justify="right")
    per_bucket = summary.get("questions_per_bucket", {})
    totals.add_row("questions", *(f"{per_bucket.get(b, 0):,}" for b in BUCKETS), f"{summary['questions']:,}")
    if "subjects_per_bucket" in summary:  # embedded graph: subjects of every kind
        kinds = summary["subjects_per_bucket"].values()
        counts = [sum(kind[b] for kind in kinds) for b in BUCKETS]
        totals.add_row("subjects", *(f"{c:,}" for c in counts), f"{sum(counts):,}")
    if "buckets" in summary:
        totals.add_row("entities", *(f"{summary['buckets'][b]['entities']:,}" for b in BUCKETS),
                       f"{summary['entities']:,}")
        totals.add_row("triples", *(f"{summary['buckets'][b]['triples']:,}" for b in BUCKETS),
                       f"{summary['triples']:,}")
    console.print(totals)
    answering = [row for row in summary["relation_table"] if any(row["questions"].values())]
    console.print(f"{len(answering)} of {len(summary['relation_table'])} relations gave questions")
    if summary.get("lines") is not None:
        console.print(f"{summary['lines']:,} lines: {summary['triples']:,} triples, "
                      f"{summary['comment_or_blank_lines']:,} comments/blank, {summary['bad_lines']:,} malformed")
        for number, text in summary.get("bad_line_examples", [])[:5]:
            console.print(f"  malformed line {number}: {text}", markup=False, highlight=False)

    by_kind: dict[str, list[dict]] = {}
    for row in answering:
        by_kind.setdefault(row.get("kind", "all relations"), []).append(row)
    for kind, rows in sorted(by_kind.items()):
        questions = sum(sum(row["questions"].values()) for row in rows)
        table = Table(title=f"{kind}: questions per relation and bucket ({questions:,} over {len(rows)} relations)")
        for column in ("relation", *BUCKETS, "questions", "facts", "skipped"):
            table.add_column(column, justify="left" if column == "relation" else "right")
        skipped: Counter = Counter()
        for row in sorted(rows, key=lambda row: row["relation"]):
            skipped.update(row["skipped"])
            table.add_row(row["relation"], *(f"{row['questions'][b]:,}" for b in BUCKETS),
                          f"{sum(row['questions'].values()):,}", f"{sum(row['facts'].values()):,}",
                          f"{sum(row['skipped'].values()):,}")
        console.print(table)
        console.print("skipped: " + ", ".join(f"{reason} {count:,}" for reason, count in skipped.most_common()))
    idle = [row for row in summary["relation_table"] if not any(row["questions"].values())]
    if idle:
        reasons: Counter = Counter()
        for row in idle:
            reasons.update(row["skipped"])
        why = ", ".join(f"{reason}: {count:,}" for reason, count in reasons.most_common())
        names = ", ".join(sorted(row["relation"] for row in idle))
        console.print(f"{len(idle)} relation(s) gave no question ({why}): {names}", markup=False, highlight=False)


COMMANDS = [Command("questions", QuestionsConfig, main,
                    help="build questions.parquet from the embedded fact graph or a DBpedia dump",
                    description="Facts → questions with head/torso/tail popularity buckets (head-to-tail method).")]

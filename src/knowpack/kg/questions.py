"""The ``questions`` stage: facts (DBpedia dump or the embedded graph) → ``questions.parquet`` in a run folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from knowpack.assets import cache_dir
from knowpack.errors import InputError
from knowpack.kg.dbpedia import build_dbpedia
from knowpack.kg.embedded import build_embedded, source_fingerprint
from knowpack.kg.schema import BUCKETS
from knowpack.kg.templates import load_templates
from knowpack.runfolder import NOT_RESULT, atomic_path, open_run, stable_hash, write_json, write_parquet

SOURCES = ("embedded", "dbpedia")
# The study's notebook keeps 30 facts per relation and bucket; so does the embedded graph, whose 100+ relations
# give thousands of questions without one relation dominating.
DEFAULT_PER_BUCKET = {"dbpedia": 30, "embedded": 30}
OUTPUTS = ("questions.parquet", "summary.json")


@dataclass
class QuestionsConfig:
    """How to build questions.parquet; ``per_bucket`` None means the source's default (DEFAULT_PER_BUCKET)."""

    out: str
    source: str = "embedded"
    dump: str | None = None
    labels: tuple[str, ...] = ()
    redirects: tuple[str, ...] = ()
    ontology: str | None = None
    templates: str | None = None
    seed: int = 0
    per_bucket: int | None = None
    balance: bool = True
    max_aliases: int = 20
    strict: bool = False
    max_bad_lines: int = 1000
    overwrite: bool = field(default=False, metadata=NOT_RESULT)
    progress: bool = field(default=True, metadata=NOT_RESULT)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(f"--source {self.source}: unknown; choose one of {', '.join(SOURCES)}")
        if self.source == "dbpedia" and not self.dump:
            raise InputError("--source dbpedia needs --dump FILE (e.g. mappingbased-objects_lang=en.ttl.bz2)")
        if self.source == "embedded" and (self.dump or self.labels or self.redirects or self.ontology):
            raise InputError("--dump/--labels/--redirects/--ontology apply to --source dbpedia only")
        self.labels, self.redirects = tuple(self.labels), tuple(self.redirects)
        if self.per_bucket is None:
            self.per_bucket = DEFAULT_PER_BUCKET[self.source]
        if self.per_bucket < 1 or self.max_aliases < 1 or self.max_bad_lines < 0:
            raise InputError("--per-bucket and --max-aliases must be ≥ 1 and --max-bad-lines ≥ 0")


def build_questions(config: QuestionsConfig) -> Path:
    """Write ``questions.parquet`` and ``summary.json`` into ``config.out``; a finished folder is returned as is."""
    templates = load_templates(config.templates or config.source)
    inputs = {}
    if config.dump:
        inputs["dump"] = config.dump
    inputs.update({f"labels{i}": path for i, path in enumerate(config.labels)})
    inputs.update({f"redirects{i}": path for i, path in enumerate(config.redirects)})
    if config.ontology:
        inputs["ontology"] = config.ontology
    extra = {"templates": stable_hash(templates)}
    if config.source == "embedded":
        extra["embedded"] = source_fingerprint()
    run = open_run(config.out, "questions", config, inputs, extra_key=extra, overwrite=config.overwrite)
    if run.complete:
        return run.path

    cached = cache_dir() / "kg" / run.key
    if config.source == "embedded" and all((cached / name).is_file() for name in OUTPUTS):
        for name in OUTPUTS:
            with atomic_path(run.file(name)) as tmp:
                shutil.copyfile(cached / name, tmp)
    else:
        if config.source == "dbpedia":
            with tqdm(desc="reading dump", unit="B", unit_scale=True, disable=not config.progress) as bar:
                table, summary = build_dbpedia(
                    dump=config.dump, labels=config.labels, redirects=config.redirects, ontology=config.ontology,
                    templates=templates, seed=config.seed, per_bucket=config.per_bucket, balance=config.balance,
                    max_aliases=config.max_aliases, strict=config.strict, max_bad_lines=config.max_bad_lines,
                    progress=bar.update,
                )
        else:
            table, summary = build_embedded(templates=templates, seed=config.seed, per_bucket=config.per_bucket,
                                            balance=config.balance, max_aliases=config.max_aliases)
        if table.num_rows == 0:
            raise InputError(f"{config.dump or 'embedded graph'}: no question survived the selection; "
                             "see the skipped counts (templates, cleaning, balance)")
        summary["questions"] = table.num_rows
        summary["questions_per_bucket"] = {b: int(sum(1 for x in table.column("bucket").to_pylist() if x == b))
                                           for b in BUCKETS}
        write_parquet(run.file("questions.parquet"), table)
        write_json(run.file("summary.json"), summary)
        if config.source == "embedded":
            for name in OUTPUTS:
                with atomic_path(cached / name) as tmp:
                    shutil.copyfile(run.file(name), tmp)
    summary = read_summary(run.path)
    totals = {k: v for k, v in summary.items() if k not in ("relation_table", "bad_line_examples")}
    run.finish(list(OUTPUTS), summary=totals)
    return run.path


def read_summary(folder: str | Path) -> dict:
    import json

    return json.loads((Path(folder) / "summary.json").read_text())

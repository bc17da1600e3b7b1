"""DBpedia's ``mappingbased-objects`` dump by the head-to-tail method (study.md §1; ``knowpack.kg.dbpedia``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from knowpack.config import Config, option
from knowpack.kg.sources import BuildRequest, Source, register


@dataclass
class DbpediaOptions(Config):
    dump: Path = option(help="DBpedia mappingbased-objects dump (.ttl/.nt, plain, .bz2 or .gz)", metavar="FILE",
                        affects_results=False)
    labels: tuple[Path, ...] = option((), help="labels dump(s) for subject and answer names and aliases",
                                      repeat=True, metavar="FILE", affects_results=False)
    redirects: tuple[Path, ...] = option((), help="redirects dump(s): redirect titles become answer aliases",
                                         repeat=True, metavar="FILE", affects_results=False)
    ontology: Path | None = option(None, help="DBpedia ontology as N-Triples, for rdfs:domain/range", metavar="FILE",
                                   affects_results=False)
    strict: bool = option(False, help="stop at the first malformed line")
    max_bad_lines: int = option(1000, help="malformed lines tolerated before giving up", minimum=0)


def inputs(options: DbpediaOptions) -> dict[str, Path]:
    """The dumps, hashed into the run key (their paths are not)."""
    files = {"dump": options.dump}
    files.update({f"labels{i}": path for i, path in enumerate(options.labels)})
    files.update({f"redirects{i}": path for i, path in enumerate(options.redirects)})
    if options.ontology:
        files["ontology"] = options.ontology
    return files


def build(request: BuildRequest):
    from knowpack.kg.dbpedia import build_dbpedia

    config, options = request.config, request.options
    return build_dbpedia(
        dump=str(options.dump), labels=tuple(map(str, options.labels)), redirects=tuple(map(str, options.redirects)),
        ontology=str(options.ontology) if options.ontology else None, templates=request.templates, seed=config.seed,
        per_bucket=config.per_bucket, balance=config.balance, max_aliases=config.max_aliases, strict=options.strict,
        max_bad_lines=options.max_bad_lines, progress=request.progress,
    )


register(Source("dbpedia", "a DBpedia mappingbased-objects dump (needs --dump)", build, default_per_bucket=30,
                Options=DbpediaOptions, inputs=inputs))

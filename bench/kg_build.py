"""Benchmark: the DBpedia question build on a synthetic dump shaped like mappingbased-objects_lang=en.ttl.bz2.

    python bench/kg_build.py [--lines 22800000] [--workdir /tmp/knowpack-bench] [--naive-lines 500000]

The synthetic dump has the real one's shape: 22.8 M `<s> <p> <o> .` lines (bz2), ~8 M entities whose mention
counts are heavy-tailed (a few hubs like countries, millions of entities seen once or twice), ~600 relations with
Zipf-distributed frequencies (named after the real DBpedia ontology properties that have templates, then
`syntheticRelationN`), subjects grouped as in the real dump, percent-, \\u- and UTF-8 names, comment lines.
The whole build (`knowpack.kg.stage.run`, what `knowpack questions` runs) is timed (wall and CPU) with its peak RSS; a naive per-character
parser like the study's notebook is timed on a prefix of the same file and extrapolated linearly (it is O(lines)).
CPU seconds are reported beside wall time because the 2-core machine is shared: they show the work done, while
wall time also shows how much of the machine the run got (the load average is printed).
"""

from __future__ import annotations

import argparse
import bz2
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc

from knowpack.kg.stage import QuestionsConfig
from knowpack.kg.stage import run as build_questions
from knowpack.kg.ntriples import open_dump
from knowpack.kg.templates import load_templates

REAL_LINES = 22_800_000
REAL_ENTITIES = 8_000_000
RELATIONS = 600
RESOURCE = "<http://dbpedia.org/resource/"
ONTOLOGY = "<http://dbpedia.org/ontology/"
WORDS = ("Saint", "River", "John", "Maria", "North", "Lake", "Club", "Album", "Station", "Church", "Park",
         "Anna", "Peter", "Castle", "Bridge", "Mount", "Valley", "County", "Island", "Street", "Paul", "Louis")
SUFFIXES = ("", "", "", "", "_(film)", "_(album)", "%2C_Texas", "_F.C.", "_\\u00E9t\\u00E9", "_Caf\u00e9",
            "_(band)", "_%28disambiguation%29", "_S\u00e3o_Paulo", "_\\U0001F600")


def generate_dump(path: Path, lines: int, seed: int = 0) -> dict:
    """Write a bz2 N-Triples dump with ``lines`` triples; returns its shape."""
    rng = np.random.default_rng(seed)
    # The id range is 20 % above the target because heavy-tailed draws leave some ids unused (~8 M are drawn).
    entities = max(1000, int(1.2 * REAL_ENTITIES * lines / REAL_LINES))
    relation_names = list(load_templates("dbpedia"))[:RELATIONS]
    relation_names += [f"syntheticRelation{i}" for i in range(RELATIONS - len(relation_names))]
    # Popular relations are the ones with templates (as in the real dump, where the 150 templated relations hold
    # most triples); a Zipf law over ranks.
    weights = 1.0 / np.arange(1, RELATIONS + 1) ** 1.1
    relations = rng.choice(RELATIONS, size=lines, p=weights / weights.sum()).astype(np.int32)
    # Subjects: 60 % of the entities, each written in a run of lines (the dump is grouped by subject); objects
    # from all entities with a much heavier head (countries, years, genres are objects of millions of triples).
    subjects = np.sort((int(entities * 0.6) * rng.random(lines) ** 1.6).astype(np.int64))
    objects = (entities * rng.random(lines) ** 4.0).astype(np.int64)
    ids = np.arange(entities)
    names = pc.binary_join_element_wise(
        pa.array(np.array(WORDS)[ids % len(WORDS)]), "_", pc.cast(pa.array(ids), pa.string()),
        pa.array(np.array(SUFFIXES)[(ids // len(WORDS)) % len(SUFFIXES)]), "",
    )
    rel_array = pa.array(relation_names)
    step = 1_000_000
    with bz2.open(path, "wb", compresslevel=9) as out:
        out.write(b"# started 2022-12-01T00:00:00Z\n")
        for start in range(0, lines, step):
            stop = min(lines, start + step)
            text = pc.binary_join_element_wise(
                RESOURCE, pc.take(names, pa.array(subjects[start:stop])),
                "> ", ONTOLOGY, pc.take(rel_array, pa.array(relations[start:stop])),
                "> ", RESOURCE, pc.take(names, pa.array(objects[start:stop])), "> .\n", "",
            )
            if isinstance(text, pa.ChunkedArray):  # large inputs come back chunked
                text = text.combine_chunks()
            offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset: text.offset + len(text) + 1]
            out.write(memoryview(text.buffers()[2])[offsets[0]: offsets[-1]])
        out.write(b"# completed 2022-12-01T01:00:00Z\n")
    distinct = len(np.union1d(np.unique(subjects), np.unique(objects)))
    return {"lines": lines, "entities": distinct, "relations": RELATIONS, "bytes": path.stat().st_size}


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads (the build decompresses in a second thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def naive_parse(path: Path, max_lines: int) -> tuple[int, float, float]:
    """The notebook's approach: walk each line character by character, collecting the terms between < and >."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    count = 0
    triples = []
    with open_dump(path) as handle:
        for raw in handle:
            line = raw.decode("utf-8")
            if line.startswith("#"):
                continue
            terms, current, inside = [], "", False
            for char in line:
                if char == "<":
                    inside, current = True, ""
                elif char == ">":
                    inside = False
                    terms.append(current)
                elif inside:
                    current += char
            if len(terms) == 3:
                triples.append((terms[0].rsplit("/", 1)[-1], terms[1].rsplit("/", 1)[-1], terms[2].rsplit("/", 1)[-1]))
            count += 1
            if count >= max_lines:
                break
    return count, time.perf_counter() - started, cpu_seconds() - cpu_started


class PeakRss:
    """Samples this process's RSS (the build runs in it) every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            self._stop.wait(0.2)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=REAL_LINES)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/knowpack-bench"))
    parser.add_argument("--naive-lines", type=int, default=500_000, help="prefix the naive parser is timed on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    dump = args.workdir / f"synthetic-{args.lines}.nt.bz2"
    if not dump.is_file():
        started = time.perf_counter()
        partial = dump.with_suffix(".partial")
        shape = generate_dump(partial, args.lines, args.seed)
        partial.rename(dump)
        print(f"generated {dump} in {time.perf_counter() - started:.0f} s: {shape}", flush=True)

    out = args.workdir / f"questions-{args.lines}"
    config = QuestionsConfig(source="dbpedia", options={"dump": str(dump)}, out=out, overwrite=True, progress=False)
    load_before = os.getloadavg()[0]
    with PeakRss() as rss:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        build_questions(config)
        build_seconds, build_cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    load_after = os.getloadavg()[0]
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    summary = manifest["summary"]
    naive_lines, naive_seconds, naive_cpu = naive_parse(dump, min(args.naive_lines, args.lines))
    scale = summary["lines"] / naive_lines
    naive_full, naive_full_cpu = naive_seconds * scale, naive_cpu * scale
    rows = [
        ("dump", f"{summary['lines']:,} lines, {summary['entities']:,} entities, {summary['relations']} relations, "
                 f"{dump.stat().st_size / 2**20:,.0f} MiB bz2"),
        ("questions written", f"{summary['questions']:,}"),
        ("knowpack build, wall", f"{build_seconds:,.1f} s ({summary['lines'] / build_seconds / 1e6:.2f} M lines/s)"),
        ("knowpack build, CPU (user+sys, all threads)", f"{build_cpu:,.1f} s"),
        ("knowpack build, peak RSS", f"{rss.peak / 2**30:.2f} GiB"),
        ("naive per-character parse, one pass, wall",
         f"{naive_full:,.0f} s (measured {naive_seconds:.1f} s on the first {naive_lines:,} lines, extrapolated)"),
        ("naive per-character parse, one pass, CPU", f"{naive_full_cpu:,.0f} s (extrapolated the same way)"),
        ("speed-up over one naive pass, wall / CPU", f"{naive_full / build_seconds:.1f}x / {naive_full_cpu / build_cpu:.1f}x"),
        ("speed-up over the notebook's 3 naive passes, wall / CPU",
         f"{3 * naive_full / build_seconds:.1f}x / {3 * naive_full_cpu / build_cpu:.1f}x"),
        ("machine", f"{os.cpu_count()} cores, load average {load_before:.1f} at start, {load_after:.1f} at end of build"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

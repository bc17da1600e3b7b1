"""A user's own facts: a JSON-lines, CSV or Parquet file of questions and answers, checked row by row.

Columns: ``question`` and ``answer`` (required, non-empty strings); optional ``aliases`` and ``paraphrases`` (lists
of strings; in CSV a JSON array or values separated by ``|``), ``subject``, ``relation``, ``relation_domain`` and
``id`` (strings). Every row is checked before anything else happens: a row that is not JSON, lacks an answer,
repeats an earlier question or holds a value of the wrong type is a one-line error naming the file, the row
(1-based, as an editor counts lines; CSV rows after the header) and the problem. With ``skip_bad_rows`` such rows
are dropped and counted instead. The result has the questions.parquet schema (``kg.folder``), so every stage
takes it as it takes a built question set.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from knowpack.errors import InputError
from knowpack.kg.folder import QUESTIONS_SCHEMA
from knowpack.text import normalize

LIST_COLUMNS = ("aliases", "paraphrases")
TEXT_COLUMNS = ("id", "subject", "relation", "relation_domain")
KNOWN_COLUMNS = ("question", "answer", *LIST_COLUMNS, *TEXT_COLUMNS)
SUFFIXES = (".jsonl", ".csv", ".parquet", ".txt")


@dataclass
class FactsFile:
    table: pa.Table
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row, problem) of the rows dropped


class BadRow(ValueError):
    pass


def read_facts(path: str | Path, *, skip_bad_rows: bool = False, need_answer: bool = True) -> FactsFile:
    """The facts in ``path`` as a questions table; ``need_answer`` False accepts rows without one (a ``.txt``
    of questions to paraphrase)."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: file not found")
    if source.suffix.lower() not in SUFFIXES:
        raise InputError(f"{source}: expected a .jsonl, .csv, .parquet or .txt file of facts")
    rows, skipped, seen = [], [], {}
    for number, record in _records(source):
        try:
            row = _row(record, need_answer)
            key = normalize(row["question"])
            if key in seen:
                raise BadRow(f"repeats the question of row {seen[key]}")
            seen[key] = number
            rows.append(row)
        except BadRow as err:
            if not skip_bad_rows:
                raise InputError(f"{source}: row {number}: {err}") from None
            skipped.append((number, str(err)))
    if not rows:
        raise InputError(f"{source}: no usable facts" + (f" ({len(skipped)} bad rows skipped)" if skipped else ""))
    ids = [row["id"] for row in rows]
    repeated = next((i for i in ids if ids.count(i) > 1), None) if len(set(ids)) < len(ids) else None
    if repeated is not None:
        raise InputError(f"{source}: id {repeated!r} is given to two facts")
    return FactsFile(pa.Table.from_pylist(rows, schema=QUESTIONS_SCHEMA), skipped)


def _records(source: Path):
    """(row number, record) pairs; a record is a dict of raw values, or a BadRow to report."""
    suffix = source.suffix.lower()
    if suffix == ".parquet":
        from knowpack.runfolder import read_parquet

        table = read_parquet(source)
        unknown = [c for c in table.column_names if c not in KNOWN_COLUMNS]
        if unknown:
            raise InputError(f"{source}: unknown column {unknown[0]!r} (known: {', '.join(KNOWN_COLUMNS)})")
        for number, record in enumerate(table.to_pylist(), 1):
            yield number, record
        return
    try:
        text = source.read_text("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{source}: not UTF-8 text") from err
    if suffix == ".txt":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield number, {"question": line.strip()}
        return
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        unknown = [c for c in reader.fieldnames or () if c not in KNOWN_COLUMNS]
        if unknown:
            raise InputError(f"{source}: unknown column {unknown[0]!r} (known: {', '.join(KNOWN_COLUMNS)})")
        for number, record in enumerate(reader, 2):
            yield number, {k: _csv_list(v) if k in LIST_COLUMNS else v for k, v in record.items() if v not in (None, "")}
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield number, BadRow(f"not JSON ({err.msg})")
            continue
        yield number, record


def _csv_list(value: str) -> list[str] | str:
    value = value.strip()
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        return parsed
    return [part.strip() for part in value.split("|") if part.strip()]


def _row(record: Any, need_answer: bool) -> dict[str, Any]:
    if isinstance(record, BadRow):
        raise record
    if not isinstance(record, dict):
        raise BadRow("not an object with question and answer")
    unknown = [k for k in record if k not in KNOWN_COLUMNS]
    if unknown:
        raise BadRow(f"unknown field {unknown[0]!r} (known: {', '.join(KNOWN_COLUMNS)})")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadRow("no question" if question in (None, "") else f"question must be text, not {question!r}")
    answer = record.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        if need_answer:
            raise BadRow("missing or empty answer")
        answer = ""
    if not isinstance(answer, str):
        raise BadRow(f"answer must be text, not {type(answer).__name__} {answer!r} (quote numbers: \"1912\")")
    lists = {}
    for column in LIST_COLUMNS:
        value = record.get(column) or []
        if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadRow(f"{column} must be a list of strings, not {value!r}")
        lists[column] = [v.strip() for v in value if v.strip()]
    texts = {}
    for column in TEXT_COLUMNS:
        value = record.get(column)
        if value is not None and not isinstance(value, str):
            raise BadRow(f"{column} must be text, not {value!r}")
        texts[column] = (value or "").strip()
    aliases = list(dict.fromkeys([answer.strip(), *lists["aliases"]] if answer.strip() else lists["aliases"]))
    relation = texts["relation"] or "custom"
    digest = hashlib.sha256(question.strip().encode()).hexdigest()[:12]
    return {
        "id": texts["id"] or f"{relation}/{digest}", "subject": texts["subject"], "relation": relation,
        "object": answer.strip(), "question": question.strip(), "answer": answer.strip(), "aliases": aliases,
        "bucket": "", "popularity": 0, "relation_domain": texts["relation_domain"] or "undefined",
        "template_id": "", "paraphrases": lists["paraphrases"],
    }

"""A question set: ``questions.parquet`` (the contract between the questions stage and every later one) and the
build summary, read only through :class:`QuestionSet` / :func:`read_questions`.

A question set is a questions-stage (or paraphrase-stage) run folder, or a ``questions.parquet`` the user made
(the same schema, docs/architecture.md). Either way the table is checked by type before anything slow starts:
string columns must hold strings, ``aliases`` and ``paraphrases`` lists of strings (a plain string is refused,
never split into characters), ids unique and non-empty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from knowpack.errors import InputError
from knowpack.runfolder import StageFolder, read_manifest, read_parquet

QUESTIONS_FILE = "questions.parquet"
SUMMARY_FILE = "summary.json"
BUCKETS = ("head", "torso", "tail")
QUESTIONS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("relation", pa.string(), nullable=False),
        pa.field("object", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("aliases", pa.list_(pa.string()), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("popularity", pa.int64(), nullable=False),
        pa.field("relation_domain", pa.string(), nullable=False),
        pa.field("template_id", pa.string(), nullable=False),
        pa.field("paraphrases", pa.list_(pa.string()), nullable=False),
    ]
)


class QuestionSet(StageFolder):
    """A questions or paraphrase run folder."""

    stage = "questions"
    command = "questions"
    what = "question set folder"

    def summary(self) -> dict[str, Any]:
        return json.loads(self.file(SUMMARY_FILE).read_text()) if self.file(SUMMARY_FILE).is_file() else {}


class ParaphrasedSet(QuestionSet):
    stage = "paraphrase"
    command = "paraphrase"


def questions_file(path: str | Path) -> Path:
    """The questions.parquet of a question set given as a run folder or as the file itself. A run folder is
    checked (finished, outputs unchanged) on the way."""
    path = Path(path)
    if path.is_dir():
        stage = read_manifest(path).get("stage")
        folder_class = {"questions": QuestionSet, "paraphrase": ParaphrasedSet}.get(stage)
        if folder_class is None:
            raise InputError(f"{path}: holds a {stage} run, not a question set (questions or paraphrase)")
        return folder_class(path).file(QUESTIONS_FILE)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    return path


def read_questions(path: str | Path, required: tuple[str, ...] = ("id", "question", "aliases")) -> pa.Table:
    """The question set at ``path`` (folder or file), its columns checked by type; ``required`` must be present."""
    source = questions_file(path)
    table = read_parquet(source)
    check_questions(table, source, required)
    return table


def _example(table: pa.Table, column: str, row: int) -> str:
    value = table.column(column)[row].as_py()
    return f"row {row}: {value!r}"[:160]


def check_questions(table: pa.Table, source: Path, required: tuple[str, ...]) -> None:
    """One-line errors naming the file, the column and an example row for anything that breaks the schema."""
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}")
    if table.num_rows == 0:
        raise InputError(f"{source}: holds no questions")
    for field in QUESTIONS_SCHEMA:
        if field.name not in table.column_names:
            continue
        column = table.column(field.name)
        expected = field.type
        actual = column.type
        ok = actual == expected or (pa.types.is_large_string(actual) and pa.types.is_string(expected)) or (
            pa.types.is_list(expected) and (pa.types.is_list(actual) or pa.types.is_large_list(actual))
            and (pa.types.is_string(actual.value_type) or pa.types.is_large_string(actual.value_type)
                 or pa.types.is_null(actual.value_type))  # only empty lists (pandas writes them so)
        ) or (pa.types.is_integer(actual) and pa.types.is_integer(expected))
        if not ok:
            what = "a list of strings" if pa.types.is_list(expected) else str(expected)
            raise InputError(f"{source}: column {field.name} must hold {what}, not {actual} "
                             f"({_example(table, field.name, 0)})")
        nulls = column.null_count
        if nulls:
            row = pc.index(pc.is_null(column), True).as_py()
            raise InputError(f"{source}: column {field.name} has empty (null) values (row {row})")
        if pa.types.is_list(expected):
            flat = pc.list_flatten(column)
            if flat.null_count:
                raise InputError(f"{source}: column {field.name} holds null items")
    if "id" in table.column_names:
        ids = table.column("id")
        empty = pc.equal(pc.utf8_trim_whitespace(ids), "")
        if pc.any(empty).as_py():
            raise InputError(f"{source}: column id has an empty id (row {pc.index(empty, True).as_py()})")
        counts = pc.value_counts(ids)
        repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
        if len(repeated):
            raise InputError(f"{source}: question id {repeated[0].as_py()!r} occurs more than once")
    if "question" in table.column_names:
        empty = pc.equal(pc.utf8_trim_whitespace(table.column("question")), "")
        if pc.any(empty).as_py():
            row = pc.index(empty, True).as_py()
            name = table.column("id")[row].as_py() if "id" in table.column_names else f"in row {row}"
            raise InputError(f"{source}: question {name!r} has an empty question text")

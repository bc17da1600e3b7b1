"""A resumable store of raw generations, keyed so that answers can never be read under the wrong settings.

Layout: ``ROOT/<scope>/scope.json`` + ``ROOT/<scope>/chunk-*.parquet``. The *scope* is a hash of everything that
changes an answer besides the prompt text: model fingerprint, adapter fingerprint, dtype, prompt settings
(policy, shots, seed, chat format, exemplar pool) and decoding settings. Within a scope each row carries the
question id, prompt id, sample id and ``prompt_sha`` (hash of the exact prompt text, which holds the question
and its exemplars), so a question whose text changed under the same id is regenerated, not reused.

Chunks are written atomically and always hold every sample of a (question, prompt), so an interrupted run
resumes at the last written chunk. Reading streams one chunk at a time: memory stays bounded for 100k
questions × 10 prompts × 17 generations.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from knowpack.errors import InputError
from knowpack.runfolder import stable_hash, write_json, write_parquet

STORE_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("prompt_id", pa.int16()),
        ("sample_id", pa.int16()),
        ("prompt_sha", pa.string()),
        ("generated", pa.string()),
        ("n_tokens", pa.int16()),
        ("stopped", pa.bool_()),
    ]
)
SCOPE_FILE = "scope.json"


def item_key(question_id: str, prompt_id: int, prompt_sha: str) -> int:
    """A 64-bit key of one (question, prompt, prompt text): compact enough to hold millions in a set."""
    digest = hashlib.blake2b(f"{question_id}\x1f{prompt_id}\x1f{prompt_sha}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class ResponseStore:
    """Raw generations of one scope (model × adapter × prompt settings × decoding)."""

    def __init__(self, root: str | os.PathLike, scope: dict[str, Any], chunk_rows: int = 20_000,
                 flush_seconds: float = 120.0):
        self.scope = json.loads(json.dumps(scope, sort_keys=True))
        self.key = stable_hash(self.scope, length=24)
        self.dir = Path(root) / self.key
        self.chunk_rows = chunk_rows
        self.flush_seconds = flush_seconds
        self._buffer: dict[str, list] = {name: [] for name in STORE_SCHEMA.names}
        self._last_flush = time.monotonic()
        scope_path = self.dir / SCOPE_FILE
        if scope_path.is_file() and json.loads(scope_path.read_text()) != self.scope:
            raise InputError(f"{scope_path}: holds another scope under the same hash; remove this folder")

    def chunks(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.parquet"))

    def done_keys(self) -> set[int]:
        """Keys of every (question, prompt, prompt text) already stored (all its samples are in one chunk)."""
        done: set[int] = set()
        for table in self.iter_tables(["question_id", "prompt_id", "prompt_sha", "sample_id"]):
            cols = table.to_pydict()
            for qid, pid, sha, sample in zip(cols["question_id"], cols["prompt_id"], cols["prompt_sha"],
                                             cols["sample_id"]):
                if sample == 0:
                    done.add(item_key(qid, pid, sha))
        return done

    def iter_tables(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        for path in self.chunks():
            try:
                yield pq.read_table(path, columns=columns)
            except (pa.ArrowInvalid, OSError) as err:
                raise InputError(f"{path}: unreadable response chunk ({err}); delete it to regenerate") from err

    def add(self, question_id: str, prompt_id: int, prompt_sha: str,
            generations: list[tuple[str, int, bool]]) -> None:
        """Buffer every generation of one (question, prompt): [(text, n_tokens, stopped)], greedy first."""
        for sample_id, (text, n_tokens, stopped) in enumerate(generations):
            self._buffer["question_id"].append(question_id)
            self._buffer["prompt_id"].append(prompt_id)
            self._buffer["sample_id"].append(sample_id)
            self._buffer["prompt_sha"].append(prompt_sha)
            self._buffer["generated"].append(text)
            self._buffer["n_tokens"].append(n_tokens)
            self._buffer["stopped"].append(stopped)
        if (len(self._buffer["question_id"]) >= self.chunk_rows
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one chunk (atomic: a chunk is either whole or absent)."""
        self._last_flush = time.monotonic()
        if not self._buffer["question_id"]:
            return
        if not (self.dir / SCOPE_FILE).is_file():  # written with the first chunk: an unused store holds no file
            write_json(self.dir / SCOPE_FILE, self.scope)
        table = pa.Table.from_pydict(self._buffer, schema=STORE_SCHEMA)
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}.parquet"
        write_parquet(self.dir / name, table)
        self._buffer = {name: [] for name in STORE_SCHEMA.names}

"""Run folders: atomic outputs, a manifest for traceability, and resume/refuse rules.

Every stage writes into one folder. ``manifest.json`` records the stage, its config, the versions of the
libraries that shape results and a sha256 of every input, so a number can be traced to what produced it and a
cache is keyed by everything that changes it. The manifest is written when the run opens and rewritten with
``"complete": true`` and the hashes of the outputs as the very last step: a folder whose manifest is not
complete is never read as finished work.

Opening a folder that holds a run with the same key (stage + config + inputs) resumes it; one with another
key is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from knowpack.errors import InputError, KnowpackError, RunConflictError

MANIFEST = "manifest.json"
# Metadata for config fields that do not change results (batch size, progress bars): kept out of the run key.
NOT_RESULT = {"affects_results": False}
VERSIONED_PACKAGES = ("knowpack", "torch", "transformers", "peft", "datasets", "pyarrow", "lm_eval", "gguf")


# ---------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it over ``path``, else delete it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == 28:  # ENOSPC
            raise KnowpackError(f"{target}: no space left on the device; nothing was overwritten") from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def write_parquet(path: str | os.PathLike, table: pa.Table | Any, schema: pa.Schema | None = None) -> None:
    """Write a pyarrow Table or pandas DataFrame atomically, cast to ``schema`` when given."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
    elif schema is not None:
        table = table.select(schema.names).cast(schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike, required: pa.Schema | None = None) -> pa.Table:
    """Read a table; name the file and the missing columns when it does not carry ``required``'s fields."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: file not found")
    try:
        table = pq.read_table(source)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{source}: not a readable Parquet file ({err})") from err
    if required is not None:
        missing = [name for name in required.names if name not in table.column_names]
        if missing:
            raise InputError(f"{source}: missing column(s) {', '.join(missing)}")
        table = table.select(required.names)
    return table


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


# ---------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def input_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file; for a run folder, of its complete manifest (which holds its outputs' hashes)."""
    source = Path(path)
    if source.is_dir():
        manifest = source / MANIFEST
        if not manifest.is_file():
            raise InputError(f"{source}: not a knowpack run folder (no {MANIFEST})")
        if not json.loads(manifest.read_text()).get("complete"):
            raise InputError(f"{source}: the run there is not complete; finish or resume it first")
        return sha256_file(manifest)
    if not source.exists():
        raise InputError(f"{source}: file not found")
    return sha256_file(source)


def config_dict(config: Any) -> dict[str, Any]:
    """A config's fields that change results: fields with ``metadata={"affects_results": False}`` are left out."""
    out = {}
    for field in dataclasses.fields(config):
        if field.metadata.get("affects_results", True):
            value = getattr(config, field.name)
            out[field.name] = config_dict(value) if dataclasses.is_dataclass(value) else value
    return json.loads(json.dumps(out, default=_json_default))


def stable_hash(obj: Any, length: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# ---------------------------------------------------------------- run folders


@dataclasses.dataclass
class RunFolder:
    """An open run folder. ``complete`` tells whether the stage already finished here with the same key."""

    path: Path
    stage: str
    key: str
    manifest: dict[str, Any]

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def file(self, name: str) -> Path:
        """A path inside the run folder; refuses names that would escape it."""
        target = (self.path / name).resolve()
        if self.path.resolve() not in target.parents and target != self.path.resolve():
            raise InputError(f"{name}: output path escapes the run folder {self.path}")
        return target

    def note(self, **fields: Any) -> None:
        """Add facts to the manifest (trained fact ids, timings, counts) and save it."""
        self.manifest.update(fields)
        write_json(self.path / MANIFEST, self.manifest)

    def finish(self, outputs: list[str], **fields: Any) -> None:
        """Hash the outputs and mark the run complete: always the last write of a stage."""
        hashes = {name: sha256_file(self.file(name)) for name in outputs}
        self.note(outputs=hashes, complete=True, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"), **fields)


def open_run(
    out: str | os.PathLike,
    stage: str,
    config: Any,
    inputs: Mapping[str, str | os.PathLike] | None = None,
    *,
    extra_key: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> RunFolder:
    """Open (create, resume or refuse) the run folder ``out`` for ``stage``.

    The key hashes the stage, the result-affecting config, the inputs' sha256 and ``extra_key`` (e.g. a model
    fingerprint). Same key: the folder is resumed (or reported complete). Other key: refused unless ``overwrite``.
    """
    path = Path(out)
    inputs_block = {
        name: {"path": str(Path(p)), "sha256": input_fingerprint(p)} for name, p in (inputs or {}).items()
    }
    config_block = config_dict(config) if dataclasses.is_dataclass(config) else dict(config)
    key = stable_hash(
        {
            "stage": stage,
            "config": config_block,
            "inputs": {k: v["sha256"] for k, v in inputs_block.items()},
            "extra": dict(extra_key or {}),
        }
    )
    manifest_path = path / MANIFEST
    if manifest_path.is_file():
        try:
            existing = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            existing = {}
        if existing.get("key") == key and not overwrite:
            return RunFolder(path, stage, key, existing)
        if not overwrite:
            raise RunConflictError(
                f"{path}: holds a {existing.get('stage', 'different')} run with another config or inputs; "
                "choose another --out or pass --overwrite"
            )
        _clear(path)
    elif path.exists() and any(not is_temp_leftover(child) for child in path.iterdir()) and not overwrite:
        raise RunConflictError(f"{path}: folder is not empty and holds no knowpack run; pass --overwrite to reuse it")
    path.mkdir(parents=True, exist_ok=True)
    manifest = {
        "stage": stage,
        "key": key,
        "config": config_block,
        "inputs": inputs_block,
        "extra_key": dict(extra_key or {}),
        "versions": library_versions(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "complete": False,
    }
    write_json(manifest_path, manifest)
    return RunFolder(path, stage, key, manifest)


def is_temp_leftover(path: Path) -> bool:
    """A temp file of :func:`atomic_path` that a killed process left: never finished work, safe to ignore."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()


def _clear(path: Path) -> None:
    """Remove a previous run's files (only inside ``path``), manifest first so it can never look complete."""
    import shutil

    (path / MANIFEST).unlink(missing_ok=True)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()

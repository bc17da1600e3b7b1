"""Run folders: atomic outputs, a manifest for traceability, resume/refuse rules, and typed readers.

Every stage writes into one folder. ``manifest.json`` records the stage, its config, the versions of the
libraries that shape results and a sha256 of every input, so a number can be traced to what produced it and a
cache is keyed by everything that changes it. The manifest is written when the run opens and rewritten with
``"complete": true`` and the hashes of the outputs as the very last step: a folder whose manifest is not
complete is never read as finished work, and a complete folder whose outputs no longer match their hashes is
never trusted (it is redone on resume and refused as an input).

Opening a folder that holds a run with the same key (stage + config + inputs) resumes it; one with another
key is refused unless ``overwrite=True`` — except a run that failed before writing anything, which a corrected
command may replace.

Input paths are stored relative to the folder (and absolute, as a fallback) with their sha256, so a folder keeps
working when it is moved together with its inputs (a sweep folder) or read from another working directory.
Each stage reads its outputs through one :class:`StageFolder` subclass, the only code that opens those files.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from knowpack.errors import InputError, KnowpackError, RunConflictError

MANIFEST = "manifest.json"
LOCK_FILE = ".knowpack.lock"  # held by the command writing a sweep or capacity folder (see ``exclusive``)
VERSIONED_PACKAGES = ("knowpack", "torch", "transformers", "peft", "datasets", "pyarrow", "lm_eval", "gguf")


# ---------------------------------------------------------------- atomic writes and OS errors


def os_error(err: OSError, path: str | os.PathLike, kept: str = "nothing finished was lost") -> KnowpackError:
    """One line naming the path for an OS error: full disk, no permission, not a directory, read-only system."""
    reasons = {errno.ENOSPC: "no space left on the device", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
               errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EISDIR: "is a folder, not a file",
               errno.EDQUOT: "disk quota exceeded", errno.ENAMETOOLONG: "name too long"}
    reason = reasons.get(err.errno, err.strerror or type(err).__name__)
    return KnowpackError(f"{path}: {reason}; {kept}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it over ``path``, else delete it."""
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise os_error(err, target, "nothing was overwritten") from err
    except BaseException:
        if tmp is not None:
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
        raise InputError(f"{source}: file not found" if not source.is_dir() else f"{source}: a folder, not a file")
    try:
        table = pq.read_table(source)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{source}: not a readable Parquet file ({str(err).splitlines()[0][:200]})") from err
    if required is not None:
        missing = [name for name in required.names if name not in table.column_names]
        if missing:
            raise InputError(f"{source}: missing column(s) {', '.join(missing)}")
        table = table.select(required.names)
    return table


def _json_default(value: Any) -> Any:
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
        manifest = read_manifest(source)
        if not manifest.get("complete"):
            raise InputError(f"{source}: the run there is not complete; finish or resume it first")
        return sha256_file(source / MANIFEST)
    if not source.exists():
        raise InputError(f"{source}: file not found")
    return sha256_file(source)


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


# ---------------------------------------------------------------- manifests


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """A folder's manifest, or a one-line error saying why it cannot be read."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: folder not found" if not Path(folder).exists() else f"{folder}: not a folder")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{folder}: not a knowpack run folder (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err}); the folder's run cannot be trusted") from err
    except OSError as err:
        raise os_error(err, path) from err
    if not isinstance(manifest, dict) or "stage" not in manifest:
        raise InputError(f"{path}: not a knowpack manifest (no stage)")
    return manifest


def is_complete(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a finished run (any unreadable manifest counts as not finished)."""
    try:
        return bool(read_manifest(folder).get("complete"))
    except KnowpackError:
        return False


def damaged_outputs(folder: Path, manifest: Mapping[str, Any]) -> list[str]:
    """Outputs whose file is gone or no longer has the sha256 the manifest recorded."""
    damaged = []
    for name, digest in (manifest.get("outputs") or {}).items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            damaged.append(name)
    return damaged


def stored_path(folder: Path, path: str | os.PathLike) -> dict[str, str]:
    """How a manifest records a path: relative to the folder (travels with it) and absolute (a fallback)."""
    absolute = Path(path).resolve()
    return {"path": os.path.relpath(absolute, folder.resolve()), "absolute": str(absolute)}


def resolve_stored(folder: Path, entry: Mapping[str, Any], what: str) -> Path:
    """The file or folder a manifest entry names: relative to the folder first, then the absolute path; the one
    whose sha256 is the recorded one (a moved folder finds its inputs again, a changed input is refused)."""
    candidates = []
    for raw in (entry.get("path"), entry.get("absolute")):
        if raw:
            candidate = Path(raw) if Path(raw).is_absolute() else Path(os.path.normpath(folder / raw))
            if candidate not in candidates:
                candidates.append(candidate)
    changed = None
    for candidate in candidates:
        if candidate.exists():
            if "sha256" not in entry or input_fingerprint(candidate) == entry["sha256"]:
                return candidate
            changed = candidate
    if changed is not None:
        raise InputError(f"{changed}: changed since {folder} was made from it (its {what}; sha256 differs)")
    shown = entry.get("absolute") or entry.get("path")
    raise InputError(f"{folder}: its {what} {shown} is gone (looked beside the folder and at the absolute path)")


# ---------------------------------------------------------------- run folders being written


class RunFolder:
    """An open run folder. ``complete`` tells whether the stage already finished here with the same key."""

    def __init__(self, path: Path, stage: str, key: str, manifest: dict[str, Any]):
        self.path, self.stage, self.key, self.manifest = path, stage, key, manifest

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

    def stored(self, path: str | os.PathLike) -> dict[str, str]:
        return stored_path(self.path, path)

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
    fingerprint). Same key: the folder is resumed (or reported complete; damaged outputs are redone). Other key:
    refused unless ``overwrite``, or unless the other run failed before writing anything.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is a file, not a folder; choose another --out")
    inputs_block = {name: {**stored_path(path, p), "sha256": input_fingerprint(p)} for name, p in (inputs or {}).items()}
    config_block = config.result_dict() if hasattr(config, "result_dict") else json.loads(
        json.dumps(dict(config), default=_json_default))
    input_hashes = {k: v["sha256"] for k, v in inputs_block.items()}
    key = run_key(stage, config_block, input_hashes, extra_key)
    manifest_path = path / MANIFEST
    if manifest_path.is_file():
        try:
            existing = read_manifest(path)
        except InputError:
            existing = {}
        if not overwrite and existing.get("key") != key and made_before_new_options(
                existing, config, config_block, lambda block: run_key(stage, block, input_hashes, extra_key)):
            # the same run: today's key from its next write on (a finished folder's manifest stays as it is, since
            # the folders made from it know it by its sha256)
            existing.update(key=key, config=config_block)
        if existing.get("key") == key and not overwrite:
            if existing.get("complete") and damaged_outputs(path, existing):
                existing["complete"] = False  # redo: the stage resumes from whatever units of work are intact
                write_json(manifest_path, existing)
            existing["inputs"] = inputs_block  # where the inputs are now (the folder may have moved)
            return RunFolder(path, stage, key, existing)
        if not overwrite and (existing.get("complete") or holds_work(path)):
            made, now = existing.get("extra_key", {}), dict(extra_key or {})
            changed = "".join(f"; its {name} was {made.get(name, 'not set')}, now {now.get(name, 'not set')}"
                              for name in sorted(made.keys() | now.keys()) if made.get(name) != now.get(name))
            raise RunConflictError(
                f"{path}: holds a {existing.get('stage', 'different')} run with another config or inputs{changed}; "
                "choose another --out or pass --overwrite"
            )
        _clear(path)
    elif path.exists() and holds_work(path) and not overwrite:
        raise RunConflictError(f"{path}: folder is not empty and holds no knowpack run; pass --overwrite to reuse it")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise os_error(err, path) from err
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


def run_key(stage: str, config_block: Mapping[str, Any], input_hashes: Mapping[str, str],
            extra_key: Mapping[str, Any] | None) -> str:
    return stable_hash({"stage": stage, "config": dict(config_block), "inputs": dict(input_hashes),
                        "extra": dict(extra_key or {})})


def made_before_new_options(existing: Mapping[str, Any], config: Any, config_block: Mapping[str, Any], key_of) -> bool:
    """Whether a folder was made by an earlier knowpack with this same config, before options that are at their
    defaults here existed: adding an option to a stage must not orphan the run folders users already have."""
    stored = existing.get("config")
    if not isinstance(stored, dict) or not hasattr(config, "result_defaults"):
        return False
    new = set(config_block) - set(stored)
    defaults = config.result_defaults()
    if not new or any(name not in defaults or defaults[name] != config_block[name] for name in new):
        return False
    return existing.get("key") == key_of({k: v for k, v in config_block.items() if k in stored})


def holds_work(path: Path) -> bool:
    """Whether a folder holds any file besides a manifest and the temp files a killed process leaves."""
    for child in path.rglob("*"):
        if child.is_file() and child not in (path / MANIFEST, path / LOCK_FILE) and not is_temp_leftover(child):
            return True
    return False


def is_temp_leftover(path: Path) -> bool:
    """A temp file of :func:`atomic_path` that a killed process left: never finished work, safe to ignore."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()


def _clear(path: Path) -> None:
    """Remove a previous run's files (only inside ``path``), manifest first so it can never look complete."""
    (path / MANIFEST).unlink(missing_ok=True)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        elif child.name != LOCK_FILE:  # held by this command: a new file would not be locked
            child.unlink()


_HELD: set[Path] = set()  # folders this process holds


@contextmanager
def exclusive(out: str | os.PathLike) -> Iterator[None]:
    """Hold the folder ``out`` while the block runs, so that a second command on it (another terminal, a job
    started twice) stops with one line instead of writing the same runs at the same time. The lock is the
    kernel's (``flock`` on ``LOCK_FILE``): a killed process drops it, and nothing stale is left to clear by hand.
    A hold nested in one that this process has already (a capacity search's sweep) passes through. Without
    ``fcntl`` (Windows), or where ``out`` is a file (``open_run`` says so, in its own words): no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    folder = Path(out).resolve()
    if fcntl is None or folder in _HELD or (folder.exists() and not folder.is_dir()):
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise os_error(err, folder) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunConflictError(f"{out}: another knowpack command is writing this folder; wait for it to end "
                               "(it resumes from here if stopped) or choose another --out") from None
    _HELD.add(folder)
    try:
        yield
    finally:
        _HELD.discard(folder)
        os.close(fd)  # closing the descriptor releases the lock


# ---------------------------------------------------------------- finished folders, read through their stage's class


class StageFolder:
    """A complete run folder of one stage, opened for reading. Subclasses own the file names and schemas of their
    stage's outputs; nothing else opens those files.

    Opening checks that the folder holds a finished run of the right stage and, with ``verify``, that its outputs
    still have the sha256 the manifest recorded."""

    stage: ClassVar[str]
    command: ClassVar[str]  # the command that makes such folders, for error messages
    what: ClassVar[str]  # what such a folder is called in messages

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        self.path = Path(path)
        if self.path.is_dir() and not (self.path / MANIFEST).is_file():
            raise InputError(f"{self.path}: not a {self.what} (no {MANIFEST}); make one with `knowpack {self.command}`")
        self.manifest = read_manifest(self.path)
        made_by = self.manifest.get("stage")
        if made_by != self.stage:
            raise InputError(f"{self.path}: holds a {made_by} run, not a {self.stage} run (made by `knowpack "
                             f"{self.command}`)")
        if not self.manifest.get("complete"):
            raise InputError(f"{self.path}: the {self.stage} run there is not complete; run the same "
                             f"`knowpack {self.command}` command again to finish it")
        if verify:
            damaged = damaged_outputs(self.path, self.manifest)
            if damaged:
                raise InputError(f"{self.path / damaged[0]}: changed or damaged since the run finished (sha256 "
                                 f"differs from its manifest); run `knowpack {self.command}` for it again to redo it")

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest.get("config", {}))

    def file(self, name: str) -> Path:
        return self.path / name

    def input_path(self, name: str) -> Path:
        """An input the run was made from, found again relative to the folder or at its absolute path."""
        entry = self.manifest.get("inputs", {}).get(name)
        if entry is None:
            raise InputError(f"{self.path}: its manifest names no {name} input")
        return resolve_stored(self.path, entry, name)

    @classmethod
    def is_one(cls, path: str | os.PathLike) -> bool:
        """Whether ``path`` is a run folder of this stage, finished or not."""
        try:
            return read_manifest(path).get("stage") == cls.stage
        except KnowpackError:
            return False

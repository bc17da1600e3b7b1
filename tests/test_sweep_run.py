"""Sweeps end to end on the tiny Llama with the real train and evaluate stages: skip, resume, failures, Ray."""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import torch
from conftest import rehash_outputs
import pytest
import yaml

import knowpack.models
import knowpack.train.stage
from knowpack.cli import main
from knowpack.errors import InputError, KnowpackError, RunConflictError
from knowpack.kg.folder import QUESTIONS_SCHEMA
from knowpack.probe.stage import LabelConfig
from knowpack.probe.stage import run as label
from knowpack.report.stage import ReportConfig
from knowpack.report.stage import run as make_report
from knowpack.runfolder import read_parquet, write_parquet
from knowpack.sweep.driver import run_sweep as run_sweep_folder
from knowpack.sweep.runs import release_base_models
from knowpack.sweep.spec import load_sweep


def run_sweep(spec, executor=None):
    return run_sweep_folder(spec, executor).path

N_FACTS = 10


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model_dir):
    """Questions with two paraphrases each, labelled by the tiny model. The random model knows nothing, so the
    first four labels are then set to HighlyKnown: they stand in for known facts (a HighlyKnown pool to mix in,
    and known facts the adapter visibly loses, so shifts are not empty)."""
    folder = tmp_path_factory.mktemp("sweep-data")
    rows = [{
        "id": f"capital/c{i}", "subject": f"Land{i}", "relation": "capital", "object": f"City{i}",
        "question": f"What is the capital of Land{i}?", "answer": f"City{i}", "aliases": [f"City{i}"],
        "bucket": ("head", "torso", "tail")[i % 3], "popularity": 100 - i, "relation_domain": "Place",
        "template_id": "capital#0",
        "paraphrases": [f"Which city is the capital of Land{i}?", f"Land{i} has which capital?"],
    } for i in range(N_FACTS)]
    questions = folder / "questions.parquet"
    write_parquet(questions, pa.Table.from_pylist(rows, schema=QUESTIONS_SCHEMA))
    labels = label(LabelConfig(model=str(tiny_model_dir), questions=questions, out=folder / "labels", n_prompts=1,
                               shots=1, n_samples=0, max_new_tokens=4, progress=False)).path
    table = read_parquet(labels / "labels.parquet").to_pandas().sort_values("question_id", ignore_index=True)
    table.loc[:3, ["category", "category_strict"]] = "HighlyKnown"
    write_parquet(labels / "labels.parquet", pa.Table.from_pandas(table, preserve_index=False))
    rehash_outputs(labels)
    return questions, labels


def sweep_file(tmp_path, tiny_model_dir, data, **grid):
    questions, labels = data
    document = {
        "name": "tiny",
        "model": str(tiny_model_dir),
        "data": {"questions": str(questions), "labels": str(labels)},
        "train": {"batch_size": 4},
        "evaluate": {"benchmarks": [], "heldout_paraphrases": 1},
        "grid": {"unknown": [2, 3], "mixtures": ["none", "highly-known:1"], "epochs": 2, "rank": 2, "lr": 1e-2,
                 "seed": 1, **grid},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def model_loads(monkeypatch):
    """Counts base model loads (the sweep must load it once per worker, and not at all when nothing is left)."""
    calls = []
    real = knowpack.models.load_model
    release_base_models()

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(knowpack.models, "load_model", counting)
    return calls


def test_sweep_runs_every_point_once_and_skips_finished_runs(tmp_path, tiny_model_dir, data, model_loads):
    config = load_sweep(sweep_file(tmp_path, tiny_model_dir, data, unknown=[2, 3, 4], mixtures=["none"]),
                        out=tmp_path / "out")
    out = run_sweep(config)
    index = read_parquet(out / "sweep.parquet").to_pandas()
    assert list(index.columns[:7]) == ["run_id", "unknown", "mixture", "rank", "epochs", "lr", "seed"]
    assert len(index) == 3 and set(index["status"]) == {"done"} and set(index["epochs_done"]) == {2}
    assert len(model_loads) == 1, "one base model for the whole sweep"
    for row in index.itertuples():
        run = out / row.run_dir
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["config"]["unknown"] == row.unknown
        assert manifest["config"]["extra"] == []
        assert json.loads((run / "eval" / "manifest.json").read_text())["complete"]
        assert (run / "eval" / "reliability.parquet").is_file()
    sweep_manifest = json.loads((out / "manifest.json").read_text())
    assert sweep_manifest["complete"] and sweep_manifest["n_runs"] == 3
    assert yaml.safe_load((out / "sweep.yaml").read_text())["grid"]["unknown"] == [2, 3, 4]

    # half-finished: one run lost its last epoch and evaluation, another only its evaluation
    half, unevaluated = (out / index.run_dir[0]), (out / index.run_dir[2])
    kept_epoch = half / "epochs" / "epoch_01" / "adapter_model.safetensors"
    kept_stat = kept_epoch.stat()
    shutil.rmtree(half / "epochs" / "epoch_02")
    shutil.rmtree(half / "eval")
    manifest = json.loads((half / "manifest.json").read_text())
    (half / "manifest.json").write_text(json.dumps({**manifest, "complete": False, "epochs_done": 1}))
    shutil.rmtree(unevaluated / "eval")
    untouched = out / index.run_dir[1] / "eval" / "manifest.json"
    untouched_mtime = untouched.stat().st_mtime_ns

    release_base_models()  # as if the command were run again in a new process
    model_loads.clear()
    assert run_sweep(config) == out
    again = read_parquet(out / "sweep.parquet").to_pandas()
    assert set(again["status"]) == {"done"}
    assert (half / "epochs" / "epoch_02" / "adapter_model.safetensors").is_file()
    assert kept_epoch.stat().st_mtime_ns == kept_stat.st_mtime_ns, "resumed after the last complete epoch"
    assert untouched.stat().st_mtime_ns == untouched_mtime, "finished runs are not redone"
    assert len(model_loads) == 1

    release_base_models()
    model_loads.clear()
    run_sweep(config)
    assert model_loads == [], "nothing left to do: the model is not even loaded"

    report = make_report(ReportConfig(source=out)).path
    assert {"reliability_per_epoch.png", "shift_vs_facts.png", "collapse.png"} <= {
        p.name for p in report.glob("*.png")}
    assert "3 evaluated runs" in (report / "report.md").read_text()


def test_sweep_makes_its_questions_and_labels_on_the_same_loaded_model(tmp_path, tiny_model_dir, model_loads):
    path = tmp_path / "make.yaml"
    path.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir),
        "data": {"make": {"questions": {"source": "embedded", "per_bucket": 1},
                          "labels": {"n_prompts": 1, "shots": 1, "n_samples": 0, "max_new_tokens": 3}}},
        "evaluate": {"benchmarks": [], "heldout_paraphrases": 0},
        "grid": {"unknown": 2, "epochs": 1, "seed": 3},
    }))
    out = run_sweep(load_sweep(path, out=tmp_path / "made"))
    assert json.loads((out / "data" / "labels" / "manifest.json").read_text())["complete"]
    assert (out / "data" / "questions" / "questions.parquet").is_file()
    assert read_parquet(out / "sweep.parquet").column("status").to_pylist() == ["done"]
    assert len(model_loads) == 1, "labelling and training share one loaded base model"

    # the sweep folder holds its data, so it works wherever it goes: moved, it is re-evaluated and reported
    moved = shutil.move(str(out), str(tmp_path / "elsewhere" / "made"))
    (run,) = (Path(moved) / "runs").iterdir()
    shutil.rmtree(run / "eval")
    assert main(["evaluate", str(run), "--device", "cpu", "--benchmarks", "none", "--heldout-paraphrases", "0",
                 "--no-progress"]) == 0
    assert make_report(ReportConfig(source=Path(moved))).summary.startswith("This report covers 1 evaluated run")


def test_grown_grid_resumes_in_place_and_another_model_is_refused(tmp_path, tiny_model_dir, data, monkeypatch):
    done = []
    monkeypatch.setattr(knowpack.train.stage, "run_loaded", lambda loaded, config: done.append(config.unknown) or
                        (_ for _ in ()).throw(RuntimeError("no training in this test")))
    small = load_sweep(sweep_file(tmp_path, tiny_model_dir, data, unknown=[2], mixtures=["none"]), out=tmp_path / "o")
    with pytest.raises(KnowpackError, match="1 of 1 runs are not done"):
        run_sweep(small)
    grown = load_sweep(sweep_file(tmp_path, tiny_model_dir, data, unknown=[2, 3], mixtures=["none"]), out=tmp_path / "o")
    with pytest.raises(KnowpackError, match="2 of 2 runs are not done"):
        run_sweep(grown)
    assert done == [2, 2, 3]
    other = load_sweep(sweep_file(tmp_path, tiny_model_dir, data), out=tmp_path / "o")
    other.model = "smollm2-135m"
    with pytest.raises(RunConflictError, match="--overwrite"):
        run_sweep(other)


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, tiny_model_dir, data, monkeypatch):
    real = knowpack.train.stage.run_loaded

    def flaky(loaded, config):
        if config.unknown == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(loaded, config)

    monkeypatch.setattr(knowpack.train.stage, "run_loaded", flaky)
    config = load_sweep(sweep_file(tmp_path, tiny_model_dir, data, mixtures=["none"], epochs=1), out=tmp_path / "f")
    with pytest.raises(KnowpackError, match=r"1 of 2 runs are not done \(e\.g\. u3-none-s1-\w+: RuntimeError: CUDA out"):
        run_sweep(config)
    index = read_parquet(tmp_path / "f" / "sweep.parquet").to_pandas().set_index("unknown")
    assert index.loc[2, "status"] == "done" and index.loc[3, "status"] == "failed"
    assert "Traceback" in (tmp_path / "f" / "logs" / f"{index.loc[3, 'run_id']}.log").read_text()
    assert not json.loads((tmp_path / "f" / "manifest.json").read_text())["complete"]


def test_more_facts_than_the_pool_fails_before_training(tmp_path, tiny_model_dir, data, monkeypatch):
    monkeypatch.setattr(knowpack.train.stage, "run_loaded", lambda *a: pytest.fail("nothing may train"))
    config = load_sweep(sweep_file(tmp_path, tiny_model_dir, data, unknown=[2, 50]), out=tmp_path / "p")
    with pytest.raises(InputError, match=r"grid: unknown=50 .* only 6 Unknown questions"):
        run_sweep(config)
    config = load_sweep(sweep_file(tmp_path, tiny_model_dir, data, mixtures=["paraphrase:5"]), out=tmp_path / "q")
    with pytest.raises(InputError, match=r"mixture paraphrase:5 cannot be drawn"):
        run_sweep(config)
    config = load_sweep(sweep_file(tmp_path, tiny_model_dir, data, mixtures=["highly-known:2"]), out=tmp_path / "s")
    with pytest.raises(InputError, match=r"unknown=3 with mixture highly-known:2 .* needs 6 HighlyKnown .* has 4"):
        run_sweep(config)
    bad = load_sweep(sweep_file(tmp_path, tiny_model_dir, data), out=tmp_path / "r")
    bad.train["learning_rate"] = 1
    with pytest.raises(InputError, match=r"train\.learning_rate: unknown key"):
        run_sweep(bad)


@pytest.mark.ray
def test_ray_executor_two_cpu_actors(tmp_path, tiny_model_dir, data):
    ray = pytest.importorskip("ray")
    from knowpack.sweep.executors.ray import RayExecutor, RayOptions

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2, log_to_driver=False)
    try:
        executor = RayExecutor(RayOptions(workers=2))
        config = load_sweep(sweep_file(tmp_path, tiny_model_dir, data, epochs=1), out=tmp_path / "ray")
        out = run_sweep(config, executor=executor)
    finally:
        ray.shutdown()
    assert len({p["pid"] for p in executor.placements}) == 2, "one actor per CPU slot, each its own process"
    assert {p["device"] for p in executor.placements} == {"cpu"}
    index = read_parquet(out / "sweep.parquet").to_pandas()
    assert len(index) == 4 and set(index["status"]) == {"done"}
    for run_dir in index["run_dir"]:
        assert json.loads((out / run_dir / "eval" / "manifest.json").read_text())["complete"]
    local = load_sweep(sweep_file(tmp_path, tiny_model_dir, data, epochs=1), out=tmp_path / "ray")
    assert [r.run_id for r in local.runs()] == list(index["run_id"]), "same ids whichever executor ran them"


def test_runs_trained_together_equal_runs_trained_alone(tmp_path, tiny_model_dir, data):
    """`--train-together 3` groups the grid's four runs as 3 + 1 (by size); without dropout each adapter equals
    the one trained alone, and every run is evaluated."""
    from safetensors.torch import load_file

    path = sweep_file(tmp_path, tiny_model_dir, data)
    document = yaml.safe_load(path.read_text())
    document["train"]["dropout"] = 0.0
    path.write_text(yaml.safe_dump(document))
    folders = {}
    for together in (1, 3):
        folders[together] = tmp_path / f"together{together}"
        release_base_models()
        assert main(["sweep", str(path), "--out", str(folders[together]), "--train-together", str(together)]) == 0
    alone = read_parquet(folders[1] / "sweep.parquet").to_pandas()
    together = read_parquet(folders[3] / "sweep.parquet").to_pandas()
    assert set(together["status"]) == {"done"} and list(together["run_id"]) == list(alone["run_id"])
    for run_dir in alone["run_dir"]:
        for epoch in ("epoch_01", "epoch_02"):
            a = load_file(folders[1] / run_dir / "epochs" / epoch / "adapter_model.safetensors")
            b = load_file(folders[3] / run_dir / "epochs" / epoch / "adapter_model.safetensors")
            for key in a:
                torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)


def test_no_progress_silences_every_stage_of_a_sweep(tmp_path, tiny_model_dir, data, capfd):
    release_base_models()  # the model loads here, so its loading bar would show too
    path = sweep_file(tmp_path, tiny_model_dir, data, unknown=[2], mixtures=["none"], epochs=1)
    assert main(["sweep", str(path), "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert "%|" not in err and "it/s" not in err, err  # no tqdm bar of loading, training or labelling


def test_a_second_command_on_a_folder_in_use_stops_before_touching_it(tmp_path, tiny_model_dir, data, capsys):
    """Two `knowpack sweep` commands on one folder (a job started twice): the second stops with one line while
    the first holds the folder, and runs once the first has ended (or was killed: the kernel drops the lock)."""
    import fcntl
    import os

    from conftest import error_line
    from knowpack.runfolder import LOCK_FILE

    spec = sweep_file(tmp_path, tiny_model_dir, data, unknown=[2], mixtures=["none"], epochs=1)
    out = tmp_path / "sweep"
    out.mkdir()
    other = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT)  # the first command's hold, as another process has it
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert error_line(capsys, ["sweep", str(spec), "--out", str(out), "--no-progress"]) == (
            f"knowpack sweep: error: {out}: another knowpack command is writing this folder; wait for it to end "
            "(it resumes from here if stopped) or choose another --out")
        assert [p.name for p in out.iterdir()] == [LOCK_FILE], "nothing was written"
    finally:
        os.close(other)  # the first command ends
    assert main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "manifest.json").read_text())["complete"]

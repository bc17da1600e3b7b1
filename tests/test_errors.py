"""Every row of docs/errors.md: bad input ends the command with exit code ≠ 0 and exactly one stderr line that
names the input and the problem, without a traceback (``--debug`` shows it)."""

from __future__ import annotations

import bz2
import errno
import gzip
import json
import pathlib

import pyarrow as pa
import pytest
import torch
import yaml
from safetensors.torch import save_file

import knowpack.kg.stage
from knowpack.cli import main
from conftest import error_line, write_capital_questions, write_unsupported_gguf
from knowpack.errors import InputError
from knowpack.probe.stage import LabelConfig
from knowpack.probe.stage import run as label
from knowpack.runfolder import write_parquet

R = "http://dbpedia.org/resource/"
O = "http://dbpedia.org/ontology/"

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_model_loading")


def triple(s: str, p: str, o: str) -> str:
    return f"<{R}{s}> <{O}{p}> <{R}{o}> .\n"


def good_dump(path: pathlib.Path) -> pathlib.Path:
    rows = [triple(f"Person_{i}", "birthPlace", f"City_{i % 8 if i % 3 else 0}") for i in range(40)]
    path.write_text("".join(rows))
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_model_dir):
    """Twelve questions labelled by the tiny model (all Unknown: it knows nothing)."""
    folder = tmp_path_factory.mktemp("errors-data")
    questions = write_capital_questions(folder / "questions.parquet", 12)
    labels = label(LabelConfig(model=str(tiny_model_dir), questions=questions, out=folder / "labels", n_prompts=1,
                               shots=1, n_samples=0, max_new_tokens=2, device="cpu", progress=False)).path
    return questions, labels


# ---------------------------------------------------------------- files


def test_missing_file(capsys, tmp_path):
    dump = tmp_path / "missing.ttl.bz2"
    line = error_line(capsys, ["questions", "--source", "dbpedia", "--dump", str(dump), "--out", str(tmp_path / "q"),
                               "--no-progress"])
    assert line == f"knowpack questions: error: {dump}: file not found"


def test_unreadable_file(capsys, tmp_path, labelled):
    _, labels = labelled
    garbage = tmp_path / "questions.parquet"
    garbage.write_bytes(b"this is not parquet")
    line = error_line(capsys, ["train", "--labels", str(labels), "--questions", str(garbage), "--out",
                               str(tmp_path / "run"), "--unknown", "1"])
    assert line.startswith(f"knowpack train: error: {garbage}: not a readable Parquet file (")


@pytest.mark.parametrize("suffix, opener", [(".ttl.bz2", bz2.open), (".ttl.gz", gzip.open)])
def test_truncated_compressed_dump(capsys, tmp_path, suffix, opener):
    dump = tmp_path / f"dump{suffix}"
    with opener(dump, "wt") as handle:
        handle.write(good_dump(tmp_path / "plain.ttl").read_text() * 50)
    dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    line = error_line(capsys, ["questions", "--source", "dbpedia", "--dump", str(dump), "--out", str(tmp_path / "q"),
                               "--no-progress"])
    assert line == (f"knowpack questions: error: {dump}: truncated or corrupt file "
                    "(Compressed file ended before the end-of-stream marker was reached)")


def test_dump_without_usable_triples(capsys, tmp_path):
    dump = tmp_path / "empty.ttl"
    dump.write_text("# started\n\n# completed\n")
    line = error_line(capsys, ["questions", "--source", "dbpedia", "--dump", str(dump), "--out", str(tmp_path / "q"),
                               "--no-progress"])
    assert line == f"knowpack questions: error: {dump}: no usable triples (3 lines; no malformed lines)"


def test_malformed_lines_beyond_the_limit(capsys, tmp_path):
    dump = good_dump(tmp_path / "bad.ttl")
    dump.write_text(dump.read_text() + "broken line\n" * 3)
    line = error_line(capsys, ["questions", "--source", "dbpedia", "--dump", str(dump), "--max-bad-lines", "2",
                               "--out", str(tmp_path / "q"), "--no-progress"])
    assert line == (f"knowpack questions: error: {dump}: 3 malformed line(s) (line 41, 42, 43; first: 'broken line'); "
                    "more than --max-bad-lines 2")


# ---------------------------------------------------------------- questions files


def test_questions_missing_columns(capsys, tmp_path, tiny_model_dir):
    questions = tmp_path / "questions.parquet"
    write_parquet(questions, pa.table({"id": ["a"], "question": ["Where?"]}))
    line = error_line(capsys, ["label", "--model", str(tiny_model_dir), "--questions", str(questions),
                               "--out", str(tmp_path / "labels"), "--no-progress"])
    assert line == f"knowpack label: error: {questions}: missing column(s) aliases"


def test_questions_with_an_empty_answer(capsys, tmp_path, tiny_model_dir):
    questions = write_capital_questions(tmp_path / "questions.parquet", 3, answer=lambda i: "" if i == 1 else f"City{i}")
    line = error_line(capsys, ["label", "--model", str(tiny_model_dir), "--questions", str(questions),
                               "--out", str(tmp_path / "labels"), "--no-progress"])
    assert line == f"knowpack label: error: {questions}: question 'capital/c1' has no non-empty answer alias"


# ---------------------------------------------------------------- models and adapters


def test_unknown_model_id_offline(capsys, tmp_path, monkeypatch, labelled):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    questions, _ = labelled
    line = error_line(capsys, ["label", "--model", "no-such-org/no-such-model", "--questions", str(questions),
                               "--out", str(tmp_path / "labels"), "--no-progress"])
    assert line == ("knowpack label: error: no-such-org/no-such-model: not an embedded model (smollm2-135m, "
                    "gemma3-270m), local path or cached hub model, and the hub cannot be reached; download it where "
                    "there is access or pass a local folder")


def test_gguf_with_an_unsupported_architecture(capsys, tmp_path, labelled):
    model = write_unsupported_gguf(tmp_path / "florp.gguf")
    questions, _ = labelled
    line = error_line(capsys, ["label", "--model", str(model), "--questions", str(questions),
                               "--out", str(tmp_path / "labels"), "--no-progress"])
    assert line == (f"knowpack label: error: {model}: cannot load this GGUF "
                    "(GGUF model with architecture notamodel is not supported yet.)")


def test_adapter_trained_on_another_base_model(capsys, tmp_path, tiny_model_dir, labelled):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["gate_proj"], "task_type": "CAUSAL_LM"}))
    prefix = "base_model.model.model.layers.0.mlp.gate_proj"
    save_file({f"{prefix}.lora_A.weight": torch.zeros(2, 576), f"{prefix}.lora_B.weight": torch.zeros(1536, 2)},
              adapter / "adapter_model.safetensors")  # shapes of SmolLM2-135M, not of the tiny model
    questions, _ = labelled
    line = error_line(capsys, ["label", "--model", str(tiny_model_dir), "--adapter", str(adapter),
                               "--questions", str(questions), "--out", str(tmp_path / "labels"), "--no-progress"])
    assert line == (f"knowpack label: error: {adapter}: trained on another base model ({prefix}.lora_A.weight has "
                    f"shape [2, 576], model.layers.0.mlp.gate_proj is 64→128 in {tiny_model_dir})")


def test_pickled_adapter_is_refused(capsys, tmp_path, tiny_model_dir, labelled):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle
    questions, _ = labelled
    line = error_line(capsys, ["label", "--model", str(tiny_model_dir), "--adapter", str(adapter),
                               "--questions", str(questions), "--out", str(tmp_path / "labels"), "--no-progress"])
    assert line == (f"knowpack label: error: {adapter}: adapter_model.bin is a pickle, which can run code when "
                    "loaded; knowpack loads adapters only as adapter_model.safetensors")


def test_pickled_model_checkpoint_is_refused(capsys, tmp_path, tiny_model_dir, labelled):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    questions, _ = labelled
    line = error_line(capsys, ["label", "--model", str(model), "--questions", str(questions),
                               "--out", str(tmp_path / "labels"), "--no-progress"])
    assert line == (f"knowpack label: error: {model}: folder has no .safetensors weights; knowpack does not "
                    "unpickle .bin checkpoints (convert them with safetensors)")


# ---------------------------------------------------------------- sweep files


def sweep_file(tmp_path: pathlib.Path, labelled, **changes) -> pathlib.Path:
    questions, labels = labelled
    document = {"name": "bad", "model": "smollm2-135m", "device": "cpu",
                "data": {"questions": str(questions), "labels": str(labels)},
                "evaluate": {"benchmarks": []}, "grid": {"unknown": [2], "mixtures": ["none"], "epochs": 1}}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            document[section] = {**document.get(section, {}), name: value}
        else:
            document[section] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_sweep_with_an_unknown_key(capsys, tmp_path, labelled):
    path = sweep_file(tmp_path, labelled, epochz=3)
    line = error_line(capsys, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert line == (f"knowpack sweep: error: {path}: epochz: unknown key (allowed here: name, model, protocol, device, "
                    "dtype, kernels, trust_remote_code, max_runs, data, train, evaluate, grid)")


def test_sweep_with_a_negative_count(capsys, tmp_path, labelled):
    path = sweep_file(tmp_path, labelled, grid__unknown=[-5])
    line = error_line(capsys, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert line == f"knowpack sweep: error: {path}: grid.unknown: -5 must be at least 1"


def test_sweep_asking_for_more_facts_than_the_pool_has(capsys, tmp_path, labelled):
    path = sweep_file(tmp_path, labelled, grid__unknown=[500])
    line = error_line(capsys, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert line.startswith("knowpack sweep: error: ")
    assert line.endswith("grid: unknown=500 with mixture none cannot be drawn: --unknown 500: the label folder has "
                         "only 12 Unknown questions")


def test_yaml_with_a_python_tag_is_refused(capsys, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("name: !!python/object/apply:os.system ['touch pwned']\nmodel: x\n")
    line = error_line(capsys, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert line.startswith(f"knowpack sweep: error: {path}: not valid YAML")
    templates = tmp_path / "templates.yaml"
    templates.write_text("capital: !!python/object/apply:os.system ['touch pwned']\n")
    line = error_line(capsys, ["questions", "--templates", str(templates), "--out", str(tmp_path / "q"),
                               "--no-progress"])
    assert line.startswith(f"knowpack questions: error: {templates}: not valid YAML")
    assert not (tmp_path / "pwned").exists() and not pathlib.Path("pwned").exists()


# ---------------------------------------------------------------- output folders, disks, interruptions


def test_output_folder_holding_another_configs_run(capsys, tmp_path):
    dump, out = good_dump(tmp_path / "dump.ttl"), tmp_path / "q"
    build = ["questions", "--source", "dbpedia", "--dump", str(dump), "--no-balance", "--out", str(out),
             "--no-progress"]
    assert main(build) == 0
    capsys.readouterr()
    line = error_line(capsys, [*build, "--seed", "5"])
    assert line == (f"knowpack questions: error: {out}: holds a questions run with another config or inputs; "
                    "choose another --out or pass --overwrite")
    assert main([*build, "--seed", "5", "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == 5


def test_full_disk_keeps_the_earlier_file(capsys, tmp_path, monkeypatch):
    """The disk fills when the manifest is rewritten as complete: the earlier manifest stays, whole and
    incomplete, and no temp file is left behind."""
    dump, out = good_dump(tmp_path / "dump.ttl"), tmp_path / "q"
    real_write = pathlib.Path.write_bytes
    manifests: list[bytes] = []

    def write_until_full(self, data):
        if self.name.startswith(".manifest.json."):
            if b'"complete": true' in data:
                raise OSError(errno.ENOSPC, "No space left on device")
            manifests.append(data)
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_until_full)
    line = error_line(capsys, ["questions", "--source", "dbpedia", "--dump", str(dump), "--no-balance",
                               "--out", str(out), "--no-progress"])
    assert line == f"knowpack questions: error: {out / 'manifest.json'}: no space left on the device; nothing was overwritten"
    assert (out / "manifest.json").read_bytes() == manifests[-1]
    assert json.loads(manifests[-1])["complete"] is False
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_interrupted_run(capsys, tmp_path, monkeypatch):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(knowpack.kg.stage, "run", interrupted)
    line = error_line(capsys, ["questions", "--out", str(tmp_path / "q"), "--no-progress"])
    assert line == "knowpack questions: interrupted; finished work is kept, run the same command to resume"


def test_debug_shows_the_traceback(capsys, tmp_path):
    dump = tmp_path / "missing.ttl"
    with pytest.raises(InputError, match="file not found"):
        main(["--debug", "questions", "--source", "dbpedia", "--dump", str(dump), "--out", str(tmp_path / "q"),
              "--no-progress"])



def test_training_on_questions_with_an_empty_answer(capsys, tmp_path, labelled):
    _, labels = labelled
    questions = write_capital_questions(tmp_path / "questions.parquet", 12, answer=lambda i: " " if i == 4 else f"City{i}")
    line = error_line(capsys, ["train", "--labels", str(labels), "--questions", str(questions), "--unknown", "1",
                               "--out", str(tmp_path / "run")])
    assert line == f"knowpack train: error: {questions}: question 'capital/c4' has an empty answer"

"""Never a silently wrong result (docs/errors.md, second table): values checked by type and range where they are
declared, resumed work verified, sweep files bounded, OS errors one line, a failed start never blocking a fix."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import error_line, write_capital_questions
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
import transformers
from transformers import AutoModelForCausalLM

import knowpack.train.loop
from knowpack.cli import main
from knowpack.errors import InputError, KnowpackError
from knowpack.probe.stage import LabelConfig
from knowpack.probe.stage import run as label
from knowpack.runfolder import open_run, read_manifest
from knowpack.sweep.spec import load_sweep

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_model_loading")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("never-wrong")
    questions = write_capital_questions(folder / "questions.parquet", 12)
    labels = label(LabelConfig(model=str(tiny_model_dir), questions=questions, out=folder / "labels", n_prompts=1,
                               shots=1, n_samples=0, max_new_tokens=2, device="cpu", progress=False)).path
    return questions, labels


def train_args(tiny_model_dir, labels, out, *more) -> list[str]:
    return ["train", "--model", str(tiny_model_dir), "--labels", str(labels), "--unknown", "4", "--epochs", "2",
            "--device", "cpu", "--no-progress", "--out", str(out), *more]


# ---------------------------------------------------------------- values: by type and range where declared


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--lr", "inf", "--lr: inf must be a finite number"),
    ("--lr", "nan", "--lr: nan must be a finite number"),
    ("--dropout", "1.5", "--dropout: 1.5 must be below 1"),
    ("--rank", "0", "--rank: 0 must be at least 1"),
    ("--loss-on", "prompt", "--loss-on: 'prompt' is not one of answer, all"),
])
def test_impossible_numbers_are_refused_before_anything_is_written(capsys, tmp_path, labelled, tiny_model_dir,
                                                                   flag, value, message):
    _, labels = labelled
    line = error_line(capsys, train_args(tiny_model_dir, labels, tmp_path / "run", flag, value))
    assert line == f"knowpack train: error: {message}"
    assert not (tmp_path / "run").exists()


def test_training_that_diverges_stops_and_is_never_complete(capsys, tmp_path, labelled, tiny_model_dir):
    _, labels = labelled
    line = error_line(capsys, train_args(tiny_model_dir, labels, tmp_path / "run", "--lr", "1e30", "--alpha", "1e6"))
    assert line.startswith("knowpack train: error: training diverged at epoch ")
    assert "no longer finite (inf/nan); nothing of this epoch was saved; lower --lr (now 1e+30)" in line
    assert not read_manifest(tmp_path / "run")["complete"] and not (tmp_path / "run" / "epochs" / "epoch_02").exists()
    assert main(train_args(tiny_model_dir, labels, tmp_path / "run", "--lr", "1e-2", "--overwrite")) == 0


@pytest.mark.parametrize(("column", "values", "message"), [
    ("aliases", ["26"] * 3, "column aliases must hold a list of strings, not string (row 0: '26')"),
    ("aliases", [[26]] * 3, "column aliases must hold a list of strings, not list<element: int64>"),
    ("paraphrases", ["again?"] * 3, "column paraphrases must hold a list of strings, not string"),
    ("question", [1, 2, 3], "column question must hold string, not int64"),
])
def test_input_tables_are_checked_by_type(capsys, tmp_path, tiny_model_dir, column, values, message):
    questions = write_capital_questions(tmp_path / "q.parquet", 3)
    table = pq.read_table(questions)
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
    pq.write_table(table, questions)
    line = error_line(capsys, ["label", "--model", str(tiny_model_dir), "--questions", str(questions), "--out",
                               str(tmp_path / "l")])
    assert line.startswith(f"knowpack label: error: {questions}: {message}")


def test_duplicate_question_ids_are_refused_by_training_too(capsys, tmp_path, labelled, tiny_model_dir):
    questions, labels = labelled
    twice = tmp_path / "twice.parquet"
    table = pq.read_table(questions)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), twice)
    line = error_line(capsys, train_args(tiny_model_dir, labels, tmp_path / "run", "--questions", str(twice)))
    assert line == f"knowpack train: error: {twice}: question id 'capital/c0' occurs more than once"


# ---------------------------------------------------------------- adapters checked against their config


def test_an_adapter_whose_config_targets_other_modules_than_its_weights_is_refused(capsys, tmp_path, labelled,
                                                                                  tiny_model_dir):
    questions, _ = labelled
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=1, target_modules=["down_proj"])).save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = ["q_proj"]
    config_path.write_text(json.dumps(config))
    argv = ["label", "--model", str(tiny_model_dir), "--questions", str(questions), "--adapter",
            str(tmp_path / "adapter"), "--out", str(tmp_path / "l"), "--device", "cpu"]
    assert error_line(capsys, argv).endswith(
        "its weights are for model.layers.0.mlp.down_proj, which its adapter_config.json does not target "
        "(['q_proj']); peft would not load them")
    save_file({"unrelated": torch.zeros(1)}, tmp_path / "adapter" / "adapter_model.safetensors")
    config["target_modules"] = ["down_proj"]
    config_path.write_text(json.dumps(config))
    assert "adapter_config.json targets model.layers.0.mlp.down_proj, but the weights hold no LoRA tensors" in \
        error_line(capsys, argv)
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"truncated")
    assert "not a readable safetensors file" in error_line(capsys, argv)


# ---------------------------------------------------------------- resumed work is verified


def test_a_damaged_output_is_redone_on_resume_and_refused_as_an_input(capsys, tmp_path, labelled, tiny_model_dir):
    questions, _ = labelled
    argv = ["label", "--model", str(tiny_model_dir), "--questions", str(questions), "--out", str(tmp_path / "l"),
            "--n-prompts", "1", "--shots", "1", "--samples", "0", "--max-new-tokens", "2", "--device", "cpu",
            "--no-progress"]
    assert main(argv) == 0
    responses = tmp_path / "l" / "responses.parquet"
    good = responses.read_bytes()
    responses.write_bytes(good[: len(good) // 2])  # truncated
    line = error_line(capsys, ["train", "--labels", str(tmp_path / "l"), "--out", str(tmp_path / "t")])
    assert "responses.parquet: changed or damaged since the run finished" in line
    assert main(argv) == 0  # the same command redoes it from the response store
    assert responses.read_bytes() == good and read_manifest(tmp_path / "l")["complete"]


def test_the_same_folder_spelled_differently_is_the_same_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dump = tmp_path / "d.nt"
    dump.write_text("".join(f"<http://dbpedia.org/resource/T{i}> <http://dbpedia.org/ontology/country> "
                            f"<http://dbpedia.org/resource/C{i % 2}> .\n" for i in range(6)))
    args = ["questions", "--source", "dbpedia", "--dump", str(dump), "--no-balance", "--no-progress"]
    assert main([*args, "--out", "fs/q"]) == 0
    assert main([*args, "--out", "./fs/q/"]) == 0
    assert main([*args, "--out", str(tmp_path / "fs" / "q")]) == 0


def test_a_run_that_failed_before_any_work_does_not_block_a_fixed_command(capsys, tmp_path, labelled, tiny_model_dir):
    _, labels = labelled
    assert main(train_args(tiny_model_dir, labels, tmp_path / "run", "--targets", "no_such_proj")) == 2
    assert "--targets" in capsys.readouterr().err
    assert main(train_args(tiny_model_dir, labels, tmp_path / "run", "--targets", "mlp")) == 0


def test_another_runs_folder_is_still_refused(tmp_path):
    run = open_run(tmp_path / "r", "demo", {"size": 1})
    (run.path / "table.parquet").write_bytes(b"work")
    with pytest.raises(KnowpackError, match="another config"):
        open_run(tmp_path / "r", "demo", {"size": 2})


# ---------------------------------------------------------------- sweep files: unique, bounded, checked first


def sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_a_duplicate_key_in_a_sweep_file_is_refused(tmp_path):
    path = sweep(tmp_path, "model: m\ndata: {questions: q, labels: l}\ngrid:\n  unknown: 1\n  rank: 1\n  rank: 8\n")
    with pytest.raises(InputError, match=r"s.yaml: rank: listed twice \(lines 5 and 6\)"):
        load_sweep(path)


def test_huge_grids_are_refused_before_they_are_expanded(tmp_path):
    base = "model: m\ndata: {questions: q, labels: l}\n"
    with pytest.raises(InputError, match=r"grid\.seed: the range has 200,000 values, more than 10,000"):
        load_sweep(sweep(tmp_path, base + "grid: {unknown: 1, seed: {start: 0, stop: 199999, step: 1}}\n"))
    with pytest.raises(InputError, match="the range has 10,000,001 values"):
        load_sweep(sweep(tmp_path, base + "grid: {unknown: 1, lr: {start: 0.0, stop: 1.0, step: 1.0e-7}}\n"))
    big = base + "grid: {unknown: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], seed: {start: 0, stop: 1999, step: 1}}\n"
    with pytest.raises(InputError, match="20,000 runs"):
        load_sweep(sweep(tmp_path, big))
    assert len(load_sweep(sweep(tmp_path, big), max_runs=20_000).runs()) == 20_000


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    layers = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    layers += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "model: m\ndata: {questions: q, labels: l}\n" + "\n".join(layers) + "\ngrid: {unknown: 1}\n"
    with pytest.raises(InputError, match="expands to more than 100,000 values"):
        load_sweep(sweep(tmp_path, text))


def test_stage_options_of_a_sweep_are_checked_before_anything_runs(tmp_path):
    base = "model: m\ndata: {questions: q, labels: l}\ngrid: {unknown: 1}\n"
    with pytest.raises(InputError, match=r"evaluate\.benchmarks: none,mmlu: 'none' cannot be combined"):
        load_sweep(sweep(tmp_path, base + "evaluate: {benchmarks: 'none,mmlu'}\n"))
    from knowpack.evaluate.metrics.benchmarks import BenchmarkOptions

    spec = load_sweep(sweep(tmp_path, base + "evaluate: {benchmarks: none}\n"))
    assert spec.evaluate_config(spec.runs()[0], tmp_path).options_of(BenchmarkOptions).benchmarks == ()


# ---------------------------------------------------------------- OS errors: one line, nothing finished lost


def test_out_naming_a_file_or_under_a_file_is_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    line = error_line(capsys, ["questions", "--out", str(tmp_path / "file"), "--no-progress"])
    assert line.endswith("file: exists and is a file, not a folder; choose another --out")
    line = error_line(capsys, ["questions", "--out", str(tmp_path / "file" / "q"), "--no-progress"])
    assert "a part of the path is a file, not a folder" in line


def test_an_invalid_manifest_is_one_line(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text("{not json")
    assert "manifest.json: not valid JSON" in error_line(capsys, ["evaluate", str(tmp_path / "run")])


def test_a_full_disk_while_saving_an_epoch_keeps_the_earlier_epochs(capsys, tmp_path, labelled, tiny_model_dir,
                                                                    monkeypatch):
    _, labels = labelled
    real = knowpack.train.loop.save_file
    saved = []

    def full_after_the_first_epoch(tensors, path):
        if "epoch_02" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        return real(tensors, path)

    monkeypatch.setattr(knowpack.train.loop, "save_file", full_after_the_first_epoch)
    out = tmp_path / "run"
    line = error_line(capsys, train_args(tiny_model_dir, labels, out))
    assert line == (f"knowpack train: error: {out / 'epochs' / 'epoch_02'}: no space left on the device; the epochs "
                    "before 2 are kept; run the same command to resume")
    assert (out / "epochs" / "epoch_01" / "adapter_model.safetensors").is_file()
    assert not any(p.name.startswith(".epoch") for p in (out / "epochs").iterdir())
    monkeypatch.setattr(knowpack.train.loop, "save_file", real)
    assert main(train_args(tiny_model_dir, labels, out)) == 0 and read_manifest(out)["complete"]


def test_no_loading_bar_with_no_progress(capsys, tmp_path, labelled, tiny_model_dir):
    transformers.utils.logging.enable_progress_bar()
    questions, _ = labelled
    assert main(["label", "--model", str(tiny_model_dir), "--questions", str(questions), "--out",
                 str(tmp_path / "l"), "--n-prompts", "1", "--shots", "1", "--samples", "0", "--max-new-tokens", "2",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "Loading weights" not in capsys.readouterr().err

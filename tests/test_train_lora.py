"""LoRA packing runs on the tiny model: run folder layout, packed batches, isolation between runs, resume."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from test_train_mixture import make_label_folder, write_questions

from knowpack.errors import InputError, RunConflictError
from knowpack.models import load_model
from knowpack.train import folder as lora_files
from knowpack.train import loop as lora
from knowpack.train import packing
from knowpack.train.methods import METHODS
from knowpack.train.stage import LOSS_ON, TrainConfig
from knowpack.train.stage import run_loaded


def train_loaded(loaded, config):
    return run_loaded(loaded, config).path

TEMPLATE = "Question: {question}\nAnswer: {answer}"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    questions = root / "questions.parquet"
    return make_label_folder(root / "labels", questions, write_questions(questions))


def make_config(labels, out, **overrides) -> TrainConfig:
    options = dict(unknown=6, extra=("highly-known:1",), epochs=3, batch_size=4, rank=2, alpha=4.0, lr=2e-2,
                   seed=7, template=TEMPLATE)
    return TrainConfig(labels=labels, out=out, **{**options, **overrides})


def adapter(run, epoch):
    return load_file(run / "epochs" / lora_files.epoch_name(epoch) / lora_files.ADAPTER_FILE)


def optimizer_state(run, epoch):
    return load_file(run / "epochs" / lora_files.epoch_name(epoch) / lora_files.OPTIMIZER_FILE)


def losses(run):
    return pq.read_table(run / lora_files.TRAIN_LOG_FILE).column("loss").to_pylist()


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_run_folder_layout_and_learning(loaded, labels, tmp_path):
    run = train_loaded(loaded, make_config(labels, tmp_path / "run"))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] and manifest["epochs_done"] == 3
    train_set = pq.read_table(run / lora_files.TRAIN_SET_FILE)
    assert train_set.schema.equals(lora_files.TRAIN_SET_SCHEMA)
    kinds = train_set.column("kind").to_pylist()
    assert kinds.count("unknown") == 6 and kinds.count("highly-known") == 6
    unknown_ids = [q for q, k in zip(train_set.column("question_id").to_pylist(), kinds) if k == "unknown"]
    assert manifest["unknown_ids"] == unknown_ids and len(set(unknown_ids)) == 6
    first = train_set.to_pylist()[0]
    assert first["prompt"].startswith("Question: ") and first["prompt"].endswith("Answer: ")
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["epoch_01", "epoch_02", "epoch_03"]
    for epoch in (1, 2, 3):
        assert sorted(p.name for p in (run / "epochs" / lora_files.epoch_name(epoch)).iterdir()) == sorted(METHODS["lora"].epoch_files)
    log = pq.read_table(run / lora_files.TRAIN_LOG_FILE)
    assert log.schema.equals(lora_files.TRAIN_LOG_SCHEMA)
    assert log.column("epoch").to_pylist() == [1] * 3 + [2] * 3 + [3] * 3  # 12 rows, batch 4
    assert manifest["epoch_loss"][-1] < manifest["epoch_loss"][0]
    keys = adapter(run, 3).keys()
    assert keys and all(".mlp." in k and ("lora_A" in k or "lora_B" in k) for k in keys)
    assert not any(".knowpack." in k for k in keys)  # peft's on-disk naming, loadable by PeftModel
    config = json.loads((run / "epochs/epoch_03/adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 4.0 and sorted(config["target_modules"]) == [
        "down_proj", "gate_proj", "up_proj"]
    assert set(manifest["outputs"]) >= {"train_set.parquet", "train_log.parquet", "epochs/epoch_03/optimizer.safetensors"}


def test_base_model_is_left_as_it_was(loaded, labels, tmp_path):
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    modules = [type(m).__name__ for m in loaded.model.modules()]
    train_loaded(loaded, make_config(labels, tmp_path / "run", epochs=1, dropout=0.0))
    assert [type(m).__name__ for m in loaded.model.modules()] == modules
    assert_same_tensors(before, loaded.model.state_dict())
    assert all(p.requires_grad for p in loaded.model.parameters()) and not loaded.model.training
    assert not getattr(loaded.model, "peft_config", None)


def test_saved_adapter_loads_with_peft_and_reproduces_training_outputs(loaded, labels, tmp_path, tiny_model_dir):
    run = train_loaded(loaded, make_config(labels, tmp_path / "run", epochs=2, dropout=0.0))
    fresh = load_model(str(tiny_model_dir), device="cpu")
    ids = torch.tensor([[1, 400, 401, 402, 403]])
    plain = fresh.model(input_ids=ids).logits
    with_adapter = PeftModel.from_pretrained(fresh.model, run / "epochs/epoch_02").eval()
    assert not torch.allclose(with_adapter(input_ids=ids).logits, plain)


@pytest.mark.parametrize("lane_tokens", [512, 24])  # one lane; a lane per row, padded to the longest
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_matches_rows_run_one_by_one(loaded, attention, lane_tokens):
    tokenizer = loaded.tokenizer
    rows = [lora.encode_example(tokenizer, p, t, add_special_tokens=True)
            for p, t in [("Question: Who?\nAnswer: ", "Ada Lovelace"), ("Question: Where is the big city?\nAnswer: ", "Paris"),
                         ("Q: x\nA: ", "a much longer answer with several words")]]
    model = loaded.model
    model.set_attn_implementation(attention)
    request_cleanup = lambda: model.set_attn_implementation("sdpa")  # noqa: E731
    for loss_on in LOSS_ON:
        batch = packing.pack(rows, loss_on, torch.device("cpu"), lane_tokens)
        assert batch.tokens == sum(len(ids) for ids, _ in rows)
        assert batch.lanes == (1 if lane_tokens == 512 else len(rows))
        with torch.no_grad():
            logits = packing.packed_logits(model, batch)
            packed = torch.nn.functional.cross_entropy(logits, batch.labels, reduction="sum")
            separate, count = 0.0, 0
            for ids, prompt_len in rows:
                first = prompt_len - 1 if loss_on == "answer" else 0
                row_logits = model(input_ids=torch.tensor([ids])).logits[0, first:-1]
                separate += torch.nn.functional.cross_entropy(row_logits, torch.tensor(ids[first + 1:]), reduction="sum")
                count += len(ids) - 1 - first
        assert len(batch.labels) == count
        torch.testing.assert_close(packed, separate, rtol=1e-5, atol=1e-4)
    request_cleanup()
    answer_only = packing.pack(rows, "answer", torch.device("cpu"))
    assert answer_only.labels[-1].item() == tokenizer.eos_token_id  # every row ends in EOS
    assert len(answer_only.labels) < len(packing.pack(rows, "all", torch.device("cpu")).labels)


def test_long_passes_are_one_unpadded_lane_when_flash_attention_runs_the_rows():
    rows = [([1] * 600, 590), ([2] * 300, 290), ([3] * 200, 190)]
    long = packing.pack(rows, "answer", torch.device("cpu"), lane_tokens=512, varlen=True)
    assert long.varlen and long.lanes == 1 and long.width == long.tokens == 1100
    assert long.starts.tolist() == [0, 600, 900, 1100] and long.longest == 600  # flash's cumulative lengths
    short = packing.pack(rows[1:], "answer", torch.device("cpu"), lane_tokens=256, varlen=True)  # 500 tokens
    assert not short.varlen and short.lanes == 2 and short.width == 300
    assert short.starts.tolist() == [0, 300, 500, 600] and short.longest == 300  # the padding block is a segment


def test_passes_split_a_step_without_changing_it(loaded, labels, tmp_path):
    rows = [([5] * 30, 20), ([6] * 50, 40), ([7] * 20, 10), ([8] * 90, 80)]
    assert [len(g) for g in lora.split_rows(rows, 80)] == [2, 1, 1]  # a row longer than the limit goes alone
    assert packing.assign_lanes([len(ids) for ids, _ in rows], 80) == [[0, 1], [2], [3]]  # first fit, in order
    assert packing.assign_lanes([50, 40, 30], 80) == [[0, 2], [1]]  # a later short row fills an earlier lane
    assert lora.split_rows(rows, None) == [rows]
    whole = train_loaded(loaded, make_config(labels, tmp_path / "whole", epochs=2, dropout=0.0))
    split = train_loaded(loaded, make_config(labels, tmp_path / "split", epochs=2, dropout=0.0, max_tokens_per_pass=64))
    for key, tensor in adapter(whole, 2).items():
        torch.testing.assert_close(adapter(split, 2)[key], tensor, rtol=1e-4, atol=1e-6)
    assert losses(split) == pytest.approx(losses(whole), rel=1e-5)


def test_run_b_does_not_depend_on_run_a(loaded, labels, tmp_path, tiny_model_dir):
    config_b = lambda out: make_config(labels, out, seed=11, unknown=5, dropout=0.1)  # noqa: E731
    alone = train_loaded(load_model(str(tiny_model_dir), device="cpu"), config_b(tmp_path / "b-alone"))
    train_loaded(loaded, make_config(labels, tmp_path / "a", seed=3, rank=4, targets="all-linear", lr=5e-2))
    after_a = train_loaded(loaded, config_b(tmp_path / "b-after-a"))
    assert losses(alone) == losses(after_a)
    for epoch in (1, 2, 3):
        assert_same_tensors(adapter(alone, epoch), adapter(after_a, epoch))


def test_interrupted_run_resumes_bit_identical(loaded, labels, tmp_path, monkeypatch):
    reference = train_loaded(loaded, make_config(labels, tmp_path / "reference"))

    real_batches = lora.epoch_batches

    def crash_in_epoch_3(n_rows, batch_size, seed, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return real_batches(n_rows, batch_size, seed, epoch)

    monkeypatch.setattr(lora, "epoch_batches", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_loaded(loaded, make_config(labels, tmp_path / "resumed"))
    monkeypatch.setattr(lora, "epoch_batches", real_batches)
    resumed = tmp_path / "resumed"
    assert not json.loads((resumed / "manifest.json").read_text())["complete"]
    assert sorted(p.name for p in (resumed / "epochs").iterdir()) == ["epoch_01", "epoch_02"]
    (resumed / "epochs" / ".epoch_03.tmp-999").mkdir()  # a save that died half-way
    assert train_loaded(loaded, make_config(labels, resumed)) == resumed
    assert losses(resumed) == losses(reference)
    assert sorted(p.name for p in (resumed / "epochs").iterdir()) == ["epoch_01", "epoch_02", "epoch_03"]
    for epoch in (1, 2, 3):
        assert_same_tensors(adapter(resumed, epoch), adapter(reference, epoch))
        assert_same_tensors(optimizer_state(resumed, epoch), optimizer_state(reference, epoch))


def test_finished_run_is_not_retrained_and_other_config_is_refused(loaded, labels, tmp_path):
    run = train_loaded(loaded, make_config(labels, tmp_path / "run", epochs=1))
    stamp = (run / "epochs/epoch_01" / lora_files.ADAPTER_FILE).stat().st_mtime_ns
    train_loaded(loaded, make_config(labels, tmp_path / "run", epochs=1))
    assert (run / "epochs/epoch_01" / lora_files.ADAPTER_FILE).stat().st_mtime_ns == stamp
    with pytest.raises(RunConflictError):
        train_loaded(loaded, make_config(labels, tmp_path / "run", epochs=1, rank=3))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rank": 0}, "rank: 0 must be at least 1"),
        ({"unknown": -1}, "unknown: -1 must be at least 1"),
        ({"extra": ("highly-known:5",)}, "needs 30 HighlyKnown"),
        ({"extra": ("famous:1",)}, "KIND:K"),
        ({"targets": "no_such_proj"}, "targets: .*no_such_proj"),
        ({"template": "{answer} then {question}"}, "template: must contain {question} and, after it, {answer}"),
        ({"loss_on": "prompt"}, "loss_on: 'prompt' is not one of answer, all"),
    ],
)
def test_bad_config_is_one_line_input_error(loaded, labels, tmp_path, overrides, message):
    with pytest.raises(InputError, match=message) as err:
        train_loaded(loaded, make_config(labels, tmp_path / "run", epochs=1, **overrides))
    assert "\n" not in str(err.value)
    assert not getattr(loaded.model, "peft_config", None)


def test_default_rows_are_the_study_zero_shot_chat_prompt(loaded, labels, tmp_path):
    run = train_loaded(loaded, make_config(labels, tmp_path / "run", epochs=1, template=None))
    row = pq.read_table(run / lora_files.TRAIN_SET_FILE).to_pylist()[0]
    assert row["prompt"].startswith("<|im_start|>system\nAnswer the following question.<|im_end|>")
    assert "<|im_start|>user\nQuestion: What is the capital of" in row["prompt"]
    assert row["prompt"].endswith("<|im_start|>assistant\n") and row["target"].startswith("Answer: City")
    plain = train_loaded(loaded, make_config(labels, tmp_path / "plain", epochs=1, template=None, chat=False))
    row = pq.read_table(plain / lora_files.TRAIN_SET_FILE).to_pylist()[0]
    assert row["prompt"].endswith("\nAnswer:") and "<|im_start|>" not in row["prompt"]

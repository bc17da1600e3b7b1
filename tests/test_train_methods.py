"""Training methods on one protocol (lora, dora, pissa, full): each trains, saves epochs that the label stage and
the benchmarks apply exactly as trained, resumes bit-identically, and leaves the base model bit for bit as it was."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from test_train_mixture import make_label_folder, write_questions

from knowpack.config import ConfigError
from knowpack.evaluate.harness import adapter_applied
from knowpack.models import load_model
from knowpack.probe.label import attached_adapters, merged_in
from knowpack.probe.stage import LabelConfig, LabelTarget
from knowpack.probe.stage import run_loaded as label
from knowpack.train import loop
from knowpack.train.folder import FULL_WEIGHTS_FILE, TrainRun
from knowpack.train.methods import METHODS
from knowpack.train.methods.full import swapped_in
from knowpack.train.stage import TrainConfig
from knowpack.train.stage import run_loaded as train

pytestmark = pytest.mark.usefixtures("one_thread")
METHOD_NAMES = ["lora", "dora", "pissa", "full"]
TEMPLATE = "Question: {question}\nAnswer: {answer}"
PROMPT = torch.tensor([[1, 400, 401, 402, 403, 404]])


@pytest.fixture(scope="module")
def loaded(lively_model_dir):
    return load_model(str(lively_model_dir), device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods-data")
    questions = root / "questions.parquet"
    return questions, make_label_folder(root / "labels", questions, write_questions(questions))


def config(data, out, method, **changes) -> TrainConfig:
    settings = dict(labels=data[1], out=out, method=method, unknown=4, epochs=2, batch_size=2, rank=2, alpha=4.0,
                    lr=1e-3 if method == "full" else 2e-2, seed=5, template=TEMPLATE, progress=False)
    return TrainConfig(**{**settings, **changes})


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def assert_unchanged(before: dict, model) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROMPT).logits


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_each_method_trains_and_its_epoch_is_applied_as_trained(method, loaded, data, tmp_path):
    base = snapshot(loaded.model)
    settings = config(data, tmp_path / "run", method)
    run = train(loaded, settings)
    assert_unchanged(base, loaded.model)
    assert not getattr(loaded.model, "peft_config", None)
    epoch = run.epochs[2]
    assert sorted(p.name for p in epoch.iterdir()) == sorted(METHODS[method].epoch_files)
    assert run.method == method and run.manifest["trainable_parameters"] > 0

    # the weights as trained: attached afresh and loaded the way a resume does
    with METHODS[method].attached(loaded.model, settings) as trainee:
        METHODS[method].load(trainee, epoch, torch.device("cpu"))
        trainee.eval()
        trained = logits(loaded.model)
    assert_unchanged(base, loaded.model)
    # ... equal the weights the label stage and the benchmarks apply (pissa: its rank-2r LoRA on the original base,
    # the same sum W_res + s·B·A = W + s·(B·A − B0·A0) up to float rounding)
    tolerance = 1e-3 if method == "pissa" else 1e-5
    applied = swapped_in(loaded.model, epoch) if method == "full" else attached_adapters(loaded.model, {"a": epoch})
    with applied as model:
        model.eval()
        assert (logits(model) - trained).abs().max() < tolerance
    with adapter_applied(loaded, epoch) as model:
        assert (logits(model) - trained).abs().max() < tolerance
    if method == "dora":  # labelled in a pass of its own, merged into the weights (peft cannot mix DoRA)
        with merged_in(loaded.model, epoch) as model:
            assert (logits(model) - trained).abs().max() < 1e-4
    assert not torch.allclose(logits(loaded.model), trained, atol=1e-3)
    assert_unchanged(base, loaded.model)


@pytest.mark.parametrize("method", ["dora", "pissa", "full"])
def test_label_applies_an_epoch_beside_the_base_model_in_one_call(method, loaded, data, tmp_path):
    """Adapters share the base model's pass (DoRA too, through peft's mixed batches); a full fine-tune gets its
    own (its weights replace the model's); the base answers stay the base's."""
    run = train(loaded, config(data, tmp_path / "run", method))
    base = snapshot(loaded.model)
    settings = LabelConfig(questions=data[0], out=tmp_path / "base", n_prompts=1, shots=0, n_samples=0,
                           max_new_tokens=4, progress=False)
    together = label(loaded, settings, [LabelTarget(tmp_path / "base"), LabelTarget(tmp_path / "after",
                                                                                     run.epochs[2])])
    alone = label(loaded, LabelConfig(**{**vars(settings), "out": tmp_path / "alone"}),
                  [LabelTarget(tmp_path / "alone")])
    answers = [pq.read_table(folder.path / "responses.parquet").to_pandas().sort_values("question_id")["answer"]
               for folder in (*together, *alone)]
    assert list(answers[0]) == list(answers[2])
    assert list(answers[0]) != list(answers[1])
    assert_unchanged(base, loaded.model)


def test_full_fine_tuning_of_every_weight_restores_the_base_weights_exactly(loaded, data, tmp_path):
    base = snapshot(loaded.model)
    flags = [p.requires_grad for p in loaded.model.parameters()]
    run = train(loaded, config(data, tmp_path / "run", "full", targets="all"))
    assert_unchanged(base, loaded.model)
    assert [p.requires_grad for p in loaded.model.parameters()] == flags and not loaded.model.training
    saved = load_file(run.epochs[2] / FULL_WEIGHTS_FILE)
    parameters = dict(loaded.model.named_parameters())
    assert saved.keys() == parameters.keys()  # every weight was trained (tied embeddings once)
    assert run.manifest["trainable_parameters"] == sum(p.numel() for p in parameters.values())
    assert all(not torch.equal(saved[name], base[name]) for name in saved if name.endswith("proj.weight"))
    with swapped_in(loaded.model, run.epochs[2]) as model:
        assert all(torch.equal(p, saved[name]) for name, p in model.named_parameters())
    assert_unchanged(base, loaded.model)


def test_full_fine_tuning_of_the_mlp_trains_only_the_mlp(loaded, data, tmp_path):
    run = train(loaded, config(data, tmp_path / "run", "full"))
    names = json.loads((run.epochs[1] / "full_weights.json").read_text())["parameters"]
    assert names and all(name.split(".")[-2] in ("gate_proj", "up_proj", "down_proj") for name in names)
    assert len(names) == 2 * 3  # 2 layers × gate/up/down weights (no biases in Llama)


@pytest.mark.parametrize("method", ["dora", "pissa", "full"])
def test_an_interrupted_run_resumes_bit_identical(method, loaded, data, tmp_path, monkeypatch):
    reference = train(loaded, config(data, tmp_path / "reference", method)).path
    real_batches = loop.epoch_batches

    def crash_in_epoch_2(n_rows, batch_size, seed, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_batches(n_rows, batch_size, seed, epoch)

    monkeypatch.setattr(loop, "epoch_batches", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(loaded, config(data, tmp_path / "resumed", method))
    monkeypatch.setattr(loop, "epoch_batches", real_batches)
    resumed = train(loaded, config(data, tmp_path / "resumed", method)).path
    for name in METHODS[method].epoch_files:
        assert (resumed / "epochs/epoch_02" / name).read_bytes() == (reference / "epochs/epoch_02" / name).read_bytes()


def test_targets_all_is_for_full_fine_tuning_only(data, tmp_path):
    with pytest.raises(ConfigError, match="targets: all .* is for --method full"):
        config(data, tmp_path / "run", "lora", targets="all")
    with pytest.raises(ConfigError, match="'qlora' is not one of dora, full, lora, pissa"):
        config(data, tmp_path / "run", "qlora")


def test_runs_made_before_methods_existed_read_as_lora(loaded, data, tmp_path):
    run = train(loaded, config(data, tmp_path / "run", "lora", epochs=1))
    manifest = json.loads((run.path / "manifest.json").read_text())
    del manifest["config"]["method"]
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    assert TrainRun(run.path).method == "lora"

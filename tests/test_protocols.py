"""The study protocol preset: every setting the study used, filled in under what the user gives (CLI, sweep, API),
and each run described against it."""

from pathlib import Path

import pytest
import yaml

from knowpack import protocols
from knowpack.cli import build_parser, config_from_args
from knowpack.errors import InputError
from knowpack.probe.stage import LabelConfig
from knowpack.sweep.spec import load_sweep
from knowpack.train.stage import TrainConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def parse(argv):
    args = build_parser().parse_args(argv)
    return config_from_args(args.command_object.config, args)


def test_train_protocol_study_sets_what_the_study_did_and_keeps_what_is_given():
    study = parse(["train", "--labels", "L", "--out", "R", "--protocol", "study"])
    assert (study.rank, study.alpha, study.rslora, study.dropout, study.targets) == (1, 2.0, True, 0.1, "mlp")
    assert (study.lr, study.epochs, study.batch_size, study.loss_on, study.seed) == (1e-3, 10, 8, "all", 42)
    ranked = parse(["train", "--labels", "L", "--out", "R", "--protocol", "study", "--rank", "8", "--loss-on", "answer"])
    assert (ranked.rank, ranked.alpha, ranked.loss_on) == (8, 16.0, "answer"), "alpha = 2·rank; given values win"
    default = parse(["train", "--labels", "L", "--out", "R"])
    assert (default.loss_on, default.rslora) == ("answer", False), "knowpack's defaults without the protocol"


def test_label_and_evaluate_protocol_study():
    label = parse(["label", "--questions", "q.parquet", "--out", "o", "--protocol", "study"])
    assert (label.n_prompts, label.shots, label.n_samples, label.max_new_tokens) == (10, 4, 0, 32)
    evaluate = parse(["evaluate", "RUN", "--protocol", "study", "--limit", "5"])
    assert evaluate.options["benchmarks"] == ("mmlu",) and evaluate.options["limit"] == 5
    assert TrainConfig.build({"labels": "L", "out": "R", "rank": 4}, "study").alpha == 8.0
    with pytest.raises(InputError, match="not a known protocol"):
        TrainConfig.build({"labels": "L", "out": "R"}, "paper")


def test_describe_tells_a_run_against_the_protocols():
    study = TrainConfig.build({"labels": "L", "out": "R", "seed": 1337}, "study").result_dict()
    assert protocols.describe("train", study) == "study"  # the seed is not part of the protocol's identity
    ranked = TrainConfig.build({"labels": "L", "out": "R", "rank": 8}, "study").result_dict()
    assert protocols.describe("train", ranked) == "study except rank=8, alpha=16.0"
    # knowpack's own defaults are the study's but for the loss mask and rsLoRA (docs/study-fidelity.md)
    assert protocols.describe("train", TrainConfig(labels="L", out="R").result_dict()) == \
        "study except rslora=False, loss_on=answer"
    assert protocols.describe("label", LabelConfig.build({"questions": "q", "out": "o"}, "study").result_dict()) == \
        "study"


def test_a_sweep_with_protocol_study_runs_the_studys_settings_and_seeds(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": "m", "protocol": "study",
                                    "data": {"questions": "q.parquet", "make": {"labels": {}}},
                                    "grid": {"unknown": [10], "rank": [1, 8]}}))
    spec = load_sweep(path)
    runs = spec.runs()
    assert sorted({r.params["seed"] for r in runs}) == [42, 1337, 10824] and len(runs) == 6
    configs = [spec.train_config(r, labels=Path("L"), out=Path("R")) for r in runs]
    assert {(c.rank, c.alpha) for c in configs} == {(1, 2.0), (8, 16.0)}
    assert all(c.loss_on == "all" and c.rslora and c.epochs == 10 for c in configs)
    _, _, labels = spec.data_configs(tmp_path)
    assert labels.n_samples == 0 and labels.max_new_tokens == 32
    path.write_text(yaml.safe_dump({"model": "m", "protocol": "paper", "data": {"questions": "q", "labels": "l"},
                                    "grid": {"unknown": [1]}}))
    with pytest.raises(InputError, match="protocol: 'paper' is not one of study"):
        load_sweep(path)


def test_the_example_study_grid_is_the_study_protocol():
    spec = load_sweep(EXAMPLES / "study_grid.yaml")
    assert spec.protocol == "study"
    configs = {protocols.describe("train", spec.train_config(r, labels=Path("L"), out=Path("R")).result_dict())
               for r in spec.runs()}
    assert configs == {"study"}
    assert spec.make_paraphrases is not None and spec.make_paraphrases["k"] >= 10

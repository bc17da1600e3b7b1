"""The evaluate stage end to end on the tiny model: real base labels (probe), a real 2-epoch training run (train),
then `knowpack evaluate` and `knowpack compare`."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from knowpack.assets import cache_dir
from knowpack.errors import InputError
from knowpack.cli import build_parser, config_from_args, main
from knowpack.evaluate.compare import compare
from knowpack.evaluate.stage import EvaluateConfig
from knowpack.evaluate.stage import run_loaded as evaluate_run
from knowpack.models import load_model
from knowpack.probe.stage import LabelConfig
from knowpack.probe.stage import run_loaded as label_loaded
from knowpack.runfolder import write_parquet
from knowpack.train.folder import TrainRun
from knowpack.train.stage import TrainConfig
from knowpack.train.stage import run_loaded as train_loaded


def evaluate_loaded(loaded, config):
    return evaluate_run(loaded, config).path


def options(**values):
    return {"options": values}

N_QUESTIONS = 12
PROBE = dict(n_prompts=2, shots=1, n_samples=1, max_new_tokens=4, progress=False)


def write_questions(path):
    n = N_QUESTIONS
    write_parquet(path, pa.table({
        "id": [f"capital/land_{i}" for i in range(n)],
        "subject": [f"Land {i}" for i in range(n)],
        "relation": ["capital" if i % 2 else "currency" for i in range(n)],
        "object": [f"City{i}" for i in range(n)],
        "question": [f"What is the capital of Land {i}?" for i in range(n)],
        "answer": [f"City{i}" for i in range(n)],
        "aliases": [[f"City{i}"] for i in range(n)],
        "bucket": [("head", "torso", "tail")[i % 3] for i in range(n)],
        "popularity": list(range(n)),
        "relation_domain": ["Country" if i % 2 else "Currency" for i in range(n)],
        "template_id": ["capital#0"] * n,
        "paraphrases": [[f"Which city is the capital of Land {i}?", f"Land {i}'s capital is?",
                         f"Name the capital of Land {i}."] for i in range(n)],
    }))


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def trained_run(loaded, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    questions = root / "questions.parquet"
    write_questions(questions)
    labels = root / "labels"
    label_loaded(loaded, LabelConfig(model=str(loaded.spec), questions=questions, out=labels, **PROBE))
    run = train_loaded(loaded, TrainConfig(labels=labels, out=root / "run", model=str(loaded.spec), unknown=3,
                                           extra=("paraphrase:1",), epochs=2, batch_size=2, lr=5e-2))
    return run.path


def test_evaluate_writes_every_table(loaded, trained_run):
    out = evaluate_loaded(loaded, EvaluateConfig(run=trained_run, heldout_paraphrases=2,
                                                 **options(benchmarks=("mmlu",), mmlu_subjects=("anatomy",), limit=2)))
    assert out == trained_run / "eval"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["stage"] == "evaluate"
    run = TrainRun(trained_run)
    train_set = run.train_set()

    reliability = pq.read_table(out / "reliability.parquet").to_pandas()
    assert sorted(set(reliability["epoch"])) == [0, 1, 2]
    trained = reliability[reliability["scope"] == "trained"]
    assert list(trained["n_questions"]) == [3, 3, 3] and list(trained["n_answers"]) == [6, 6, 6]  # 3 facts × 2 prompts
    held = reliability[reliability["scope"] == "heldout_paraphrase"]
    assert list(held["n_questions"]) == [6, 6, 6]  # 3 paraphrases per fact, 1 trained on, 2 held out
    probe_questions = pq.read_table(out / "probe_questions.parquet").to_pandas()
    trained_prompts = " ".join(train_set["prompt"])
    for paraphrase in probe_questions.loc[probe_questions["id"].str.contains("@paraphrase"), "question"]:
        assert paraphrase not in trained_prompts

    # "after" labels use the base labels' probe settings: same prompts and decoding, all questions
    base_config = json.loads((run.labels_path / "manifest.json").read_text())["config"]
    after_config = json.loads((out / "labels/epoch_02/manifest.json").read_text())["config"]
    assert {k: v for k, v in after_config.items() if k != "model"} == {k: v for k, v in base_config.items()
                                                                       if k != "model"}
    assert not (out / "labels/epoch_01").exists()  # --shift-epochs last
    assert json.loads((out / "probe_labels/epoch_01/manifest.json").read_text())["config"]["n_samples"] == 0

    matrix = pq.read_table(out / "shift.parquet").to_pandas()
    overall = matrix[(matrix["scope"] == "all") & (matrix["breakdown"] == "overall") & (matrix["match"] == "lenient")]
    assert len(overall) == 16 and overall["count"].sum() == N_QUESTIONS
    not_trained = matrix[(matrix["scope"] == "not_trained") & (matrix["breakdown"] == "overall")
                         & (matrix["match"] == "lenient")]
    assert not_trained["count"].sum() == N_QUESTIONS - train_set["question_id"].nunique()
    fractions = pq.read_table(out / "shift_fractions.parquet").to_pandas()
    assert set(fractions["breakdown"]) == {"overall", "bucket", "relation"} and set(fractions["epoch"]) == {2}

    for name in ("refusals", "collapse"):
        assert list(pq.read_table(out / f"{name}.parquet").column("epoch").to_pylist()) == [0, 2]
    for name in ("top_answers", "exploded", "spillover", "spillover_summary"):
        assert (out / f"{name}.parquet").is_file()
    bench = pq.read_table(out / "benchmarks.parquet").to_pandas()
    assert set(bench["model"]) == {"base", "epoch_02"}
    assert (out / "benchmarks" / "epoch_02.parquet").is_file()
    assert not (out / "benchmarks" / "base.parquet").exists(), "base scores live in the shared cache"
    cached = list((cache_dir() / "benchmark_scores").glob("base-*.parquet"))
    assert any(pq.read_table(f).to_pandas().equals(bench[bench["model"] == "base"].reset_index(drop=True))
               for f in cached)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["facts"] == 3 and summary["epochs"] == [1, 2] and summary["shift_epochs"] == [2]
    assert set(summary["shift"]) == {"all/lenient", "all/strict", "not_trained/lenient", "not_trained/strict"}
    assert summary["shift"]["all/lenient"]["n_questions"] == N_QUESTIONS
    assert set(summary["benchmarks"]["results"]["mmlu/acc"]) >= {"base", "epoch_02"}

    # resume: a second call finds the complete folder and recomputes nothing
    before = (out / "summary.json").stat().st_mtime_ns
    assert evaluate_loaded(loaded, EvaluateConfig(run=trained_run, heldout_paraphrases=2,
                                                  **options(benchmarks=("mmlu",), mmlu_subjects=("anatomy",), limit=2))) == out
    assert (out / "summary.json").stat().st_mtime_ns == before


def test_all_shift_epochs_reuse_finished_label_folders(loaded, trained_run, tmp_path):
    out = tmp_path / "eval-all"
    first = evaluate_loaded(loaded, EvaluateConfig(run=trained_run, out=out, shift_epochs="all", **options(benchmarks=())))
    assert sorted(p.name for p in (first / "labels").iterdir()) == ["epoch_01", "epoch_02"]
    fractions = pq.read_table(first / "shift_fractions.parquet").to_pandas()
    assert set(fractions["epoch"]) == {1, 2}
    assert len(pq.read_table(first / "benchmarks.parquet")) == 0

    # an interrupted evaluation: the summary is gone and the manifest not complete; labels are not redone
    stamp = (first / "labels/epoch_01/labels.parquet").stat().st_mtime_ns
    manifest = json.loads((first / "manifest.json").read_text())
    manifest["complete"] = False
    (first / "manifest.json").write_text(json.dumps(manifest))
    (first / "summary.json").unlink()
    evaluate_loaded(loaded, EvaluateConfig(run=trained_run, out=out, shift_epochs="all", **options(benchmarks=())))
    assert (first / "labels/epoch_01/labels.parquet").stat().st_mtime_ns == stamp
    assert (first / "summary.json").is_file()


def test_the_damage_is_measured_only_above_a_reliability_bound_and_added_when_asked(loaded, trained_run, tmp_path,
                                                                                       capsys):
    out = tmp_path / "eval-lazy"
    lazy = EvaluateConfig(run=trained_run, out=out, reliability_epochs="last", damage_if_reliability=1.0,
                          **options(benchmarks=("mmlu",), mmlu_subjects=("anatomy",), limit=2))
    first = evaluate_loaded(loaded, lazy)
    summary = json.loads((first / "summary.json").read_text())
    assert summary["reliability"]["trained"]["2"]["lenient"] < 1.0  # this run learnt part of its 3 facts
    assert summary["damage_measured"] is False and summary["shift_epochs"] == []
    assert [p.name for p in (first / "probe_labels").iterdir()] == ["epoch_02"]  # the last epoch alone
    assert not (first / "labels").exists() and not (first / "benchmarks.parquet").exists()
    assert sorted(p.name for p in first.glob("*.parquet")) == ["probe_questions.parquet", "reliability.parquet"]
    table = compare([first])
    assert "reliability trained (epoch 2)" in table.index and not any("shift" in str(k) for k in table.index)
    from knowpack.evaluate.compare import print_summary

    print_summary(summary)
    assert "Damage not measured" in capsys.readouterr().out

    # asked again without the bound: the same folder gains the damage, the packed facts' labels are kept
    stamp = (first / "probe_labels/epoch_02/labels.parquet").stat().st_mtime_ns
    evaluate_loaded(loaded, dataclasses.replace(lazy, damage_if_reliability=None))
    summary = json.loads((first / "summary.json").read_text())
    assert summary["damage_measured"] is True and summary["shift_epochs"] == [2]
    assert (first / "labels/epoch_02").is_dir() and (first / "shift.parquet").is_file()
    assert (first / "probe_labels/epoch_02/labels.parquet").stat().st_mtime_ns == stamp
    assert set(summary["benchmarks"]["results"]["mmlu/acc"]) >= {"base", "epoch_02"}


def parse(argv: list[str]) -> EvaluateConfig:
    args = build_parser().parse_args(argv)
    return config_from_args(args.command_object.config, args)


def test_cli_options_map_to_the_config():
    config = parse(["evaluate", "RUN", "--benchmarks", "mmlu,truthfulqa_mc1", "--mmlu-subjects", "anatomy,virology",
                    "--refusal-pattern", "a", "--refusal-pattern", "b", "--shift-epochs", "all", "--chat-template"])
    from knowpack.evaluate.metrics.benchmarks import BenchmarkOptions
    from knowpack.evaluate.metrics.refusals import RefusalOptions

    benchmarks = config.options_of(BenchmarkOptions)
    assert benchmarks.benchmarks == ("mmlu", "truthfulqa_mc1") and benchmarks.mmlu_subjects == ("anatomy", "virology")
    assert benchmarks.chat_template and config.options_of(RefusalOptions).refusal_patterns == ("a", "b")
    assert config.shift_epochs == "all" and config.out.name == "eval"
    assert parse(["evaluate", "RUN", "--benchmarks", "none"]).options_of(BenchmarkOptions).benchmarks == ()


def test_cli_evaluate_and_compare(loaded, trained_run, tmp_path, capsys):
    # the options of test_evaluate_writes_every_table: its evaluation is found complete and only printed
    assert main(["evaluate", str(trained_run), "--model", str(loaded.spec), "--benchmarks", "mmlu",
                 "--mmlu-subjects", "anatomy", "--limit", "2", "--heldout-paraphrases", "2", "--device", "cpu",
                 "--dtype", "float32"]) == 0
    printed = capsys.readouterr().out
    assert "Reliability" in printed and "distinct answers" in printed and "mmlu/acc" in printed
    assert f"evaluated: {trained_run / 'eval'}" in printed
    other = tmp_path / "copy" / "eval"
    shutil.copytree(trained_run / "eval", other)
    table = compare([trained_run, other.parent])
    assert list(table.columns) == ["run", "copy"]
    assert table.loc["facts"].tolist() == [3, 3] and table.loc["mmlu/acc base"].nunique() == 1
    assert main(["compare", str(trained_run), str(other), "--out", str(tmp_path / "side.csv")]) == 0
    assert "Runs side by side" in capsys.readouterr().out and (tmp_path / "side.csv").is_file()


def test_bad_inputs_are_one_line_errors(tmp_path, loaded, trained_run):
    with pytest.raises(InputError, match="not a training run folder .no manifest.json.; make one with `knowpack train`"):
        evaluate_loaded(loaded, EvaluateConfig(run=tmp_path))
    with pytest.raises(InputError, match="shift_epochs: 'first' is not one of last, all"):
        EvaluateConfig(run=trained_run, shift_epochs="first")
    with pytest.raises(InputError, match="no evaluation found"):
        compare([tmp_path])

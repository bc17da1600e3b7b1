"""Where knowpack grows: a metric, a fact source or a backend added in its own module takes part everywhere (the
stage, the CLI, sweeps, compare) without touching any other file. Each test plugs a member in as a module would."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from knowpack.cli import build_parser, config_from_args, main
from knowpack.config import Config, option
from knowpack.errors import InputError
from knowpack.evaluate.measure import compute_tables, summarize
from knowpack.evaluate.metrics import LOWER, METRICS, Figure, Metric, MetricContext, all_figures, epoch_first
from knowpack.evaluate.stage import EvaluateConfig
from knowpack.kg.folder import QUESTIONS_SCHEMA
from knowpack.kg.sources import SOURCES, Source
from knowpack.kg.stage import QuestionsConfig
from knowpack.kg.stage import run as build_questions
from knowpack.probe.backends import BACKENDS, Backend
from knowpack.registry import Registry


def plug(monkeypatch, registry: Registry, name: str, member) -> None:
    """What a new module's registration does, undone after the test."""
    registry.names()  # load the package's own members first
    monkeypatch.setitem(registry._members, name, member)


def test_a_registry_lists_its_package_and_refuses_unknown_names():
    assert {"reliability", "shift", "refusals", "collapse", "spillover", "benchmarks"} <= set(METRICS.names())
    assert set(SOURCES.names()) >= {"embedded", "dbpedia"} and set(BACKENDS.names()) >= {"prefix", "generate"}
    with pytest.raises(InputError, match=r"'nope': not a known metric \(known: "):
        METRICS["nope"]


@dataclass
class LengthOptions(Config):
    length_unit: str = option("words", help="unit of answer length", choices=("words", "chars"))


class AnswerLength(Metric):
    name = "answer_length"
    order = 4.7
    tables = {"answer_length": pa.schema([("epoch", pa.int32()), ("mean", pa.float64())])}
    Options = LengthOptions

    def compute(self, ctx):
        unit = ctx.options(self).length_unit
        size = (lambda a: len(a.split())) if unit == "words" else len
        rows = [{"epoch": e, "mean": float(r[r["sample_id"] == 0]["answer"].map(size).mean())}
                for e, r in [(0, ctx.base_responses), *((e, r) for e, (r, _) in sorted(ctx.after.items()))]]
        return {"answer_length": epoch_first(pd.DataFrame(rows))}

    def summarize(self, tables, ctx):
        return {"answer_length": float(tables["answer_length"]["mean"].iloc[-1])}

    def figures(self, summary):
        return [Figure("answer_length", "mean answer length", summary["answer_length"], LOWER)]


def answers(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"question_id": [f"q{i}" for i in range(len(texts))], "prompt_id": 0, "sample_id": 0,
                         "answer": texts, "correct_lenient": False, "correct_strict": False}).astype(
        {"prompt_id": "int16", "sample_id": "int16"})


def test_a_new_metric_runs_with_the_others_and_its_options_reach_every_entry_point(monkeypatch, tmp_path):
    plug(monkeypatch, METRICS, AnswerLength.name, AnswerLength())
    config = EvaluateConfig.from_dict({"length_unit": "chars", "benchmarks": "none"}, where="evaluate", run=tmp_path)
    questions = pd.DataFrame([{"id": f"q{i}", "subject": "s", "relation": "r", "object": "o", "question": "?",
                               "answer": "a", "aliases": ["a"], "bucket": "head", "popularity": 1,
                               "relation_domain": "undefined", "template_id": "r#0", "paraphrases": []}
                              for i in range(2)])
    labels = pd.DataFrame({"question_id": ["q0", "q1"], "category": "Unknown", "category_strict": "Unknown"})
    ctx = MetricContext(config=config, questions=questions, train_set=pd.DataFrame(
        {"row_id": [0], "kind": ["unknown"], "question_id": ["q0"], "prompt": ["p"], "target": ["a"]}),
        unknown_ids=["q0"], paraphrase_ids=[], base_responses=answers(["ab", "abcd"]), base_labels=labels,
        probe={0: answers(["x", "y"]), 1: answers(["a", "y"])}, after={1: (answers(["a", "abcdef"]), labels)})
    tables = compute_tables(ctx)
    assert tables["answer_length"]["mean"].tolist() == [3.0, 3.5]  # (2 + 4) / 2 chars, then (1 + 6) / 2
    run = type("Run", (), {"path": tmp_path, "unknown_ids": ["q0"], "epochs": {1: tmp_path},
                           "shift_epochs": lambda self, which: [1]})()
    summary = summarize(tables, ctx, run, config)
    assert summary["answer_length"] == 3.5
    assert Figure("answer_length", "mean answer length", 3.5, LOWER) in all_figures(summary)
    parsed = build_parser().parse_args(["evaluate", "RUN", "--length-unit", "words"])
    assert config_from_args(EvaluateConfig, parsed).options == {"length_unit": "words"}
    assert main(["evaluate", str(tmp_path), "--length-unit", "lines"]) == 2


def test_a_new_fact_source_is_offered_by_the_cli_and_builds(monkeypatch, tmp_path, capsys):
    @dataclass
    class ListOptions(Config):
        capitals: tuple[str, ...] = option(help="country=capital pairs", split=",")

    def build(request):
        rows = []
        for i, pair in enumerate(request.options.capitals):
            country, capital = pair.split("=")
            rows.append({"id": f"capital/{country}", "subject": country, "relation": "capital", "object": capital,
                         "question": f"What is the capital of {country}?", "answer": capital, "aliases": [capital],
                         "bucket": ("head", "torso", "tail")[i % 3], "popularity": 1, "relation_domain": "Country",
                         "template_id": "capital#0", "paraphrases": []})
        return pa.Table.from_pylist(rows, schema=QUESTIONS_SCHEMA), {"relation_table": []}

    plug(monkeypatch, SOURCES, "list", Source("list", "capitals given on the command line", build,
                                               default_per_bucket=5, Options=ListOptions, templates="embedded"))
    folder = build_questions(QuestionsConfig(out=tmp_path / "q", source="list", progress=False,
                                             options={"capitals": "France=Paris,Peru=Lima"}))
    assert pq.read_table(folder.file("questions.parquet")).column("answer").to_pylist() == ["Paris", "Lima"]
    assert main(["questions", "--source", "list", "--capitals", "Japan=Tokyo", "--out", str(tmp_path / "cli"),
                 "--no-progress"]) == 0
    assert main(["questions", "--capitals", "Japan=Tokyo", "--out", str(tmp_path / "x")]) == 2
    assert "--capitals: applies to source list only" in capsys.readouterr().err


def test_a_new_backend_serves_the_label_stage(monkeypatch, tmp_path, tiny_model_dir):
    from knowpack.probe.backends import Generation
    from knowpack.probe.stage import LabelConfig
    from knowpack.probe.stage import run as label

    class Echo:
        def __init__(self, model, tokenizer, decoding, batch_size, router=None):
            self.token = tokenizer.encode(" Paris", add_special_tokens=False)

        def generate(self, jobs):
            for index, _ in enumerate(jobs):
                yield [index], [[Generation(tuple(self.token), False)]]

    plug(monkeypatch, BACKENDS, "echo", Backend("echo", "always answers Paris", Echo))
    questions = tmp_path / "q.parquet"
    pq.write_table(pa.table({"id": ["capital/France", "capital/Peru"],
                                     "question": ["What is the capital of France?", "What is the capital of Peru?"],
                                     "aliases": [["Paris"], ["Lima"]]}), questions)
    folder = label(LabelConfig(questions=questions, out=tmp_path / "labels", model=str(tiny_model_dir),
                               backend="echo", n_prompts=1, n_samples=0, progress=False, device="cpu"))
    categories = folder.labels().set_index("question_id")["category"].to_dict()
    assert categories == {"capital/France": "HighlyKnown", "capital/Peru": "Unknown"}
    assert folder.settings["backend"] == "echo"


def test_a_cached_source_is_copied_until_the_build_code_changes(monkeypatch, tmp_path):
    import knowpack.kg.stage as questions_module

    builds = []

    def build(request):
        builds.append(request.config.out)
        row = {"id": "capital/Peru", "subject": "Peru", "relation": "capital", "object": "Lima",
               "question": "What is the capital of Peru?", "answer": "Lima", "aliases": ["Lima"], "bucket": "head",
               "popularity": 1, "relation_domain": "Country", "template_id": "capital#0", "paraphrases": []}
        return pa.Table.from_pylist([row], schema=QUESTIONS_SCHEMA), {"relation_table": []}

    plug(monkeypatch, SOURCES, "pinned", Source("pinned", "one pinned fact", build, default_per_bucket=1,
                                                 templates="embedded", cached=True))
    monkeypatch.setattr(questions_module, "cache_dir", lambda: tmp_path / "cache")
    for out in ("a", "b"):
        build_questions(QuestionsConfig(out=tmp_path / out, source="pinned", progress=False))
    assert builds == [tmp_path / "a"], "the second set is the cache's copy"
    monkeypatch.setattr(questions_module, "build_code_hash", lambda: "another-knowpack")
    build_questions(QuestionsConfig(out=tmp_path / "c", source="pinned", progress=False))
    assert builds == [tmp_path / "a", tmp_path / "c"], "a set another build code made is not copied"

"""`knowpack inject`: input errors before any model loads, the guard sample, template paraphrases, the mixture
policy, the epoch choice, and whole injections on the tiny model (resume, export); the real model in a slow test."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import error_line, write_capital_questions
from knowpack import cli
from knowpack.inject import pipeline
from knowpack.inject.folder import InjectFolder
from knowpack.inject.outcome import choose_epoch, epoch_rows
from knowpack.inject.policy import Mixture, choose_mixture, fit_paraphrases
from knowpack.inject.questions import facts_to_pack, stratified_sample, with_template_paraphrases
from knowpack.inject.stage import InjectConfig
from knowpack.kg.facts_file import read_facts
from knowpack.kg.folder import QUESTIONS_SCHEMA

INVENTED = Path(__file__).parent / "data" / "invented_facts.jsonl"


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


# ---------------------------------------------------------------- input errors: one line, before a model loads


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to resolve or load a model fails the test: input errors must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was touched before the inputs were checked")

    monkeypatch.setattr("knowpack.models.load_model", refuse)
    monkeypatch.setattr("knowpack.models.resolve_model", refuse)


GOOD = {"question": "What is the capital of Zorvania?", "answer": "Tarnholt"}


@pytest.mark.parametrize(("rows", "message"), [
    ([GOOD, "{not json"], "facts.jsonl: row 2: not JSON"),
    ([GOOD, {"question": "Who founded Nuvaren Foods?"}], "facts.jsonl: row 2: missing or empty answer"),
    ([GOOD, {"question": "Who founded Nuvaren Foods?", "answer": "  "}], "row 2: missing or empty answer"),
    ([GOOD, {"question": "what is the capital of zorvania", "answer": "X"}],
     "row 2: repeats the question of row 1"),
    ([{"question": "In which year was Nuvaren Foods founded?", "answer": 1846}], "row 1: answer must be text"),
    ([{**GOOD, "aliases": "Tarn"}], "row 1: aliases must be a list of strings"),
    ([{**GOOD, "colour": "red"}], "row 1: unknown field 'colour'"),
])
def test_bad_rows_are_one_line_errors(tmp_path, capsys, no_model, rows, message):
    facts = write_lines(tmp_path / "facts.jsonl", rows)
    assert message in error_line(capsys, ["inject", str(facts), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_other_input_errors_are_one_line(tmp_path, capsys, no_model):
    facts = write_lines(tmp_path / "facts.jsonl", [GOOD])
    csv = tmp_path / "facts.csv"
    csv.write_text("question,answer,colour\nWho?,Me,red\n")
    guard = tmp_path / "guard.parquet"
    pq.write_table(pa.table({"id": ["capital/x"], "question": ["Q?"]}), guard)
    clash = write_capital_questions(tmp_path / "clash.parquet", 2)
    facts_with_id = write_lines(tmp_path / "ids.jsonl", [{**GOOD, "id": "capital/c0"}])
    bad_known = write_lines(tmp_path / "known.jsonl", [GOOD, "{"])
    cases = [
        ([str(tmp_path / "missing.jsonl")], "missing.jsonl: file not found"),
        ([str(csv)], "facts.csv: unknown column 'colour'"),
        ([str(facts), "--guard", str(guard)], "guard.parquet: missing column(s)"),
        ([str(facts_with_id), "--guard", str(clash)], "question id 'capital/c0' is also a fact's id"),
        ([str(facts), "--known", str(bad_known)], "known.jsonl: row 2: not JSON"),
        ([str(facts), "--extra", "known:3"], "--extra 'known:3': expected KIND:K"),
        ([str(facts), "--guard-size", "0"], "--guard-size: 0 must be at least 1"),
        ([str(facts), "--max-negative-shift", "2"], "--max-negative-shift: 2.0 must be at most 1"),
        ([str(facts), "--targets", "not a module!"], "--targets"),
    ]
    for args, message in cases:
        error = error_line(capsys, ["inject", *args, "--out", str(tmp_path / "out")])
        assert message in error, (args, error)


def test_skip_bad_rows_drops_and_counts_them(tmp_path):
    facts = write_lines(tmp_path / "facts.jsonl", [GOOD, "{not json", {"question": "Who?"}, {**GOOD}])
    inputs = pipeline.read_inputs(InjectConfig(facts=facts, out=tmp_path / "out", skip_bad_rows=True))
    assert inputs.facts.num_rows == 1
    assert [row for row, _ in inputs.skipped] == [2, 3, 4]


def test_machine_defaults():
    config = InjectConfig(facts=INVENTED, out=Path("out"))
    cpu, gpu = pipeline.machine_settings(config, gpu=False), pipeline.machine_settings(config, gpu=True)
    assert (cpu["guard_size"], cpu["prompts"], cpu["options"]) == (200, 3, pipeline.CPU_BENCHMARKS)
    assert (gpu["guard_size"], gpu["prompts"], gpu["options"]) == (None, 10, {})  # None: the whole guard set
    given = InjectConfig(facts=INVENTED, out=Path("out"), guard_size=50, prompts=4, options={"limit": 5})
    assert pipeline.machine_settings(given, gpu=False) == {"machine": "cpu", "guard_size": 50, "prompts": 4,
                                                           "options": {"limit": 5}}


# ---------------------------------------------------------------- the tables an injection is made of


def test_known_facts_are_left_out_unless_kept(tmp_path):
    facts = read_facts(write_lines(tmp_path / "facts.jsonl", [
        {"question": f"Question {i}?", "answer": f"A{i}", "id": f"f{i}"} for i in range(4)])).table
    categories = {"f0": "HighlyKnown", "f1": "Unknown", "f2": "MaybeKnown", "f3": "Unknown"}
    assert facts_to_pack(facts, categories, keep_known=False).column("id").to_pylist() == ["f1", "f3"]
    assert facts_to_pack(facts, categories, keep_known=True).column("id").to_pylist() == ["f0", "f1", "f2", "f3"]


def test_stratified_sample_spreads_over_relations_and_buckets():
    # 3 relations × 3 buckets; relation "big" has 20 questions per bucket, "mid" 4, "small" 1
    rows = []
    for relation, per_bucket in (("big", 20), ("mid", 4), ("small", 1)):
        for bucket in ("head", "torso", "tail"):
            rows += [{"id": f"{relation}/{bucket}{i}", "relation": relation, "bucket": bucket,
                      "question": f"{relation} {bucket} {i}?"} for i in range(per_bucket)]
    table = pa.Table.from_pylist(rows)
    sample = stratified_sample(table, 18, seed=0)
    # 9 strata: round 1 takes 9, round 2 the 6 strata of "big" and "mid" (each "small" one is empty), round 3
    # the 3 left from the first 3 of those 6 in the seeded order: three strata hold 3, three hold 2
    counts = Counter(zip(sample.column("relation").to_pylist(), sample.column("bucket").to_pylist()))
    assert sample.num_rows == 18 and len(set(sample.column("id").to_pylist())) == 18
    assert all(counts[("small", b)] == 1 for b in ("head", "torso", "tail"))
    assert sorted(counts[(r, b)] for r in ("big", "mid") for b in ("head", "torso", "tail")) == [2, 2, 2, 3, 3, 3]
    assert stratified_sample(table, 18, seed=0).column("id").to_pylist() == sample.column("id").to_pylist()
    assert stratified_sample(table, None, seed=0).num_rows == table.num_rows == 75
    assert stratified_sample(table, 500, seed=0).num_rows == 75


def test_template_paraphrases_fill_the_relations_phrasings(tmp_path):
    facts = write_lines(tmp_path / "facts.jsonl", [
        {"question": "What is the capital of Zorvania?", "answer": "Tarnholt", "subject": "Zorvania",
         "relation": "capital"},
        {"question": "Who founded Nuvaren Foods?", "answer": "Teodor Halvric", "subject": "Nuvaren Foods"},
    ])
    table, added = with_template_paraphrases(read_facts(facts).table)
    # the embedded templates of `capital`, less the question itself (templates/embedded.yaml)
    assert table.column("paraphrases").to_pylist() == [
        ["Which city is the capital of Zorvania?", "Zorvania has which city as its capital?",
         "Name the capital city of Zorvania."], []]
    assert added == 3


# ---------------------------------------------------------------- policy and the epoch choice


def test_mixture_policy():
    small = choose_mixture(30, known_available=40)
    assert small.extra == ["paraphrase:1", "highly-known:1"] and not small.given
    assert choose_mixture(30, known_available=29).extra == ["paraphrase:1"]  # 30 known facts needed
    assert "29 of" in choose_mixture(30, known_available=29).reasons[1]
    assert choose_mixture(501, known_available=10_000).extra == ["paraphrase:1"]
    given = choose_mixture(30, 0, given=("highly-known:2",))
    assert given.extra == ["highly-known:2"] and given.given
    lacking = fit_paraphrases(small, {"a": 2, "b": 0})
    assert lacking.extra == ["highly-known:1"] and "1 of the facts" in lacking.reasons[-1]
    assert fit_paraphrases(small, {"a": 2, "b": 1}).extra == small.extra
    assert fit_paraphrases(Mixture(["paraphrase:1"], given=True), {"b": 0}).extra == ["paraphrase:1"]


def epoch(number, reliability, negative, mmlu_drop=None):
    benchmarks = {} if mmlu_drop is None else {"mmlu/acc": {"value": 0.3 - mmlu_drop, "stderr": 0.05,
                                                            "drop": mmlu_drop}}
    return {"epoch": number, "reliability": reliability, "guard_negative_shift": negative, "benchmarks": benchmarks}


def test_epoch_rows_by_hand():
    guard = pd.DataFrame({"id": ["g0", "g1", "g2", "g3"], "bucket": ["head"] * 4, "relation": ["capital"] * 4})

    def labels(categories):
        return pd.DataFrame({"question_id": ["g0", "g1", "g2", "g3", "f0"], "category": categories})

    base = labels(["HighlyKnown", "MaybeKnown", "Unknown", "HighlyKnown", "Unknown"])
    # epoch 1: g0 fell (HK→UK), g1 rose (MK→HK), g2 and g3 stayed; the fact f0 rose but is no guard question
    after = {1: labels(["Unknown", "HighlyKnown", "Unknown", "HighlyKnown", "HighlyKnown"])}
    summary = {"reliability": {"trained": {"0": {"lenient": 0.0}, "1": {"lenient": 1.0}},
                               "heldout_paraphrase": {"0": {"lenient": 0.0}, "1": {"lenient": 0.5}}},
               "benchmarks": {"results": {"mmlu/acc": {"base": {"value": 0.30, "stderr": 0.04},
                                                       "epoch_01": {"value": 0.25, "stderr": 0.03}}}}}
    rows = epoch_rows(summary, base, after, guard)
    assert rows[0] == {"epoch": 0, "reliability": 0.0, "heldout_reliability": 0.0, "guard_negative_shift": 0.0,
                       "guard_positive_shift": 0.0, "benchmarks": {"mmlu/acc": {"value": 0.30, "stderr": 0.04,
                                                                                "drop": 0.0}}}
    assert rows[1]["guard_negative_shift"] == 1 / 4 and rows[1]["guard_positive_shift"] == 1 / 4
    assert rows[1]["heldout_reliability"] == 0.5
    assert rows[1]["benchmarks"]["mmlu/acc"]["drop"] == pytest.approx(0.05)


def test_choose_epoch_best_reliability_within_the_limit():
    rows = [epoch(0, 0.0, 0.0), epoch(1, 0.4, 0.01), epoch(2, 0.9, 0.04), epoch(3, 0.9, 0.05), epoch(4, 1.0, 0.12)]
    # epoch 4 breaks the 0.1 limit; epochs 2 and 3 tie on reliability: the earlier one
    assert choose_epoch(rows, 0.1, None) == {"epoch": 2, "limit_met": True, "why": (
        "the best reliability of the 3 epoch(s) within the damage limit")}
    assert choose_epoch(rows, None, None)["epoch"] == 4
    assert choose_epoch(rows, 0.02, None)["epoch"] == 1
    none_within = choose_epoch(rows, 0.001, None)
    assert none_within["epoch"] == 1 and not none_within["limit_met"]  # the least damaging
    with_mmlu = [epoch(0, 0.0, 0.0, 0.0), epoch(1, 0.5, 0.0, 0.01), epoch(2, 1.0, 0.0, 0.03)]
    assert choose_epoch(with_mmlu, 0.1, 0.02)["epoch"] == 1
    assert choose_epoch(with_mmlu, 0.1, None)["epoch"] == 2



def test_first_paragraph_says_what_the_damage_limit_cost():
    from knowpack.inject.report import first_paragraph

    rows = [{**epoch(n, r, s), "heldout_reliability": None}
            for n, r, s in ((0, 0.0, 0.0), (1, 0.1, 0.05), (2, 0.9, 0.12))]
    record = {"facts": {"stuck": 3, "packed": 30, "known": [], "kept_known": False, "skipped": []},
              "chosen": choose_epoch(rows, 0.1, None), "epochs": rows,
              "limit": {"max_negative_shift": 0.1, "max_benchmark_drop": None},
              "damage": {"shift": {"negative": 0.05, "positive": 0.02, "n_questions": 200, "negative_ci": [0.02, 0.08]},
                         "answers": {"base": {"refusal_rate": 0.1}, "after": {"refusal_rate": 0.05}}}}
    text = first_paragraph(record)
    assert text.startswith("3 of 30 facts stuck (answered right under every prompt) with the adapter of epoch 1 of 2")
    assert text.endswith("Epoch 2 reached reliability 90% at a negative shift of 12.0%, outside the damage limit "
                         "(negative shift ≤ 0.1); raise the limit to export it.")
    record["chosen"] = choose_epoch(rows, None, None)
    assert "raise the limit" not in first_paragraph(record)  # the most reliable epoch is the one exported

# ---------------------------------------------------------------- whole injections on the tiny model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One response store for this module's injections, as every injection on a machine shares one."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def own_store(monkeypatch, store):
    monkeypatch.setattr(pipeline, "shared_store", lambda: store)
    return store


def tiny_injection(tmp_path: Path, model_dir: Path, out: str, **options) -> InjectConfig:
    facts = write_lines(tmp_path / "facts.jsonl", [
        {"question": f"What is the capital of Zorvania{i}?", "answer": f"Tarnholt{i}", "subject": f"Zorvania{i}",
         "relation": "capital"} for i in range(4)] + [
        {"question": "Who founded Glimmerforge?", "answer": "Idris Venn", "subject": "Glimmerforge",
         "paraphrases": ["Glimmerforge was founded by whom?"]}])
    guard = write_capital_questions(tmp_path / "guard.parquet", 12)
    known = write_lines(tmp_path / "known.jsonl", [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)}
                                                    for i in range(6)])
    return InjectConfig(facts=facts, out=tmp_path / out, model=str(model_dir), guard=guard, known=known, prompts=2,
                        epochs=2, batch_size=4, heldout_paraphrases=1, progress=False, options={"benchmarks": ()},
                        **options)


@pytest.fixture(scope="module")
def injected(tmp_path_factory, lively_model_dir, store) -> InjectFolder:
    """One whole injection on the tiny model, shared by the tests that read it (a run takes tens of seconds)."""
    from knowpack.inject.stage import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture, for the module
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OMP_NUM_THREADS", "1")
            patch.setattr(pipeline, "shared_store", lambda: store)
            return run(tiny_injection(tmp_path_factory.mktemp("injection"), lively_model_dir, "whole"))
    finally:
        torch.set_num_threads(threads)


def test_injection_on_the_tiny_model(tmp_path, lively_model_dir, injected, capsys):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    import knowpack

    folder = injected
    record = folder.summary()
    assert folder.manifest["complete"] and folder.manifest["summary"] == record["summary"]
    # the lively model knows none of the invented facts: all five are packed
    assert record["facts"]["rows"] == 5 and record["facts"]["known"] == [] and record["facts"]["packed"] == 5
    # 3 template phrasings per capital fact; Glimmerforge has 1 of the 2 needed (1 to train, 1 held out), so the
    # paraphrase stage was asked for it alone (the random model writes nothing that names Glimmerforge)
    assert record["facts"]["paraphrases"] == {"given": 1, "templates": 12, "generated": 0}
    asked = pq.read_table(folder.file("data/paraphrase_input.parquet")).column("question").to_pylist()
    assert asked == ["Who founded Glimmerforge?"] and folder.file("paraphrases/manifest.json").is_file()
    assert record["mixture"]["extra"] == ["paraphrase:1"]  # 0 of the 6 --known facts are HighlyKnown
    assert record["guard"]["questions"] == 12 and [r["epoch"] for r in record["epochs"]] == [0, 1, 2]
    assert record["summary"].startswith(f"{record['facts']['stuck']} of 5 facts stuck")
    train_set = pq.read_table(folder.file("run/train_set.parquet")).to_pandas()
    assert Counter(train_set["kind"]) == {"unknown": 5, "paraphrase": 5}
    assert set(train_set["question_id"]) == set(pq.read_table(folder.file("data/facts.parquet")).column("id")
                                                .to_pylist())  # no guard question was trained

    chosen = record["chosen"]["epoch"]
    adapter = folder.adapter
    exported = load_file(adapter / "adapter_model.safetensors")
    trained = load_file(folder.file(f"run/epochs/epoch_{chosen:02d}/adapter_model.safetensors"))
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in exported)
    base = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter))  # plain peft, nothing of knowpack
    assert model.peft_config["default"].r == 8
    card = (adapter / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n") and f"knowpack {knowpack.__version__}" in card
    assert f"# {record['facts']['stuck']} of 5 facts packed" in card and "negative shift" in card
    for report in (folder.html, folder.file("report.md")):
        text = report.read_text()
        assert record["summary"] in text and "all of its questions" in text  # the guard's size is stated

    # the base labels against the exported adapter: over the guard (nothing of it trained) the same damage
    out = tmp_path / "diff.json"
    assert cli.main(["diff", str(folder.file("labels")), str(folder.path), "--json", str(out),
                     "--resamples", "100"]) == 0
    capsys.readouterr()
    guard = json.loads(out.read_text())["shift"]["not_trained/lenient"]
    assert guard["n_questions"] == 12 and guard["negative"] == record["damage"]["shift"]["negative"]


def test_an_interrupted_injection_resumes_to_the_same_result(lively_model_dir, injected, own_store, one_thread,
                                                             monkeypatch):
    from knowpack.evaluate import stage as evaluate_stage
    from knowpack.inject.stage import run

    whole = injected
    evaluate = evaluate_stage.run_loaded

    def interrupted(loaded, config):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_stage, "run_loaded", interrupted)
    config = tiny_injection(whole.path.parent, lively_model_dir, "resumed")  # the same input files
    with pytest.raises(KeyboardInterrupt):
        run(config)
    assert (config.out / "run/epochs/epoch_02").is_dir() and not (config.out / "inject.json").exists()
    monkeypatch.setattr(evaluate_stage, "run_loaded", evaluate)
    resumed = run(config)
    assert resumed.summary() == whole.summary()
    for name in ("adapter/adapter_model.safetensors", "run/train_set.parquet", "labels/labels.parquet"):
        assert resumed.file(name).read_bytes() == whole.file(name).read_bytes()


# ---------------------------------------------------------------- the real embedded model


@pytest.mark.slow
@pytest.mark.long  # 9.6 min on 2 quiet cores (15+ loaded): `make test-long`, not CI's suite
def test_invented_facts_on_the_embedded_model(tmp_path, embedded_model_dir):
    """30 facts about entities that do not exist: every one is Unknown, and the exported adapter answers them."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from knowpack.probe.prompts import training_example
    from knowpack.text import extract_answer, match_lenient

    out = tmp_path / "inject"
    # a guard of 60 questions keeps this test at a few minutes on 2 cores (the CPU default, 200, is what the
    # first paragraph's numbers are measured on); no damage limit, so the export is the epoch that learnt most
    assert cli.main(["inject", str(INVENTED), "--out", str(out), "--no-progress", "--guard-size", "60",
                     "--max-negative-shift", "1"]) == 0
    folder = InjectFolder(out)
    record = folder.summary()
    assert record["facts"]["known"] == [] and record["facts"]["packed"] == 30
    assert record["guard"] == {**record["guard"], "source": "the embedded question set", "size": 60}
    assert record["epochs"][0]["reliability"] == 0.0

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(folder.adapter)).eval()
    right = 0
    for fact in (json.loads(line) for line in INVENTED.read_text().splitlines()):
        prompt, _ = training_example(tokenizer, fact["question"], fact["answer"], True)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
        answer = extract_answer(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        right += match_lenient(answer, [fact["answer"]])
    # the zero-shot training prompt is not one of the few-shot probe prompts, so this is its own measurement
    assert right >= 0.5 * 30, f"the exported adapter answers {right} of 30 facts"
    assert QUESTIONS_SCHEMA.names == pq.read_table(out / "data/questions.parquet").schema.names

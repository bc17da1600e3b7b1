"""The label stage: outputs in the contract's schema, SliCK categories, resume, store isolation, input errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from knowpack.errors import InputError, RunConflictError
from knowpack.models import load_model
from knowpack.cli import main
from knowpack.probe.engine import PrefixEngine
from knowpack.probe.stage import LabelConfig, LabelTarget
from knowpack.probe.stage import run as label
from knowpack.probe.stage import run_loaded


def label_loaded(loaded, config, targets):
    return [folder.path for folder in run_loaded(loaded, config, targets)]
from knowpack.probe.folder import LABELS_SCHEMA, RESPONSES_SCHEMA
from knowpack.text import extract_answer

QUESTIONS = {
    "capital/France": ("What is the capital of France?", ["Paris"]),
    "capital/Peru": ("What is the capital of Peru?", ["Lima"]),
    "author/Hamlet": ("Who wrote Hamlet?", ["William Shakespeare", "Shakespeare"]),
    "river/Vienna": ("Which river flows through Vienna?", ["Danube", "Donau"]),
}

pytestmark = pytest.mark.usefixtures("one_thread")


def write_questions(path, aliases=None):
    ids = list(QUESTIONS)
    table = pa.table({
        "id": ids,
        "question": [QUESTIONS[i][0] for i in ids],
        "aliases": [(aliases or {}).get(i, QUESTIONS[i][1]) for i in ids],
        "relation": [i.split("/")[0] for i in ids],
        "answer": [QUESTIONS[i][1][0] for i in ids],
    })
    pq.write_table(table, path)
    return path




@pytest.fixture(scope="module")
def loaded(lively_model_dir):
    return load_model(str(lively_model_dir), device="cpu")


def small_config(tmp_path, **changes) -> LabelConfig:
    settings = dict(questions=write_questions(tmp_path / "questions.parquet"), out=tmp_path / "labels", n_prompts=2,
                    n_samples=2, temperature=1.0, max_new_tokens=5, progress=False, batch_size=16)
    settings.update(changes)
    return LabelConfig(**settings)


def count_generations(monkeypatch) -> list[int]:
    calls = [0]
    original = PrefixEngine.generate_batch

    def counting(self, jobs):
        calls[0] += len(jobs)
        return original(self, jobs)

    monkeypatch.setattr(PrefixEngine, "generate_batch", counting)
    return calls


def test_label_writes_the_contract_and_consistent_categories(loaded, tmp_path):
    config = small_config(tmp_path)
    out, = label_loaded(loaded, config, [LabelTarget(config.out)])
    responses = pq.read_table(out / "responses.parquet")
    labels = pq.read_table(out / "labels.parquet")
    assert responses.schema.equals(RESPONSES_SCHEMA) and labels.schema.equals(LABELS_SCHEMA)
    assert responses.num_rows == len(QUESTIONS) * 2 * 3 and labels.num_rows == len(QUESTIONS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["config"]["chat"] is True and manifest["config"]["n_samples"] == 2
    assert manifest["extra_key"]["model_fingerprint"] == loaded.fingerprint
    df = responses.to_pandas()
    for row in labels.to_pylist():
        mine = df[df.question_id == row["question_id"]]
        greedy = mine[mine.sample_id == 0].sort_values("prompt_id")
        assert row["p_greedy"] == greedy.correct_lenient.mean()
        assert row["p_sample"] == mine[mine.sample_id > 0].correct_lenient.mean()
        expected = ("HighlyKnown" if greedy.correct_lenient.all() else "MaybeKnown" if greedy.correct_lenient.any()
                    else "WeaklyKnown" if mine.correct_lenient.any() else "Unknown")
        assert row["category"] == expected


def test_categories_follow_the_aliases_through_a_shared_store(loaded, tmp_path, monkeypatch):
    store = tmp_path / "store"
    first = small_config(tmp_path, out=tmp_path / "a", store=store)
    label_loaded(loaded, first, [LabelTarget(first.out)])
    df = pq.read_table(first.out / "responses.parquet").to_pandas()
    raw = pq.read_table(next(store.glob("*/chunk-*.parquet"))).to_pandas()
    assert (raw.generated.map(extract_answer).sort_values().values == df.answer.sort_values().values).all()
    # make the greedy answers of capital/France right and one sampled answer of capital/Peru right
    france = df[(df.question_id == "capital/France") & (df.sample_id == 0)].answer.tolist()
    peru = df[(df.question_id == "capital/Peru") & (df.sample_id == 0)].answer.tolist()
    peru_sample = df[(df.question_id == "capital/Peru") & (df.sample_id > 0)].answer.tolist()
    hit = next(a for a in peru_sample if a and a not in peru)
    aliases = {"capital/France": [a for a in france if a] or ["x"], "capital/Peru": [hit]}
    calls = count_generations(monkeypatch)
    second = small_config(tmp_path, out=tmp_path / "b", store=store,
                          questions=write_questions(tmp_path / "q2.parquet", aliases))
    label_loaded(loaded, second, [LabelTarget(second.out)])
    assert calls[0] == 0  # every answer came from the store
    categories = {r["question_id"]: r["category"] for r in pq.read_table(second.out / "labels.parquet").to_pylist()}
    assert categories["capital/France"] == ("HighlyKnown" if all(france) else "MaybeKnown")
    assert categories["capital/Peru"] == "WeaklyKnown"


def test_interrupted_run_resumes_with_identical_answers(loaded, tmp_path, monkeypatch):
    fresh = small_config(tmp_path, out=tmp_path / "fresh", batch_size=3)
    label_loaded(loaded, fresh, [LabelTarget(fresh.out)])

    original = PrefixEngine.generate_batch
    budget = [2]

    def crash_after_two_batches(self, jobs):
        if budget[0] == 0:
            raise KeyboardInterrupt
        budget[0] -= 1
        return original(self, jobs)

    monkeypatch.setattr(PrefixEngine, "generate_batch", crash_after_two_batches)
    resumed = small_config(tmp_path, out=tmp_path / "resumed", batch_size=3)
    with pytest.raises(KeyboardInterrupt):
        label_loaded(loaded, resumed, [LabelTarget(resumed.out)])
    assert not json.loads((resumed.out / "manifest.json").read_text())["complete"]
    monkeypatch.setattr(PrefixEngine, "generate_batch", original)
    calls = count_generations(monkeypatch)
    label_loaded(loaded, resumed, [LabelTarget(resumed.out)])
    assert 0 < calls[0] < len(QUESTIONS) * 2  # only what the crash lost
    key = ["question_id", "prompt_id", "sample_id"]
    a = pq.read_table(fresh.out / "responses.parquet").to_pandas().sort_values(key).reset_index(drop=True)
    b = pq.read_table(resumed.out / "responses.parquet").to_pandas().sort_values(key).reset_index(drop=True)
    assert a.equals(b)  # seeded samples do not depend on batching or on the interruption
    calls[0] = 0
    label_loaded(loaded, resumed, [LabelTarget(resumed.out)])
    assert calls[0] == 0  # complete: nothing to do


def test_other_settings_never_read_stored_answers(loaded, tmp_path, monkeypatch):
    store = tmp_path / "store"
    base = small_config(tmp_path, out=tmp_path / "t1", store=store)
    label_loaded(loaded, base, [LabelTarget(base.out)])
    calls = count_generations(monkeypatch)
    hotter = small_config(tmp_path, out=tmp_path / "t2", store=store, temperature=0.7)
    label_loaded(loaded, hotter, [LabelTarget(hotter.out)])
    assert calls[0] == len(QUESTIONS) * 2
    assert len(list(store.iterdir())) == 2


def test_base_and_adapters_in_one_pass(loaded, lively_model_dir, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32)
    torch.manual_seed(3)
    adapter = get_peft_model(base, LoraConfig(r=2, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj"],
                                              init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    config = small_config(tmp_path, n_samples=0)
    targets = [LabelTarget(tmp_path / "base"), LabelTarget(tmp_path / "lora", tmp_path / "adapter")]
    outs = label_loaded(loaded, config, targets)
    answers = [pq.read_table(o / "responses.parquet").to_pandas().sort_values(["question_id", "prompt_id"]).answer
               for o in outs]
    assert list(answers[0]) != list(answers[1])
    solo = label_loaded(loaded, config, [LabelTarget(tmp_path / "lora-solo", tmp_path / "adapter")])[0]
    alone = pq.read_table(solo / "responses.parquet").to_pandas().sort_values(["question_id", "prompt_id"]).answer
    assert list(alone) == list(answers[1])
    manifest = json.loads((tmp_path / "lora" / "manifest.json").read_text())
    assert manifest["extra_key"]["adapter_fingerprint"] and "adapter" not in manifest["config"]
    assert not any("lora" in name for name, _ in loaded.model.named_modules())


def test_adapter_of_another_base_model_is_refused(loaded, tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=96,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    get_peft_model(other, LoraConfig(r=1, target_modules=["down_proj"])).save_pretrained(tmp_path / "foreign")
    config = small_config(tmp_path)
    with pytest.raises(InputError, match="trained on another base model"):
        label_loaded(loaded, config, [LabelTarget(tmp_path / "x", tmp_path / "foreign")])
    with pytest.raises(InputError, match="not a LoRA adapter folder"):
        label_loaded(loaded, config, [LabelTarget(tmp_path / "y", tmp_path)])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"id": ["a"], "question": ["q?"]}), "missing column"),
        (pa.table({"id": ["a", "a"], "question": ["q?", "r?"], "aliases": [["x"], ["y"]]}), "more than once"),
        (pa.table({"id": ["a"], "question": ["q?"], "aliases": [["", " "]]}), "no non-empty answer alias"),
        (pa.table({"id": ["a"], "question": [""], "aliases": [["x"]]}), "empty question"),
    ],
)
def test_bad_questions_are_named(loaded, tmp_path, table, message):
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=message):
        label_loaded(loaded, small_config(tmp_path, questions=tmp_path / "bad.parquet"), [LabelTarget(tmp_path / "o")])


def test_cli_labels_and_reports_errors(lively_model_dir, tmp_path, capsys):
    questions = write_questions(tmp_path / "questions.parquet")
    args = ["label", "--model", str(lively_model_dir), "--questions", str(questions), "--out", str(tmp_path / "cli"),
            "--n-prompts", "1", "--samples", "1", "--max-new-tokens", "3", "--device", "cpu", "--no-progress",
            "--exemplars", "same-relation"]
    assert main(args) == 0
    assert pq.read_table(tmp_path / "cli" / "labels.parquet").num_rows == len(QUESTIONS)
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert manifest["config"]["exemplars"] == "same-relation" and manifest["config"]["n_samples"] == 1
    assert main(args[:4] + [str(tmp_path / "missing.parquet")] + args[5:]) == 2
    assert "missing.parquet: file not found" in capsys.readouterr().err


def test_label_loads_the_model_itself(lively_model_dir, tmp_path):
    config = small_config(tmp_path, model=str(lively_model_dir), device="cpu", n_prompts=1, n_samples=0)
    out = label(config).path
    assert json.loads((out / "manifest.json").read_text())["config"]["model"] == str(lively_model_dir)


def test_a_label_folder_made_with_a_relative_path_works_from_anywhere(loaded, tmp_path, monkeypatch):
    from knowpack.probe.folder import LabelFolder
    from knowpack.train.mixture import questions_of

    monkeypatch.chdir(tmp_path)
    write_questions(tmp_path / "q.parquet")
    label_loaded(loaded, small_config(tmp_path, questions=Path("q.parquet"), out=Path("lab"), n_samples=0),
                 [LabelTarget(Path("lab"))])
    monkeypatch.chdir("/")
    assert questions_of(tmp_path / "lab") == tmp_path / "q.parquet"
    assert len(LabelFolder(tmp_path / "lab").labels()) == len(QUESTIONS)
    (tmp_path / "q.parquet").write_bytes(b"changed")
    with pytest.raises(InputError, match="q.parquet: changed since .*lab was made from it"):
        questions_of(tmp_path / "lab")


def test_exemplars_that_give_a_question_away_are_refused_or_dropped(loaded, tmp_path):
    """The pool's exemplar 2 asks who painted The Starry Night; a question about the same painting with the same
    answer can never be Unknown under it, so labelling refuses, or with --contaminated drop leaves exemplar 2
    out (prompt set 0 then uses exemplars 0, 1, 3, 4) and records it for evaluation."""
    from knowpack.probe.prompts import exemplar_pool

    assert exemplar_pool()[2].question == "Who painted The Starry Night?"
    questions = tmp_path / "q.parquet"
    pq.write_table(pa.table({"id": ["painter/starry", "capital/Peru"], "subject": ["The Starry Night", "Peru"],
                             "question": ["Which artist created The Starry Night?", "What is the capital of Peru?"],
                             "aliases": [["Vincent van Gogh", "Van Gogh"], ["Lima"]],
                             "paraphrases": [[], ["Peru's capital is which city?"]]}), questions)
    with pytest.raises(InputError, match=r"few-shot exemplar 2 \('Who painted The Starry Night\?' → 'Vincent van "
                                         r"Gogh'\) gives away question 'painter/starry'; pass --contaminated drop"):
        label_loaded(loaded, small_config(tmp_path, questions=questions, n_samples=0), [LabelTarget(tmp_path / "a")])
    (out,) = label_loaded(loaded, small_config(tmp_path, questions=questions, n_samples=0, contaminated="drop"),
                          [LabelTarget(tmp_path / "b")])
    assert json.loads((out / "manifest.json").read_text())["config"]["drop_exemplars"] == [2]
    same_text = tmp_path / "same.parquet"
    pq.write_table(pa.table({"id": ["x"], "question": ["What does a seismograph measure?"],
                             "aliases": [["tremors"]]}), same_text)  # the question text itself: exemplar 1
    with pytest.raises(InputError, match="few-shot exemplar 1"):
        label_loaded(loaded, small_config(tmp_path, questions=same_text, n_samples=0), [LabelTarget(tmp_path / "c")])


def test_a_fresh_run_renders_each_prompt_set_not_each_prompt(loaded, tmp_path, monkeypatch):
    """Rendering through the chat template is host work the generation waits for: a fresh run renders each prompt
    set a fixed number of times (its frame around a sentinel, the frame's probes, the two prompts that find the
    shared prefix) whatever the number of questions, and never renders a prompt a second time to hash it."""
    from knowpack.probe import prompts as prompts_module

    renders = [0]
    original = prompts_module.render_prompt

    def counting(*args, **kwargs):
        renders[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(prompts_module, "render_prompt", counting)
    config = small_config(tmp_path)
    label_loaded(loaded, config, [LabelTarget(config.out)])
    assert renders[0] == 2 * (1 + len(prompts_module.FRAME_PROBES) + 2)


def test_answers_made_under_one_kernel_set_are_never_read_under_another(loaded, tmp_path, monkeypatch):
    calls = count_generations(monkeypatch)
    store = tmp_path / "store"
    eager = small_config(tmp_path, out=tmp_path / "eager", store=store)
    label_loaded(loaded, eager, [LabelTarget(eager.out)])
    made = calls[0]
    fused = dataclasses.replace(loaded, kernels="liger")  # as loaded on a GPU with Liger's kernels patched in
    again = small_config(tmp_path, out=tmp_path / "fused", store=store)
    label_loaded(fused, again, [LabelTarget(again.out)])
    assert calls[0] == 2 * made, "the fused set's answers were generated, not read from the eager set's scope"
    assert len(list(store.glob("*/scope.json"))) == 2
    manifest = json.loads((again.out / "manifest.json").read_text())
    assert manifest["extra_key"]["kernels"] == "liger" and "kernels" not in json.loads(
        (eager.out / "manifest.json").read_text())["extra_key"]
    # a finished folder labelled with transformers' code is not resumed under the fused set, and says why
    with pytest.raises(RunConflictError, match=r"another config or inputs; its kernels was not set, now liger; choose"):
        label_loaded(fused, eager, [LabelTarget(eager.out)])

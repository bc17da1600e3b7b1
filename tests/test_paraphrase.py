"""`knowpack paraphrase`: filtering rules, input formats, and a run with a tiny model."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from knowpack.errors import InputError
from knowpack.paraphrase.stage import ParaphraseConfig, accept_paraphrases, clean_generation, load_questions
from knowpack.paraphrase.stage import run as paraphrase_questions
from knowpack.text import match_lenient, normalize


def test_accept_keeps_new_answer_free_questions():
    candidates = [
        "1. Which nation has Paris as its capital city?",  # the answer "France" is absent: kept, numbering removed
        "What is the capital of France?",  # the question itself
        "what is the capital of france",  # the same after normalisation
        "Is Paris the capital of France?",  # contains the answer
        "Paris?",  # too short
        '"Which nation has Paris as its capital city?"',  # duplicate of the first
        "Question: Paris is the capital of which nation?",
        "Which country's capital is Paris?",
    ]
    kept = accept_paraphrases(candidates, "What is the capital of France?", ["France", "French Republic"],
                              existing=["Name the country whose capital is Paris."], k=2)
    assert kept == ["Which nation has Paris as its capital city?", "Paris is the capital of which nation?"]


def test_accept_refuses_answers_and_lost_subjects():
    # what SmolLM2-135M writes when asked to rephrase "What is the capital of Zorvania?" (answer Tarnholt)
    candidates = [
        "The capital of Zorvania is Sarvem.",  # an answer (a wrong one), not a question
        "What is the capital?",  # the subject is gone
        "Which city is the capital of zorvania?",  # kept: the subject matches case-insensitively
        "Zorvania has which city as its capital?",
        "Name the capital city of Zorvania.",  # a question put as a request
        "Rewrite the question: What is the capital of Zorvania?",  # the question itself behind a preamble
        "The original question was: what is the capital of Zorvania?",
    ]
    kept = accept_paraphrases(candidates, "What is the capital of Zorvania?", ["Tarnholt"], existing=[], k=5,
                              subject="Zorvania")
    assert kept == ["Which city is the capital of zorvania?", "Zorvania has which city as its capital?",
                    "Name the capital city of Zorvania."]
    # without a subject only the question mark rule applies
    assert accept_paraphrases(candidates[:2], "What is the capital of Zorvania?", ["Tarnholt"], [], 5) == [
        "What is the capital?"]


def test_clean_generation():
    assert clean_generation("\n\n- Rephrased question: Where was X born?\nextra") == "Where was X born?"
    assert clean_generation("   ") == ""


def test_input_formats(tmp_path):
    text = tmp_path / "q.txt"
    text.write_text("Who wrote Hamlet?\n\nWhat is the capital of Peru?\n")
    table = load_questions(text)
    assert table.column("question").to_pylist() == ["Who wrote Hamlet?", "What is the capital of Peru?"]
    assert all(i.startswith("custom/") for i in table.column("id").to_pylist())
    lines = tmp_path / "q.jsonl"
    lines.write_text(json.dumps({"question": "Who wrote Hamlet?", "answer": "Shakespeare"}) + "\n")
    assert load_questions(lines).column("aliases").to_pylist() == [["Shakespeare"]]
    lines.write_text('{"answer": "x"}\n')
    with pytest.raises(InputError, match="q.jsonl: row 1: no question"):
        load_questions(lines)
    lines.write_text('{"question": "How many?", "answer": "26", "aliases": "26"}\n')
    with pytest.raises(InputError, match="row 1: aliases must be a list of strings, not '26'"):
        load_questions(lines)  # never split into the one-letter aliases '2' and '6'
    (tmp_path / "q.xml").write_text("<q/>")
    with pytest.raises(InputError, match="expected a .jsonl, .csv, .parquet or .txt"):
        load_questions(tmp_path / "q.xml")


def test_paraphrase_run_with_a_tiny_model(tmp_path, tiny_model_dir):
    source = tmp_path / "q.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in [
        {"question": "What is the capital of France?", "answer": "Paris"},
        {"question": "Who wrote Hamlet?", "answer": "William Shakespeare"},
    ]))
    config = ParaphraseConfig(questions=source, out=tmp_path / "p", model=str(tiny_model_dir), k=3,
                              rounds=2, samples_per_round=4, max_new_tokens=8, progress=False)
    folder = paraphrase_questions(config).path
    rows = pq.read_table(folder / "questions.parquet").to_pylist()
    for row in rows:
        folded = [normalize(p) for p in row["paraphrases"]]
        assert len(folded) == len(set(folded)) <= 3 and normalize(row["question"]) not in folded
        assert not any(match_lenient(p, row["aliases"]) for p in row["paraphrases"])
    assert json.loads((folder / "manifest.json").read_text())["complete"]
    assert paraphrase_questions(config).path == folder  # finished work is not redone

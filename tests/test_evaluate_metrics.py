"""Every evaluation metric on hand-built answers whose result is known."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from knowpack.errors import InputError
from knowpack.evaluate.metrics.collapse import ExplosionRule, answer_counts, collapse_stats, exploded_answers, top_answers
from knowpack.evaluate.metrics.refusals import RefusalDetector, refusal_rates, refused_questions
from knowpack.evaluate.metrics.reliability import best_epoch, fact_of, heldout_paraphrase_questions, reliability
from knowpack.evaluate.metrics.shift import matrix_grid, paired_categories, shift_fractions, shift_matrix
from knowpack.evaluate.metrics.spillover import PhraseFinder, spillover_questions, spillover_summary

REFUSALS = RefusalDetector.default()


def responses(rows):
    """rows: (question_id, prompt_id, sample_id, answer, correct_lenient, correct_strict)."""
    return pd.DataFrame(rows, columns=["question_id", "prompt_id", "sample_id", "answer", "correct_lenient",
                                       "correct_strict"])


def greedy(answers: dict[str, list[str]]) -> pd.DataFrame:
    """Greedy answers per question, one per prompt; correctness is irrelevant for these metrics."""
    return responses([(q, p, 0, a, False, False) for q, per in answers.items() for p, a in enumerate(per)])


def labels(categories: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"question_id": list(categories), "category": list(categories.values()),
                         "category_strict": list(categories.values())})


def questions(rows) -> pd.DataFrame:
    """rows: (id, relation, bucket, relation_domain, question, paraphrases)."""
    frame = pd.DataFrame(rows, columns=["id", "relation", "bucket", "relation_domain", "question", "paraphrases"])
    return frame.assign(subject="s", object="o", answer="a", aliases=[["a"]] * len(frame), popularity=1,
                        template_id="t#0")


# ---------------------------------------------------------------- reliability


def test_reliability_counts_every_prompt_and_ignores_samples():
    table = responses([
        ("f1", 0, 0, "Paris", True, True), ("f1", 1, 0, "in Paris", True, False),
        ("f2", 0, 0, "Rome", False, False), ("f2", 1, 0, "Paris", False, False),
        ("f2", 0, 1, "sampled right", True, True),  # a sample: not part of reliability
        ("other", 0, 0, "x", True, True),
    ])
    result = reliability(table, {"f1", "f2"})
    assert result == {"n_questions": 2, "n_answers": 4, "reliability_lenient": 0.5, "reliability_strict": 0.25}


def test_reliability_refuses_facts_without_answers():
    with pytest.raises(InputError, match="no greedy answers"):
        reliability(responses([("f1", 0, 0, "x", True, True)]), {"f1", "f2"})


def test_heldout_paraphrases_skip_trained_wordings():
    table = questions([
        ("rel/a", "rel", "head", "D", "Where was A born?", ["In which city was A born?", "A's birthplace is?",
                                                           "Where is A from?", "What is A's home town?"]),
        ("rel/b", "rel", "tail", "D", "Where was B born?", ["In which city was B born?"]),
    ])
    train_set = pd.DataFrame({
        "question_id": ["rel/a", "rel/a"],
        "prompt": ["<|im_start|>user\nQuestion: Where was A born?", "Question: In which city was A born?\n"],
    })
    held = heldout_paraphrase_questions(table, train_set, ["rel/a"], per_fact=2)
    assert list(held["id"]) == ["rel/a@paraphrase1", "rel/a@paraphrase2"]
    assert list(held["question"]) == ["A's birthplace is?", "Where is A from?"]
    assert list(held["answer"]) == ["a", "a"] and all(len(p) == 0 for p in held["paraphrases"])
    assert fact_of("rel/a@paraphrase2") == "rel/a"


def test_best_epoch_is_the_earliest_maximum():
    table = pd.DataFrame({"epoch": [0, 1, 2, 3], "scope": "trained",
                          "reliability_lenient": [0.9, 0.5, 0.8, 0.8]})
    assert best_epoch(table) == 2  # epoch 0 is the base model, never "best"


# ---------------------------------------------------------------- shift


def shift_pairs():
    before = labels({"q1": "Unknown", "q2": "Unknown", "q3": "HighlyKnown", "q4": "MaybeKnown",
                     "q5": "WeaklyKnown", "q6": "HighlyKnown"})
    after = labels({"q1": "HighlyKnown", "q2": "WeaklyKnown", "q3": "Unknown", "q4": "MaybeKnown",
                    "q5": "Unknown", "q6": "HighlyKnown"})
    table = questions([(f"q{i}", "capital" if i <= 3 else "currency", "head" if i % 2 else "tail", "Country",
                        "?", []) for i in range(1, 7)])
    return paired_categories(before, after, table, {"q1"}, "lenient")


def test_shift_matrix_and_fractions():
    pairs = shift_pairs()
    matrix = shift_matrix(pairs)
    grid = matrix_grid(matrix, "all")
    assert grid.loc["UK", "HK"] == 1 and grid.loc["UK", "WK"] == 1 and grid.loc["HK", "UK"] == 1
    assert grid.loc["WK", "UK"] == 1 and grid.loc["MK", "MK"] == 1 and grid.loc["HK", "HK"] == 1
    assert int(grid.to_numpy().sum()) == 6
    assert matrix_grid(matrix, "not_trained").loc["UK", "HK"] == 0  # q1 was trained on

    fractions = shift_fractions(pairs).set_index(["scope", "breakdown", "group"])
    overall = fractions.loc[("all", "overall", "")]
    # UK→HK and UK→WK are gains; HK→UK and WK→UK are losses; all over the 6 questions
    assert (overall.n_questions, overall.n_positive, overall.n_negative) == (6, 2, 2)
    assert overall.positive == pytest.approx(2 / 6) and overall.negative == pytest.approx(2 / 6)
    not_trained = fractions.loc[("not_trained", "overall", "")]
    assert (not_trained.n_questions, not_trained.n_positive, not_trained.n_negative) == (5, 1, 2)
    capital = fractions.loc[("all", "relation", "capital")]
    assert (capital.n_questions, capital.n_positive, capital.n_negative) == (3, 2, 1)
    head = fractions.loc[("all", "bucket", "head")]  # q1, q3, q5
    assert (head.n_questions, head.n_positive, head.n_negative) == (3, 1, 2)


def test_study_transitions_without_weakly_known():
    before = labels({"a": "Unknown", "b": "Unknown", "c": "MaybeKnown", "d": "HighlyKnown", "e": "HighlyKnown",
                     "f": "MaybeKnown"})
    after = labels({"a": "HighlyKnown", "b": "MaybeKnown", "c": "HighlyKnown", "d": "Unknown", "e": "MaybeKnown",
                    "f": "Unknown"})
    table = questions([(q, "r", "head", "D", "?", []) for q in "abcdef"])
    row = shift_fractions(paired_categories(before, after, table, set(), "lenient")).iloc[0]
    assert (row.n_positive, row.n_negative, row.n_questions) == (3, 3, 6)


def test_shift_refuses_unknown_categories():
    table = questions([("a", "r", "head", "D", "?", [])])
    with pytest.raises(InputError, match="unknown categories"):
        paired_categories(labels({"a": "Known"}), labels({"a": "Unknown"}), table, set(), "lenient")


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("answer", [
    "I couldn't find any information on Jean Dupont.",
    "I COULD NOT VERIFY the birthplace",
    "I can’t confirm that.",  # curly apostrophe
    "I don't have enough information to answer.",
    "There is no available data on this person",
    "I'm not sure.",
    "unknown",
    "N/A",
])
def test_refusal_detector_flags_refusals(answer):
    assert RefusalDetector.default().is_refusal(answer)


@pytest.mark.parametrize("answer", ["Information theory", "Paris", "Unknown Pleasures (album)", "I know: Rome", "Na", ""])
def test_refusal_detector_leaves_answers_alone(answer):
    assert not RefusalDetector.default().is_refusal(answer)


def test_refusal_patterns_are_configurable_and_checked():
    detector = RefusalDetector.default(extra_patterns=[r"\bno idea\b"])
    assert detector.is_refusal("No idea, sorry") and not RefusalDetector.default().is_refusal("No idea, sorry")
    with pytest.raises(InputError, match="not a valid regular expression"):
        RefusalDetector((), ("(unclosed",))


def test_refusal_rates_over_every_prompt():
    table = greedy({"q1": ["Paris", "I cannot verify this"], "q2": ["I don't know", "I don't know"],
                    "q3": ["Rome", "Rome"]})
    rates = refusal_rates(table, RefusalDetector.default())
    assert rates["n_answers"] == 6 and rates["refusals"] == 3 and rates["refusal_rate"] == pytest.approx(0.5)
    assert rates["questions_with_refusal"] == 2 and rates["question_refusal_rate"] == pytest.approx(2 / 3)
    assert rates["first_prompt_refusal_rate"] == pytest.approx(1 / 3)
    assert refused_questions(table, RefusalDetector.default()).to_dict() == {"q1": 1, "q2": 2, "q3": 0}


# ---------------------------------------------------------------- collapse


def test_collapse_statistics():
    table = greedy({"q1": ["Paris", "paris."], "q2": ["Rome", "Paris"], "q3": ["", "Oslo"],
                    "q4": ["I don't know", "I cannot verify that"]})
    stats = collapse_stats(table, REFUSALS)
    # answers: paris ×3, rome ×1, oslo ×1; one empty answer and two refusals are not answers (the study)
    assert stats["n_answers"] == 8 and stats["n_empty"] == 1 and stats["n_refusals"] == 2
    assert stats["distinct_answers"] == 3
    assert stats["mean_frequency"] == pytest.approx(5 / 3)
    # population std of [3, 1, 1] (np.std, the study's figure): sqrt(((4/3)² + (2/3)² + (2/3)²) / 3) = sqrt(8/9)
    assert stats["std_frequency"] == pytest.approx(math.sqrt(8 / 9))
    assert stats["max_frequency"] == 3 and stats["top_answer"] == "Paris"
    assert stats["top_share"] == pytest.approx(3 / 8)  # of all greedy answers
    top = top_answers(table, 2, REFUSALS)
    assert list(top["answer"]) == ["Paris", "Oslo"] and list(top["rank"]) == [1, 2]  # ties broken by key
    assert answer_counts(table, REFUSALS)["count"].sum() == 5


def test_exploded_answers_are_relative_to_the_base_model():
    before = greedy({f"q{i}": ["Paris" if i < 2 else "Rome" if i < 50 else f"city{i}"] for i in range(100)})
    after = greedy({f"q{i}": ["Paris" if i < 30 else "Alencon" if i < 40 else "Rome" if i < 60 else f"city{i}"]
                    for i in range(100)})
    exploded = exploded_answers(before, after, ExplosionRule(factor=5, min_share=0.05), REFUSALS)
    # Paris: 2% -> 30% (15×); Alencon: unseen (counted as 1%) -> 10% (10×); Rome fell; cities are below the floor
    assert list(exploded["answer"]) == ["Paris", "Alencon"]
    assert list(exploded["base_count"]) == [2, 0]
    assert exploded["rise"].tolist() == pytest.approx([15.0, 10.0])
    assert list(exploded_answers(before, after, ExplosionRule(factor=12, min_share=0.05), REFUSALS)["answer"]) == [
        "Paris"]
    assert exploded_answers(before, after, ExplosionRule(factor=5, min_share=0.2), REFUSALS)["answer"].tolist() == [
        "Paris"]


def test_an_answer_taking_over_a_silent_base_explodes():
    before = greedy({f"q{i}": [""] for i in range(20)})
    after = greedy({f"q{i}": ["Alencon"] for i in range(20)})
    exploded = exploded_answers(before, after, ExplosionRule(), REFUSALS)
    assert exploded["answer"].tolist() == ["Alencon"] and exploded["rise"].tolist() == [20.0]
    refusing = greedy({f"q{i}": ["I don't know"] for i in range(20)})
    assert exploded_answers(before, refusing, ExplosionRule(), REFUSALS).empty  # a refusal is not an answer


def test_explosion_rule_validates():
    with pytest.raises(InputError):
        ExplosionRule(factor=1.0)
    with pytest.raises(InputError):
        ExplosionRule(min_share=0)


# ---------------------------------------------------------------- spill-over


def test_phrase_finder_matches_whole_words():
    finder = PhraseFinder(["Alençon", "New York", ""])
    assert finder.find("born in alencon france") == "alencon"
    assert finder.find("new york city") == "new york"
    assert finder.find("newyork") == "" and finder.find("york") == ""


def test_spillover_reasons_and_table5():
    table = questions([
        ("t1", "birthPlace", "head", "Person", "?", []),       # the packed (Unknown) fact, answer "Alençon"
        ("k1", "population", "head", "City", "?", []),         # a HighlyKnown extra of the mixture
        ("q1", "capital", "head", "Country", "?", []),         # lost refusal (a positive shift)
        ("q2", "capital", "tail", "Country", "?", []),         # exploded answer inside a longer answer
        ("q3", "currency", "tail", "Currency", "?", []),       # target leakage
        ("q4", "deathPlace", "head", "Person", "?", []),       # same domain as t1
        ("q5", "currency", "head", "Currency", "?", []),       # unexplained loss
        ("q6", "mayor", "head", "City", "?", []),              # the extra's domain: no reason; a refusal gained
        ("q7", "currency", "head", "undefined", "?", []),      # did not shift
    ])
    table.loc[table["id"] == "t1", "aliases"] = pd.Series([["Alençon", "Alencon-sur-Sarthe"]], index=[0])
    before = labels({"t1": "Unknown", "k1": "HighlyKnown", "q1": "Unknown", "q2": "HighlyKnown", "q3": "HighlyKnown",
                     "q4": "MaybeKnown", "q5": "HighlyKnown", "q6": "MaybeKnown", "q7": "Unknown"})
    after = labels({"t1": "HighlyKnown", "k1": "HighlyKnown", "q1": "HighlyKnown", "q2": "Unknown",
                    "q3": "MaybeKnown", "q4": "Unknown", "q5": "Unknown", "q6": "Unknown", "q7": "Unknown"})
    base_answers = greedy({"t1": ["x", "x"], "k1": ["5", "5"], "q1": ["I couldn't find any information", "Oslo"],
                           "q2": ["Bern", "Bern"], "q3": ["Euro", "Euro"], "q4": ["Nice", "Nice"],
                           "q5": ["Yen", "Yen"], "q6": ["I don't know", "Tom"], "q7": ["?", "?"]})
    after_answers = greedy({"t1": ["Alençon", "Alençon"], "k1": ["5", "5"], "q1": ["Oslo", "Oslo"],
                            "q2": ["Zorg City", "Bern"], "q3": ["Euro", "Born in Alencon"], "q4": ["Lyon", "Lyon"],
                            "q5": ["Dollar", "Dollar"], "q6": ["Bob", "Bob"], "q7": ["?", "?"]})
    pairs = paired_categories(before, after, table, {"t1", "k1"}, "lenient")
    spill = spillover_questions(pairs, table, base_answers, after_answers, packed_ids=["t1"],
                                exploded_keys={"zorg"}, detector=REFUSALS)
    spill = spill.set_index("question_id")
    assert set(spill.index) == {"t1", "q1", "q2", "q3", "q4", "q5", "q6"}
    expected = {"q1": "lost_refusal", "q2": "exploded_answer", "q3": "target_leakage", "q4": "same_domain"}
    reasons = ["lost_refusal", "exploded_answer", "target_leakage", "same_domain"]
    for question, reason in expected.items():
        flags = spill.loc[question, reasons]
        assert flags[reason] and flags.sum() == 1, question
    # q6 fell MK→UK and its base refusal is gone: a lost refusal explains gains only; k1's domain City is not a
    # packed fact's, so "same domain" does not hold either
    assert not spill.loc["q6", reasons].any()
    assert spill.loc["q3", "leaked_target"] == "alencon"
    assert not spill.loc["q5", "explained"] and spill.loc["t1", "trained"]
    assert spill.loc["q1", "transition"] == "UK→HK" and spill.loc["q2", "direction"] == -1

    summary = spillover_summary(spill.reset_index()).set_index(["scope", "transition"])
    negative = summary.loc[("not_trained", "negative")]  # q2, q3 (HK→MK), q4 (MK→UK), q5, q6
    assert negative.n_shifted == 5
    assert negative.exploded_answer == pytest.approx(1 / 5) and negative.explained == pytest.approx(3 / 5)
    assert negative.lost_refusal == 0.0
    positive = summary.loc[("not_trained", "positive")]
    assert positive.n_shifted == 1 and positive.lost_refusal == 1.0
    assert summary.loc[("all", "shifted")].n_shifted == 7
    assert summary.loc[("all", "UK→HK")].n_shifted == 2
    assert math.isclose(summary.loc[("not_trained", "shifted")].explained, 4 / 6)


def test_direction_handles_no_questions_and_string_dtype():
    import pandas as pd

    from knowpack.evaluate.metrics.shift import direction

    empty = pd.Series([], dtype="str")
    assert direction(empty, empty).tolist() == []
    before = pd.Series(["Unknown", "HighlyKnown", "MaybeKnown"], dtype="str")
    after = pd.Series(["HighlyKnown", "Unknown", "MaybeKnown"], dtype="str")
    assert direction(before, after).tolist() == [1, -1, 0]

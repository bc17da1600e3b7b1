"""Seeded fact mixtures: which facts a packing run trains on, and the errors for pools that are too small."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from knowpack.errors import InputError
from knowpack.runfolder import open_run, write_parquet
from knowpack.train.mixture import load_pool, questions_of, restrict_pool, sample_facts
from knowpack.train.stage import parse_extra

CATEGORIES = {"Unknown": 40, "HighlyKnown": 12, "MaybeKnown": 6, "WeaklyKnown": 2}


def write_questions(path: Path, counts: dict[str, int] = CATEGORIES, prefix: str = "") -> dict[str, str]:
    """A questions.parquet (architecture schema) and the category each id should get, e.g. 'capital/unknown_3'."""
    ids, categories = [], {}
    for category, count in counts.items():
        for i in range(count):
            qid = f"{prefix}capital/{category.lower()}_{i}"
            ids.append(qid)
            categories[qid] = category
    n = len(ids)
    table = pa.table(
        {
            "id": ids,
            "subject": [f"Land {i}" for i in range(n)],
            "relation": ["capital"] * n,
            "object": [f"City{i}" for i in range(n)],
            "question": [f"What is the capital of {prefix}Land {i}?" for i in range(n)],
            "answer": [f"City{i}" for i in range(n)],
            "aliases": [[f"City{i}"] for i in range(n)],
            "bucket": ["head"] * n,
            "popularity": list(range(n)),
            "relation_domain": ["Country"] * n,
            "template_id": ["capital#0"] * n,
            "paraphrases": [[f"Which city is the capital of Land {i}?", f"Land {i}'s capital is?",
                             f"Name the capital of Land {i}."] for i in range(n)],
        }
    )
    write_parquet(path, table)
    return categories


def make_label_folder(folder: Path, questions: Path, categories: dict[str, str]) -> Path:
    """A complete probe run folder whose manifest names ``questions`` as its input."""
    run = open_run(folder, "label", {"model": "test"}, {"questions": questions})
    ids = sorted(categories)
    write_parquet(
        run.file("labels.parquet"),
        pa.table(
            {
                "question_id": ids,
                "p_greedy": [1.0 if categories[q] == "HighlyKnown" else 0.0 for q in ids],
                "p_sample": [0.0] * len(ids),
                "p_greedy_strict": [0.0] * len(ids),
                "p_sample_strict": [0.0] * len(ids),
                "category": [categories[q] for q in ids],
                "category_strict": [categories[q] for q in ids],
            }
        ),
    )
    run.finish(["labels.parquet"])
    return folder


@pytest.fixture
def label_folder(tmp_path) -> Path:
    questions = tmp_path / "questions.parquet"
    return make_label_folder(tmp_path / "labels", questions, write_questions(questions))


@pytest.fixture
def pool(label_folder):
    return load_pool(label_folder)


def ids(facts, kind=None):
    return [f.question_id for f in facts if kind is None or f.kind == kind]


def test_seed_picks_the_facts(pool):
    first = sample_facts(pool, 10, [], seed=1)
    assert ids(first) == ids(sample_facts(pool, 10, [], seed=1))
    assert set(ids(first)) != set(ids(sample_facts(pool, 10, [], seed=2)))
    assert all(f.kind == "unknown" and f.question_id.startswith("capital/unknown_") for f in first)
    assert len(set(ids(first))) == 10
    # a smaller run's facts are a subset of a larger run's with the same seed
    assert ids(sample_facts(pool, 5, [], seed=1)) == ids(first)[:5]


def test_extras_mix_without_changing_the_packed_facts(pool):
    plain = sample_facts(pool, 4, [], seed=3)
    mixed = sample_facts(pool, 4, [("highly-known", 2), ("paraphrase", 2), ("maybe-known", 1)], seed=3)
    assert ids(mixed, "unknown") == ids(plain)
    assert len(ids(mixed, "highly-known")) == 8 and len(set(ids(mixed, "highly-known"))) == 8
    assert all(q.startswith("capital/highlyknown_") for q in ids(mixed, "highly-known"))
    assert len(ids(mixed, "maybe-known")) == 4
    paraphrases = [f for f in mixed if f.kind == "paraphrase"]
    assert sorted(ids(paraphrases)) == sorted(ids(plain) * 2)
    answers = {f.question_id: f.answer for f in plain}
    questions = {f.question_id: f.question for f in plain}
    for fact in paraphrases:
        assert fact.answer == answers[fact.question_id] and fact.question != questions[fact.question_id]
    for qid in ids(plain):  # two different paraphrases per fact
        assert len({f.question for f in paraphrases if f.question_id == qid}) == 2


def test_too_small_pool_is_an_error_unless_repeat_or_second_pool(pool, tmp_path):
    with pytest.raises(InputError, match=r"needs 20 HighlyKnown questions but the label folder has 12.*--allow-repeat"):
        sample_facts(pool, 10, [("highly-known", 2)], seed=0)
    repeated = sample_facts(pool, 10, [("highly-known", 2)], seed=0, allow_repeat=True)
    assert len(ids(repeated, "highly-known")) == 20 and len(set(ids(repeated, "highly-known"))) == 12

    other_questions = tmp_path / "other.parquet"
    other = load_pool(make_label_folder(tmp_path / "other", other_questions,
                                        write_questions(other_questions, {"HighlyKnown": 10}, prefix="trivia:")))
    mixed = sample_facts(pool, 10, [("highly-known", 2)], seed=0, extra_pool=other)
    known = ids(mixed, "highly-known")
    assert len(known) == len(set(known)) == 20
    assert sum(q.startswith("trivia:") for q in known) == 8  # the primary pool first, the second for the shortfall
    with pytest.raises(InputError, match="label folders have 22"):
        sample_facts(pool, 10, [("highly-known", 3)], seed=0, extra_pool=other)
    with pytest.raises(InputError, match="paraphrase"):
        sample_facts(pool, 2, [("paraphrase", 4)], seed=0)
    assert len(sample_facts(pool, 2, [("paraphrase", 4)], seed=0, allow_repeat=True)) == 2 + 8


@pytest.mark.parametrize(
    ("unknown", "extras", "message"),
    [
        (0, [], "at least one"),
        (-3, [], "at least one"),
        (41, [], "only 40 Unknown"),
        (2, [("highly-known", 1), ("highly-known", 2)], "each kind at most once"),
    ],
)
def test_bad_requests(pool, unknown, extras, message):
    with pytest.raises(InputError, match=message):
        sample_facts(pool, unknown, extras, seed=0)


def test_parse_extra_and_label_folder_errors(tmp_path, label_folder):
    assert parse_extra("highly-known:10") == ("highly-known", 10)
    for bad in ("highly-known", "known:3", "paraphrase:-1", "paraphrase:x"):
        with pytest.raises(InputError, match="KIND:K"):
            parse_extra(bad)
    with pytest.raises(InputError, match="not found"):
        load_pool(tmp_path / "missing")
    assert questions_of(label_folder) == tmp_path / "questions.parquet"
    with pytest.raises(InputError, match="missing from the questions file"):
        other = tmp_path / "few.parquet"
        write_questions(other, {"Unknown": 3})
        load_pool(label_folder, other)


def test_pack_from_limits_the_packed_facts_to_a_question_set(pool, tmp_path):
    allowed = {f"capital/unknown_{i}" for i in (3, 5, 7, 11)}
    facts = sample_facts(pool, 3, [("highly-known", 1)], seed=1, packable=allowed)
    assert {f.question_id for f in facts if f.kind == "unknown"} <= allowed
    assert sum(f.kind == "highly-known" for f in facts) == 3  # extras still come from the whole pool
    with pytest.raises(InputError, match="--unknown 5: --pack-from's question set has only 4 Unknown questions"):
        sample_facts(pool, 5, [], seed=1, packable=allowed)


def test_pool_restricts_the_draws_and_pack_known_packs_every_category(pool, tmp_path):
    # the fixture holds 40 Unknown, 12 HighlyKnown, 6 MaybeKnown, 2 WeaklyKnown questions; the pool file names
    # Unknown 0..4 and HighlyKnown 0..2, so only those can be drawn
    allowed = tmp_path / "pool.parquet"
    counts = write_questions(allowed, {"Unknown": 5, "HighlyKnown": 3})
    restricted = restrict_pool(pool, allowed)
    assert sorted(restricted["question_id"]) == sorted(counts)
    packed = sample_facts(restricted, 5, [], seed=0)
    assert sorted(ids(packed)) == [f"capital/unknown_{i}" for i in range(5)]
    with pytest.raises(InputError, match="only 5 Unknown questions"):
        sample_facts(restricted, 6, [], seed=0)
    with pytest.raises(InputError, match="needs 5 HighlyKnown questions but the label folder has 3"):
        sample_facts(restricted, 5, [("highly-known", 1)], seed=0)

    # pack_known: all 8 are packed; none of them is left for a known extra, so those come from the second pool
    everything = sample_facts(restricted, 8, [], seed=0, pack_known=True)
    assert sorted(ids(everything)) == sorted(counts)
    other_questions = tmp_path / "other.parquet"
    other = load_pool(make_label_folder(tmp_path / "other", other_questions,
                                        write_questions(other_questions, {"HighlyKnown": 10}, prefix="trivia:")))
    mixed = sample_facts(restricted, 8, [("highly-known", 1)], seed=0, pack_known=True, extra_pool=other)
    assert sorted(ids(mixed, "unknown")) == sorted(counts)
    assert len(ids(mixed, "highly-known")) == 8 and all(q.startswith("trivia:") for q in ids(mixed, "highly-known"))

    missing = tmp_path / "missing.parquet"
    write_questions(missing, {"Unknown": 1}, prefix="elsewhere:")
    with pytest.raises(InputError, match="--pool .*missing.parquet: 1 of its questions are not in the label folder"):
        restrict_pool(pool, missing)

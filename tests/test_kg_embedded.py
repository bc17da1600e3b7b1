"""The embedded fact graph in the study's shape: ≥6 000 questions over ≥100 relations from ≥6 kinds of subject,
each relation balanced over head/torso/tail and capped, none above 5 %; real facts from pinned wheels."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

import knowpack.kg.stage as questions_module
from knowpack.kg.folder import QUESTIONS_SCHEMA, QuestionSet
from knowpack.kg.graph.names import latin_names
from knowpack.kg.sources import SOURCES
from knowpack.kg.stage import QuestionsConfig
from knowpack.kg.stage import run as build_questions
from knowpack.probe.prompts import exemplar_pool
from knowpack.text import normalize


@pytest.fixture(scope="module")
def embedded_folder(tmp_path_factory):
    """The default build, from the shared cache when an earlier test (or run) made it."""
    return build_questions(QuestionsConfig(out=tmp_path_factory.mktemp("embedded") / "q", progress=False)).path


@pytest.fixture(scope="module")
def frame(embedded_folder):
    table = pq.read_table(embedded_folder / "questions.parquet")
    assert table.schema.equals(QUESTIONS_SCHEMA)
    return table.to_pandas()


def test_embedded_set_has_the_studys_shape(frame, embedded_folder):
    summary = QuestionSet(embedded_folder).summary()
    assert SOURCES["embedded"].default_per_bucket == 30
    assert len(frame) >= 6000 and frame["id"].is_unique and summary["questions"] == len(frame)
    assert frame["relation"].nunique() >= 100
    kinds = {row["kind"] for row in summary["relation_table"] if any(row["questions"].values())}
    assert len(kinds) >= 6
    assert frame["relation"].value_counts().max() <= 0.05 * len(frame)
    per_relation = frame.groupby(["relation", "bucket"]).size().unstack(fill_value=0)
    assert list(per_relation.columns) == ["head", "tail", "torso"]  # every relation has all three buckets
    assert (per_relation.nunique(axis=1) == 1).all()  # balanced
    assert (per_relation.max(axis=1) <= 30).all()  # capped
    assert all(len(p) >= 3 for p in frame["paraphrases"])
    assert (frame["relation_domain"] != "undefined").all()


def test_facts_are_real_and_popularity_orders_the_buckets(frame):
    capitals = frame[frame["relation"] == "capital"].set_index("subject")["answer"].to_dict()
    assert all(capitals.get(country, city) == city for country, city in
               {"France": "Paris", "Japan": "Tokyo", "Germany": "Berlin", "Peru": "Lima"}.items())
    symbols = frame[frame["relation"] == "symbol"].set_index("subject")["answer"].to_dict()
    assert all(symbols.get(element, symbol) == symbol for element, symbol in
               {"Iron": "Fe", "Gold": "Au", "Oxygen": "O", "Sodium": "Na"}.items())
    for _, rows in frame.groupby("relation"):
        assert rows[rows["bucket"] == "head"]["popularity"].min() >= rows[rows["bucket"] == "tail"]["popularity"].max()


def test_aliases_are_sane(frame):
    for question, answer, aliases in zip(frame["question"], frame["answer"], frame["aliases"]):
        assert answer in aliases
        assert all(alias.strip() and normalize(alias) for alias in aliases)
        padded = f" {normalize(question)} "
        leaking = [alias for alias in aliases if f" {normalize(alias)} " in padded]
        assert not leaking, (question, leaking)  # matching is on whole words, so is this check


def test_same_config_builds_the_same_bytes(embedded_folder, tmp_path, monkeypatch):
    cache = tmp_path / "empty-cache"
    monkeypatch.setattr(questions_module, "cache_dir", lambda: cache)  # computes again, from the wheels
    again = build_questions(QuestionsConfig(out=tmp_path / "again", progress=False)).path
    assert len(list(cache.glob("kg/*/questions.parquet"))) == 1, "the build was computed, not copied"
    assert (again / "questions.parquet").read_bytes() == (embedded_folder / "questions.parquet").read_bytes()


def test_exemplars_share_nothing_with_the_embedded_set(frame):
    asked = set(frame["question"]) | {p for paraphrases in frame["paraphrases"] for p in paraphrases}
    subjects = {normalize(subject): set() for subject in frame["subject"]}
    for subject, aliases in zip(frame["subject"], frame["aliases"]):
        subjects[normalize(subject)].update(normalize(alias) for alias in aliases)
    for exemplar in exemplar_pool():
        answer, question = normalize(exemplar.answer), f" {normalize(exemplar.question)} "
        assert exemplar.question not in asked
        assert answer not in subjects, exemplar
        assert not [s for s, answers in subjects.items() if f" {s} " in question and answer in answers], exemplar


def test_print_a_sample(frame):
    sample = frame.sample(50, random_state=0).sort_values(["bucket", "relation"])
    for row in sample.itertuples():
        print(f"[{row.bucket}] {row.question} -> {row.answer}  (aliases: {', '.join(list(row.aliases)[:4])})")


def test_alias_filter_keeps_readable_names():
    names = ["Les Escaldes", "Escaldes-Engordany", "aisakaladesa", "Эскальдес", "LAX", "Korea, Republic of",
             "Route 66", "Saint-Étienne"]
    assert latin_names(names) == ["Les Escaldes", "Escaldes-Engordany", "Saint-Étienne"]

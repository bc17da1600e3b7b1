"""The embedded fact graph: real facts from pinned wheels, ≥10 relations, ≥5 000 questions, all buckets."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

import knowpack.kg.stage as questions_module
from knowpack.kg.embedded import build_embedded, latin_names
from knowpack.kg.folder import QUESTIONS_SCHEMA, QuestionSet
from knowpack.kg.stage import QuestionsConfig
from knowpack.kg.stage import run as build_questions
from knowpack.kg.templates import load_templates


@pytest.fixture(scope="module")
def question_cache(tmp_path_factory):
    """A private cache for built question sets, so the first build here computes rather than copies."""
    cache = tmp_path_factory.mktemp("kg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(questions_module, "cache_dir", lambda: cache)
        yield cache


@pytest.fixture(scope="module")
def embedded_folder(tmp_path_factory, question_cache):
    return build_questions(QuestionsConfig(out=tmp_path_factory.mktemp("embedded") / "q", progress=False)).path


def test_embedded_questions(embedded_folder):
    table = pq.read_table(embedded_folder / "questions.parquet")
    assert table.schema.equals(QUESTIONS_SCHEMA)
    frame = table.to_pandas()
    assert len(frame) >= 5000 and frame["id"].is_unique
    assert frame["relation"].nunique() >= 10
    assert set(frame["bucket"]) == {"head", "torso", "tail"}
    per_relation = frame.groupby(["relation", "bucket"]).size().unstack(fill_value=0)
    assert (per_relation.nunique(axis=1) == 1).all()  # balanced buckets
    assert all(len(aliases) and all(a.strip() for a in aliases) for aliases in frame["aliases"])
    assert all(answer in aliases for answer, aliases in zip(frame["answer"], frame["aliases"]))
    assert all(len(p) >= 3 for p in frame["paraphrases"])
    assert (frame["relation_domain"] != "undefined").all()
    # real facts, with their real popularity ordering
    capitals = frame[frame["relation"] == "capital"].set_index("subject")["answer"].to_dict()
    assert all(capitals.get(country, city) == city for country, city in
               {"France": "Paris", "Japan": "Tokyo", "Germany": "Berlin", "Peru": "Lima"}.items())
    heads = frame[frame["bucket"] == "head"]["popularity"].median()
    tails = frame[frame["bucket"] == "tail"]["popularity"].median()
    assert heads > tails
    summary = QuestionSet(embedded_folder).summary()
    assert summary["questions"] == len(frame) and summary["relations"] >= 10


def test_same_seed_reloads_identically_and_uses_the_cache(embedded_folder, question_cache, tmp_path):
    fresh = build_embedded(templates=load_templates("embedded"), seed=0, per_bucket=1500, balance=True,
                           max_aliases=20)[0]
    assert fresh.equals(pq.read_table(embedded_folder / "questions.parquet"))
    assert len(list(question_cache.glob("kg/*/questions.parquet"))) == 1
    again = build_questions(QuestionsConfig(out=tmp_path / "again", progress=False)).path
    assert (again / "questions.parquet").read_bytes() == (embedded_folder / "questions.parquet").read_bytes()


def test_alias_filter_keeps_readable_names():
    names = ["Les Escaldes", "Escaldes-Engordany", "aisakaladesa", "Эскальдес", "LAX", "Korea, Republic of",
             "Route 66", "Saint-Étienne"]
    assert latin_names(names) == ["Les Escaldes", "Escaldes-Engordany", "Saint-Étienne"]

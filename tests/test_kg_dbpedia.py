"""The DBpedia builder on a small hand-made dump: buckets, single-object rule, cleaning, labels, aliases, domains."""

from __future__ import annotations

import bz2
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from knowpack.cli import main
from knowpack.errors import InputError, RunConflictError
from knowpack.kg.folder import QUESTIONS_SCHEMA, QuestionSet
from knowpack.kg.stage import QuestionsConfig
from knowpack.kg.stage import run as build_questions
from knowpack.kg.select import cut_buckets

R = "http://dbpedia.org/resource/"
O = "http://dbpedia.org/ontology/"
LABEL = "http://www.w3.org/2000/01/rdf-schema#label"


def triple(s: str, p: str, o: str) -> str:
    return f"<{R}{s}> <{O}{p}> <{R}{o}> .\n"


def fixture_triples() -> list[tuple[str, str, str]]:
    rows = []
    for i in range(40):
        rows.append((f"Person_{i}", "birthPlace", f"City_{i % 8 if i % 3 else 0}"))
        rows.append((f"Person_{i}", "occupation", "Writer" if i % 2 else "Painter"))
    rows.append(("Person_1", "birthPlace", "City_7"))  # a second birthplace: not single-object
    rows.append(("Person_2", "birthPlace", "City_2"))  # a repeated identical triple stays single-object
    for k in range(8):
        rows.append((f"City_{k}", "country", "France" if k < 6 else "Belgium"))
    rows += [
        ("List_of_writers", "birthPlace", "City_1"),
        ("Foo__1", "birthPlace", "City_2"),
        ("Software_X", "genre", "Cross-platform"),
        ("Lyon_France", "country", "France"),
        ("Caf\\u00E9_%28Paris%29", "country", "France"),
        ("Person_5", "someUnknownRelation", "City_3"),
    ]
    return rows


@pytest.fixture(scope="module")
def dump_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dbpedia")
    dump = folder / "mappingbased-objects_lang=en.ttl.bz2"
    with bz2.open(dump, "wt", encoding="utf-8") as handle:
        handle.write("# started 2022-12-01\n")
        handle.writelines(triple(*row) for row in fixture_triples())
        handle.write("this line is broken\n# completed\n")
    labels = folder / "labels_lang=en.ttl"
    labels.write_text(
        f'<{R}City_0> <{LABEL}> "Metropolis Zero"@en .\n'
        f'<{R}City_1> <{LABEL}> "Stadt Eins"@de .\n'
        f'<{R}City_1> <{LABEL}> "City One"@en .\n'
        f'<{R}Unrelated> <{LABEL}> "Never used"@en .\n'
    )
    redirects = folder / "redirects_lang=en.ttl"
    redirects.write_text(f"<{R}Big_City> <{O}wikiPageRedirects> <{R}City_0> .\n")
    ontology = folder / "ontology.nt"
    ontology.write_text(
        f"<{O}birthPlace> <http://www.w3.org/2000/01/rdf-schema#domain> <{O}Person> .\n"
        f"<{O}birthPlace> <http://www.w3.org/2000/01/rdf-schema#range> <{O}Place> .\n"
        f"<{O}country> <http://www.w3.org/2000/01/rdf-schema#range> <{O}Country> .\n"
    )
    return {"dump": str(dump), "labels": (str(labels),), "redirects": (str(redirects),), "ontology": str(ontology)}


def reference_buckets() -> tuple[dict[str, str], Counter]:
    """Popularity and buckets computed the plain way: count mentions, sort, cut the cumulative mass."""
    mentions: Counter = Counter()
    for s, _, o in fixture_triples():
        mentions[s] += 1
        mentions[o] += 1
    names = list(mentions)  # first-seen order, as the builder breaks ties
    buckets = cut_buckets([mentions[n] for n in names])
    return {n: ("head", "torso", "tail")[b] for n, b in zip(names, buckets)}, mentions


def test_cut_buckets_on_a_known_graph():
    # mass 20: A (10) holds the first third, B (5) starts before 2/3, the rest is tail
    assert cut_buckets([1, 10, 3, 5, 1]).tolist() == [2, 0, 2, 1, 2]
    # ties keep their first-seen order: the second 4 starts at 4/12 = 1/3, so it is torso
    assert cut_buckets([4, 4, 4]).tolist() == [0, 1, 2]
    assert cut_buckets([]).tolist() == []


def test_build_on_the_fixture(tmp_path, dump_files):
    config = QuestionsConfig(source="dbpedia", out=tmp_path / "q", balance=False, per_bucket=1000,
                             progress=False, options=dump_files)
    folder = build_questions(config).path
    table = pq.read_table(folder / "questions.parquet")
    assert table.schema.equals(QUESTIONS_SCHEMA)
    rows = {row["id"]: row for row in table.to_pylist()}
    buckets, mentions = reference_buckets()

    for row in rows.values():
        key = row["id"].split("/", 1)[1]
        assert row["bucket"] == buckets[key] and row["popularity"] == mentions[key]
        assert row["template_id"] == f"{row['relation']}#0" and len(row["paraphrases"]) >= 2
        assert all(alias.strip() for alias in row["aliases"]) and row["answer"] in row["aliases"]

    assert "birthPlace/Person_1" not in rows  # two birthplaces
    assert "birthPlace/Person_2" in rows  # the same triple twice is one object
    for dropped in ("birthPlace/List_of_writers", "birthPlace/Foo__1", "genre/Software_X", "country/Lyon_France"):
        assert dropped not in rows
    assert not any(r.startswith("someUnknownRelation/") for r in rows)

    city0 = rows["country/City_0"]
    assert city0["subject"] == "Metropolis Zero" and city0["question"] == "Which country is Metropolis Zero in?"
    assert rows["country/City_1"]["subject"] == "City One"  # the English label wins over the German one
    cafe = rows["country/Caf\\u00E9_%28Paris%29"]
    assert cafe["subject"] == "Café (Paris)" and cafe["answer"] == "France" and cafe["object"] == "France"
    born0 = rows["birthPlace/Person_0"]
    assert born0["answer"] == "Metropolis Zero" and born0["relation_domain"] == "Person"
    # one spelling per normalised form, each with its normalised form: label, the IRI's name, then redirects
    assert born0["aliases"] == ["Metropolis Zero", "metropolis 0", "City 0", "city 0", "Big City", "big city"]
    assert rows["country/City_0"]["relation_domain"] == "Country"
    assert rows["occupation/Person_0"]["relation_domain"] == "undefined"

    summary = QuestionSet(folder).summary()
    assert summary["lines"] == len(fixture_triples()) + 3 and summary["bad_lines"] == 1
    assert summary["bad_line_examples"] == [[len(fixture_triples()) + 2, "this line is broken"]]
    by_relation = {r["relation"]: r for r in summary["relation_table"]}
    assert by_relation["birthPlace"]["skipped"] == {"several objects": 1, "list subject": 1, "name contains __": 1}
    assert by_relation["genre"]["skipped"] == {"junk answer": 1}
    assert by_relation["country"]["skipped"] == {"answer in question": 1}
    assert by_relation["someUnknownRelation"]["skipped"] == {"no template": 1}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and manifest["summary"]["questions"] == table.num_rows


def test_same_seed_same_bytes_and_balanced_caps(tmp_path, dump_files):
    def build(name, seed):
        config = QuestionsConfig(source="dbpedia", options={"dump": dump_files["dump"]}, out=tmp_path / name,
                                 seed=seed, per_bucket=2, progress=False)
        return build_questions(config).file("questions.parquet").read_bytes()

    first = build("a", 0)
    assert build("b", 0) == first
    table = pq.read_table(tmp_path / "a" / "questions.parquet").to_pandas()
    counts = table.groupby(["relation", "bucket"]).size().unstack(fill_value=0)
    assert len(table) and (counts.nunique(axis=1) == 1).all() and counts.max().max() <= 2
    assert set(table["bucket"]) == {"head", "torso", "tail"}
    other_seeds = {build(f"s{seed}", seed) for seed in (1, 2, 3)}
    assert any(data != first for data in other_seeds)


def test_resume_conflict_and_user_errors(tmp_path, dump_files, capsys, monkeypatch):
    monkeypatch.setattr("knowpack.cli.COMMAND_MODULES", ("knowpack.kg.stage",))  # only this stage's commands
    out = tmp_path / "run"
    args = ["questions", "--source", "dbpedia", "--dump", dump_files["dump"], "--no-balance", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "questions per relation and bucket" in printed and "malformed line" in printed
    assert "no template: 1" in printed
    assert main(args) == 0  # finished work is returned as is
    with pytest.raises(RunConflictError):
        build_questions(QuestionsConfig(source="dbpedia", options={"dump": dump_files["dump"]}, out=out, seed=9))

    assert main(["questions", "--source", "dbpedia", "--dump", str(tmp_path / "missing.bz2"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "missing.bz2: file not found" in capsys.readouterr().err
    assert main(args[:-3] + ["--strict", "--out", str(tmp_path / "strict")]) == 2
    assert "--strict allows none" in capsys.readouterr().err
    empty = tmp_path / "empty.nt"
    empty.write_text("# nothing but a comment\n")
    with pytest.raises(InputError, match="empty.nt: no usable triples"):
        build_questions(QuestionsConfig(source="dbpedia", options={"dump": str(empty)}, out=tmp_path / "e",
                                        progress=False))
    with pytest.raises(InputError, match="dump: needed for source dbpedia"):
        QuestionsConfig(source="dbpedia", out=tmp_path / "n")
    assert main(["questions", "--out", str(tmp_path / "m"), "--dump", dump_files["dump"]]) == 2
    assert "--dump: applies to source dbpedia only" in capsys.readouterr().err


def test_redirect_aliases_keep_the_short_forms_under_the_cap(tmp_path):
    """A popular object with many redirects: dump order never decides which survive the cap; one form per
    normalised spelling, the fewest words and characters first, and the summary says how many the cap cut."""
    dump = tmp_path / "dump.nt"
    dump.write_text("".join(triple(f"Town_{i}", "country", "United_States") for i in range(6)))
    long_names = [f"United_States_of_America_variant_{i}" for i in range(30)]
    redirects = tmp_path / "redirects.nt"
    redirects.write_text("".join(f"<{R}{name}> <{O}wikiPageRedirects> <{R}United_States> .\n"
                                 for name in [*long_names, "U.S.A.", "USA", "US", "America", "U.S."]))
    folder = build_questions(QuestionsConfig(source="dbpedia", options={"dump": str(dump), "redirects": (str(redirects),)},
                                             out=tmp_path / "q", max_aliases=5, balance=False, progress=False))
    aliases = pq.read_table(folder.file("questions.parquet")).to_pylist()[0]["aliases"]
    # forms: united states, us, usa, america and the 30 variants = 34 ("U.S." and "U.S.A." repeat us and usa);
    # the cap keeps the first 5 by fewest words, then characters: 29 forms dropped
    spellings = [a for a in aliases if a[0].isupper()]
    assert spellings == ["United States", "US", "USA", "America", "United States of America variant 0"]
    assert "us" in aliases and "U.S." not in aliases
    summary = folder.summary()["aliases"]
    assert summary["cap"] == 5 and summary["answers_capped"] == 1 and summary["forms_dropped"] == 29

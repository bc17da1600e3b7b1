"""Question templates: packaged coverage and user files."""

from __future__ import annotations

import json

import pytest

from knowpack.errors import InputError
from knowpack.kg.templates import fill, load_templates


def test_packaged_dbpedia_templates_cover_150_relations_with_3_phrasings():
    templates = load_templates("dbpedia")
    assert len(templates) >= 150
    assert all(len(phrasings) >= 3 for phrasings in templates.values())
    questions = [phrasings[0] for phrasings in templates.values()]
    assert len(set(questions)) == len(questions)
    for relation in ("birthPlace", "team", "country", "genre", "starring", "capital", "director"):
        assert relation in templates
    assert fill(templates["birthPlace"][0], "Ada {Lovelace}") == "Where was Ada {Lovelace} born?"


def test_packaged_embedded_templates():
    templates = load_templates("embedded")
    assert len(templates) >= 10 and all(len(p) >= 3 for p in templates.values())


def test_user_templates_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("birthPlace:\n  - Where was {subject} born?\n  - '{subject}: place of birth?'\n")
    assert load_templates(yaml_file) == {"birthPlace": ("Where was {subject} born?", "{subject}: place of birth?")}
    json_file = tmp_path / "t.json"
    json_file.write_text(json.dumps({"team": "Who does {subject} play for?"}))
    assert load_templates(json_file) == {"team": ("Who does {subject} play for?",)}


@pytest.mark.parametrize("text, problem", [
    ("birthPlace: ['Where was he born?']", "must contain {subject}"),
    ("birthPlace: ['{subject} {object}']", "no other braces"),
    ("birthPlace: []", "non-empty list"),
    ("- just a list", "expected a mapping"),
    ("birthPlace: [unclosed", "not valid YAML"),
])
def test_bad_template_files(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem):
        load_templates(path)
    with pytest.raises(InputError, match="templates file not found"):
        load_templates(tmp_path / "missing.yaml")

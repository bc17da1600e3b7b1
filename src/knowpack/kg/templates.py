"""Question templates: relation → phrasings with a ``{subject}`` slot; phrasing 0 asks, the rest paraphrase.

The packaged sets (``dbpedia``, ``embedded``) were written for knowpack. Users pass their own file with
``--templates FILE`` (YAML or JSON, the same shape: ``relation: [phrasing, ...]``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import yaml

from knowpack.errors import InputError
from knowpack.yamlfile import load_yaml

SLOT = "{subject}"
PACKAGED = ("dbpedia", "embedded")

Templates = dict[str, tuple[str, ...]]


def load_templates(source: str | Path) -> Templates:
    """Load a packaged set by name or a YAML/JSON file; InputError names the file and the bad entry."""
    if str(source) in PACKAGED:
        text = resources.files("knowpack.kg").joinpath("templates", f"{source}.yaml").read_text("utf-8")
        return _validate(yaml.safe_load(text), f"{source} templates")
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: templates file not found")
    if path.suffix.lower() != ".json":
        return _validate(load_yaml(path), str(path))
    try:
        data = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from err
    return _validate(data, str(path))


def _validate(data: object, name: str) -> Templates:
    if not isinstance(data, dict) or not data:
        raise InputError(f"{name}: expected a mapping of relation -> list of phrasings")
    templates: Templates = {}
    for relation, phrasings in data.items():
        if isinstance(phrasings, str):
            phrasings = [phrasings]
        if not isinstance(phrasings, list) or not phrasings:
            raise InputError(f"{name}: relation {relation!r} needs a non-empty list of phrasings")
        for phrasing in phrasings:
            if not isinstance(phrasing, str) or phrasing.count(SLOT) != 1 or "{" in phrasing.replace(SLOT, ""):
                raise InputError(f"{name}: relation {relation!r}: phrasing {phrasing!r} must contain {SLOT} "
                                 "exactly once and no other braces")
        templates[str(relation)] = tuple(dict.fromkeys(p.strip() for p in phrasings))
    return templates


def fill(phrasing: str, subject: str) -> str:
    """The phrasing with the subject's label in its slot (plain replacement: labels may contain braces)."""
    return phrasing.replace(SLOT, subject)


def template_id(relation: str, index: int = 0) -> str:
    return f"{relation}#{index}"

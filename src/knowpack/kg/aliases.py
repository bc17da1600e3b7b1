"""Answer aliases: the names a correct answer may use; never empty strings.

Names are kept by their *form* (``text.normalize``: what matching compares): "USA", "U.S.A." and "usa" are one
form, kept under its first spelling, so a cap on aliases counts forms a model could answer, not spellings. The
answer comes first, then the other names in the order the caller gives (curated source order, or DBpedia
redirects ranked shortest first); each kept name is followed by its normalised form where that differs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from knowpack.text import normalize

MAX_ALIASES = 20
_QUALIFIER = re.compile(r"\s*\([^()]*\)\s*$")


def without_qualifier(label: str) -> str:
    """'Mercury (planet)' -> 'Mercury': the disambiguation suffix of a Wikipedia title."""
    return _QUALIFIER.sub("", label).strip()


def distinct_names(answer: str, names: Iterable[str] = ()) -> list[str]:
    """``answer`` (and its title without a qualifier), then ``names``: one spelling per normalised form."""
    kept: list[str] = []
    forms: set[str] = set()
    for name in (answer, without_qualifier(answer), *names):
        name = " ".join(str(name).split())
        form = normalize(name)
        if form and form not in forms:
            forms.add(form)
            kept.append(name)
    return kept


def build_aliases(answer: str, names: Iterable[str] = (), max_aliases: int = MAX_ALIASES) -> list[str]:
    """The first ``max_aliases`` distinct forms of ``distinct_names``, each spelling with its normalised form."""
    aliases: list[str] = []
    for name in distinct_names(answer, names)[:max_aliases]:
        aliases.append(name)
        folded = normalize(name)
        if folded != name and folded not in aliases:
            aliases.append(folded)
    return aliases

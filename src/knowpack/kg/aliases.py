"""Answer aliases: the raw names a correct answer may use, then their normalised forms; never empty strings.

Raw names come first (the answer itself, then labels, redirects or alternate names in source order) so a capped
list keeps the most canonical ones; normalised forms (``text.normalize``: lower-case, no articles or punctuation,
accents folded) follow for the names that have them.
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


def build_aliases(answer: str, names: Iterable[str] = (), max_aliases: int = MAX_ALIASES) -> list[str]:
    """``answer`` first, then distinct ``names``, then normalised forms; at most ``max_aliases``, none empty."""
    raw: list[str] = []
    seen: set[str] = set()
    for name in (answer, without_qualifier(answer), *names):
        name = " ".join(str(name).split())
        if name and name not in seen and normalize(name):
            seen.add(name)
            raw.append(name)
    raw = raw[: max(1, max_aliases // 2)]
    aliases = list(raw)
    for name in raw:
        folded = normalize(name)
        if folded not in seen:
            seen.add(folded)
            aliases.append(folded)
    return aliases[:max_aliases]

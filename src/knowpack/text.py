"""Answer matching on normalised text, shared by question building, labelling and evaluation.

Matching decides every number knowpack reports, so it lives in one place:
- ``normalize``: unicode-folded, lower-case, punctuation and English articles removed, whitespace collapsed;
- ``match_lenient``: a normalised alias occurs in the normalised answer on word boundaries (the study's
  containment rule, but "ur" no longer matches inside "europe");
- ``match_strict``: the normalised answer equals a normalised alias.
Empty aliases never match (the study's script let an empty alias match everything).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Fold accents and case, drop punctuation and articles: 'The Hague!' -> 'hague', 'São Tomé' -> 'sao tome'."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()
    folded = _NON_WORD.sub(" ", folded)
    folded = _ARTICLES.sub(" ", folded)
    return _SPACES.sub(" ", folded).strip()


def normalized_aliases(aliases: Iterable[str]) -> list[str]:
    """Distinct non-empty normalised aliases, longest first (so reports show the most specific match)."""
    unique = {normalize(a) for a in aliases if a}
    unique.discard("")
    return sorted(unique, key=lambda a: (-len(a), a))


def match_lenient(answer: str, aliases: Iterable[str]) -> bool:
    padded = f" {normalize(answer)} "
    return any(f" {alias} " in padded for alias in normalized_aliases(aliases))


def match_strict(answer: str, aliases: Iterable[str]) -> bool:
    norm = normalize(answer)
    return bool(norm) and norm in normalized_aliases(aliases)


_ANSWER_PREFIX = re.compile(r"^\s*(answer|a)\s*:\s*", re.IGNORECASE)


def extract_answer(generated: str) -> str:
    """The answer in a generation: its first non-empty line, without a leading 'Answer:' or 'A:'."""
    for line in generated.strip().splitlines():
        line = _ANSWER_PREFIX.sub("", line).strip()
        if line:
            return line
    return ""

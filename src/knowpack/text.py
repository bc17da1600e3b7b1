"""Answer matching on normalised text, shared by question building, labelling and evaluation.

Matching decides every number knowpack reports, so it lives in one place. ``normalize`` makes the form both an
answer and an alias are compared in:

* unicode folded (NFKD, accents dropped) and lower-cased;
* dotted abbreviations and initials joined ("U.S." → "us", "J. K. Rowling" → "jk rowling");
* digit groups joined ("1,000" and "1 000" → "1000"); a point or comma between digits kept ("2.5");
* a leading English article dropped, only where it starts the text and a space follows it ("The Hague" → "hague",
  while "Serie A", "Vitamin A" and "A-League" keep their "a"); a name made only of articles is kept ("The The");
* other punctuation removed, number words written as digits ("twenty-one" → "21", "one hundred" → "100"),
  whitespace collapsed.

``match_lenient``: a normalised alias occurs in the normalised answer as whole words (the study's containment
rule, but "ur" never matches inside "europe", and "1" never inside "1684" or "2.5"). ``match_strict``: the
normalised answer equals a normalised alias. Empty aliases never match (the study's script let an empty alias
match everything). docs/metrics.md lists how these rules differ from the study's.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

_INITIALS = re.compile(r"(?<![\w.])((?:[^\W\d_]\.\s?)+[^\W\d_])\b\.?")
_DIGIT_GROUPS = re.compile(r"(?<![\d.,])\d{1,3}(?:[, \u00a0\u202f]\d{3})+(?![\d]|[.,]\d)")
_LEADING_ARTICLE = re.compile(r"^[^\w]*(?:the|an|a)\s+(?=\w)")
_PUNCTUATION = re.compile(r"[^\w\s.,]|_|(?<!\d)[.,]|[.,](?!\d)")
_SPACES = re.compile(r"\s+")

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}


def normalize(text: str) -> str:
    """The form answers and aliases are compared in: 'The Hague!' -> 'hague', 'U.S.' -> 'us', '1,000' -> '1000'."""
    if text.isascii():  # most text: NFKD leaves it as it is and it has no accents to drop
        folded = text.lower()
    else:
        folded = unicodedata.normalize("NFKD", text)
        folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()
    folded = _INITIALS.sub(lambda m: re.sub(r"[.\s]", "", m.group(1)) + " ", folded)
    folded = _DIGIT_GROUPS.sub(lambda m: re.sub(r"\D", "", m.group(0)), folded)
    folded = _LEADING_ARTICLE.sub("", folded, count=1)
    words = _PUNCTUATION.sub(" ", folded).split()
    return " ".join(_number_words(words))


def _number_words(words: list[str]) -> list[str]:
    """English number words as digits: ['twenty', 'one', 'thousand'] -> ['21000']; 'and' inside a number is
    read as part of it ('one hundred and five' -> 105)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i] not in _UNITS and words[i] not in _TENS:
            out.append(words[i])
            i += 1
            continue
        total, current, j = 0, 0, i
        while j < len(words):
            word = words[j]
            if word in _UNITS:
                current += _UNITS[word]
            elif word in _TENS:
                current += _TENS[word]
            elif word in _SCALES and j > i:
                scale = _SCALES[word]
                if scale == 100:
                    current *= 100
                else:
                    total += current * scale
                    current = 0
            elif word == "and" and j > i and words[j - 1] in _SCALES and j + 1 < len(words) and (
                    words[j + 1] in _UNITS or words[j + 1] in _TENS):
                pass
            else:
                break
            j += 1
        out.append(str(total + current))
        i = j
    return out


def normalized_aliases(aliases: Iterable[str]) -> list[str]:
    """Distinct non-empty normalised aliases, longest first (so reports show the most specific match)."""
    unique = {normalize(a) for a in aliases if a}
    unique.discard("")
    return sorted(unique, key=lambda a: (-len(a), a))


def contains_words(text_key: str, phrase_key: str) -> bool:
    """Whether the normalised ``phrase_key`` occurs in the normalised ``text_key`` as whole words."""
    return bool(phrase_key) and f" {phrase_key} " in f" {text_key} "


def match_lenient(answer: str, aliases: Iterable[str]) -> bool:
    return lenient_key_match(normalize(answer), normalized_aliases(aliases))


def match_strict(answer: str, aliases: Iterable[str]) -> bool:
    return strict_key_match(normalize(answer), normalized_aliases(aliases))


def lenient_key_match(answer_key: str, alias_keys: Sequence[str]) -> bool:
    """``match_lenient`` on normalised text (a labelling normalises each question's aliases once, not per answer)."""
    return any(contains_words(answer_key, alias) for alias in alias_keys)


def strict_key_match(answer_key: str, alias_keys: Sequence[str]) -> bool:
    return bool(answer_key) and answer_key in alias_keys


_ANSWER_PREFIX = re.compile(r"^\s*(answer|a)\s*:\s*", re.IGNORECASE)


def extract_answer(generated: str) -> str:
    """The answer in a generation: its first non-empty line, without a leading 'Answer:' or 'A:'."""
    for line in generated.strip().splitlines():
        line = _ANSWER_PREFIX.sub("", line).strip()
        if line:
            return line
    return ""

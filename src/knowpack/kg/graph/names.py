"""Names a reader of English would accept, and how often names are mentioned in a body of text."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

_WORDS = re.compile(r"\w+")
# Short answers that are also everyday English words: as aliases they would match almost any answer under the
# lenient containment rule ("In" for indium, "OK" for Oklahoma).
COMMON_WORDS = frozenset({"a", "i", "am", "an", "as", "at", "be", "by", "do", "go", "he", "hi", "in", "is", "it", "me",
                          "my", "no", "of", "ok", "on", "or", "so", "to", "up", "us", "we"})


def _is_latin_name(name: str) -> bool:
    letters = [ch for ch in name if ch.isalpha()]
    return bool(letters) and all(unicodedata.name(ch, "").startswith("LATIN") for ch in letters)


def latin_names(names: Iterable[str]) -> list[str]:
    """Alternate names a reader of English would accept: Latin script, capitalised, no digits or inverted
    forms ('Korea, Republic of'), not a code."""
    kept = []
    for name in names:
        name = name.strip()
        if (len(name) >= 2 and name[0].isupper() and not any(ch.isdigit() or ch == "," for ch in name)
                and _is_latin_name(name) and not (name.isupper() and len(name) <= 4)):
            kept.append(name)
    return list(dict.fromkeys(kept))


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


class MentionCounter:
    """How often names occur (as whole words, case-insensitive) in tokenised texts: one pass over the words,
    trying only the wanted names that start with each word."""

    def __init__(self, texts: Iterable[Sequence[str]], names: Iterable[str]) -> None:
        by_first_word: dict[str, set[tuple[str, ...]]] = {}
        for name in names:
            name_words = tuple(words(name))
            if name_words:
                by_first_word.setdefault(name_words[0], set()).add(name_words)
        self.counts: Counter = Counter()
        for text in texts:
            for i, word in enumerate(text):
                for candidate in by_first_word.get(word, ()):
                    if tuple(text[i:i + len(candidate)]) == candidate:
                        self.counts[candidate] += 1

    def __call__(self, name: str) -> int:
        return self.counts[tuple(words(name))]

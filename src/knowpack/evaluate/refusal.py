"""Refusals: answers in which the model declines to answer ("I couldn't find any information on …").

The study's code only looked for the word "information" in the first prompt's answer, which misses "I cannot
verify …" and flags "Information theory". Here a refusal is an answer that contains a phrase of the lexicon
(``refusals.yaml``) or matches one of its regular expressions or a user-given one, case-insensitively, and every
prompt's greedy answer is checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

import pandas as pd
import yaml

from knowpack.errors import InputError

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})
_SPACES = re.compile(r"\s+")


def _prepare(text: str) -> str:
    """Fold curly quotes and whitespace so "I couldn’t  find" matches the lexicon's "i couldn't find"."""
    return _SPACES.sub(" ", text.translate(_QUOTES)).strip()


@dataclass(frozen=True)
class RefusalDetector:
    """Phrases (plain text) and regular expressions; an answer that contains or matches any is a refusal."""

    phrases: tuple[str, ...]
    patterns: tuple[str, ...]

    @classmethod
    def default(cls, extra_patterns: Iterable[str] = ()) -> RefusalDetector:
        """The packaged lexicon plus ``extra_patterns`` (e.g. from ``--refusal-pattern``)."""
        lexicon = yaml.safe_load(resources.files("knowpack.evaluate").joinpath("refusals.yaml").read_text())
        return cls(tuple(lexicon["phrases"]), tuple(lexicon["patterns"]) + tuple(extra_patterns))

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise InputError(f"refusal pattern {pattern!r} is not a valid regular expression ({err})") from err

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """One case-insensitive alternation of every phrase (escaped) and pattern."""
        alternatives = [re.escape(_prepare(p)) for p in self.phrases] + [f"(?:{p})" for p in self.patterns]
        return re.compile("|".join(alternatives) or r"(?!)", re.IGNORECASE)

    def is_refusal(self, answer: str) -> bool:
        return bool(self.regex.search(_prepare(answer)))

    def detect(self, answers: pd.Series) -> pd.Series:
        """Boolean Series: which answers are refusals (missing answers are not)."""
        regex = self.regex
        return answers.fillna("").map(lambda a: bool(regex.search(_prepare(a)))).astype(bool)


def refusal_rates(responses: pd.DataFrame, detector: RefusalDetector) -> dict[str, float | int]:
    """Refusal counts over greedy answers (``sample_id == 0``) of every prompt.

    ``refusal_rate`` = refused answers / greedy answers; ``question_refusal_rate`` = questions refused under at
    least one prompt / questions; ``first_prompt_refusal_rate`` = the study's view (prompt 0 only) / questions.
    """
    greedy = responses[responses["sample_id"] == 0]
    refused = detector.detect(greedy["answer"])
    by_question = refused.groupby(greedy["question_id"]).any()
    first = greedy["prompt_id"] == greedy["prompt_id"].min()
    n_answers, n_questions = len(greedy), int(by_question.size)
    return {
        "n_answers": n_answers,
        "refusals": int(refused.sum()),
        "refusal_rate": float(refused.mean()) if n_answers else 0.0,
        "n_questions": n_questions,
        "questions_with_refusal": int(by_question.sum()),
        "question_refusal_rate": float(by_question.mean()) if n_questions else 0.0,
        "first_prompt_refusal_rate": float(refused[first].mean()) if first.any() else 0.0,
    }


def refused_questions(responses: pd.DataFrame, detector: RefusalDetector) -> pd.Series:
    """Per question: number of prompts whose greedy answer is a refusal (index: question_id)."""
    greedy = responses[responses["sample_id"] == 0]
    return detector.detect(greedy["answer"]).groupby(greedy["question_id"]).sum().astype("int64")

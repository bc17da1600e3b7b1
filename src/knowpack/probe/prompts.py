"""Few-shot probing prompts and the zero-shot training format, in one place so probe and train agree.

Chat format (the study's): a system turn "Answer the following question.", then per exemplar a user turn
``Question: …`` and an assistant turn ``Answer: …``, then the target question as a user turn. Plain format
(base models without a chat template): the same system line, then ``Question: …`` / ``Answer: …`` lines.

Exemplar policies:
- ``pool``: the fixed pool in ``exemplars.yaml``; prompt set i uses exemplars ``shots*i … shots*i+shots-1``
  (4i…4i+3 with 4 shots), as in the study.
- ``same-relation``: as in SliCK, exemplars are other questions of the target's relation, chosen by a seeded
  draw per (relation, prompt); the target itself is never among them (it is replaced by the next drawn one).
  Relations with too few other questions are topped up from the prompt's pool exemplars.

The engine needs every prompt as token ids split into a shared prefix and a per-question suffix. The split is
exact: each prompt is tokenised whole, and its prefix is the longest run of leading tokens it shares with the
prompt set's common prefix, so prefix + suffix is always the prompt's own tokenisation.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Sequence

import yaml

from knowpack.errors import InputError

SYSTEM_PROMPT = "Answer the following question."
POLICIES = ("pool", "same-relation")
FORMAT_VERSION = 1  # bump when the prompt layout below changes: it is part of every stored answer's key


@dataclass(frozen=True)
class Exemplar:
    question: str
    answer: str


@cache
def exemplar_pool() -> tuple[Exemplar, ...]:
    """The fixed exemplar pool shipped with knowpack (general-knowledge trivia in TriviaQA's style)."""
    data = yaml.safe_load(resources.files("knowpack.probe").joinpath("exemplars.yaml").read_text())
    return tuple(Exemplar(str(item["question"]), str(item["answer"])) for item in data["exemplars"])


def pool_fingerprint() -> str:
    blob = "\n".join(f"{e.question}\t{e.answer}" for e in exemplar_pool())
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- rendering


def render_prompt(tokenizer, exemplars: Sequence[Exemplar], question: str, chat: bool) -> str:
    """The full prompt text for ``question`` after ``exemplars`` (generation starts right after it)."""
    if chat:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for ex in exemplars:
            messages.append({"role": "user", "content": f"Question: {ex.question}"})
            messages.append({"role": "assistant", "content": f"Answer: {ex.answer}"})
        messages.append({"role": "user", "content": f"Question: {question}"})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    shots = "".join(f"Question: {ex.question}\nAnswer: {ex.answer}\n\n" for ex in exemplars)
    return f"{SYSTEM_PROMPT}\n\n{shots}Question: {question}\nAnswer:"


def encode_prompts(tokenizer, texts: Sequence[str], chat: bool) -> list[list[int]]:
    """Token ids of rendered prompts. A chat template writes its own special tokens; plain text gets the
    tokenizer's usual ones (BOS)."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=not chat)["input_ids"]


def training_example(tokenizer, question: str, answer: str, chat: bool) -> tuple[str, str]:
    """The zero-shot training row for a fact: (prompt text, target text), in the probe's own format.

    Chat: system line + user ``Question: q``; the target is the assistant turn ``Answer: a`` with the
    template's end-of-turn marker, so the model learns where an answer stops. Plain: ``Question: q\\nAnswer:``
    and the target `` a`` plus a newline (the plain probe stops at the newline).
    """
    if not chat:
        return f"{SYSTEM_PROMPT}\n\nQuestion: {question}\nAnswer:", f" {answer}\n"
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Question: {question}"},
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": f"Answer: {answer}"}], tokenize=False
    )
    if full.startswith(prompt):
        return prompt, full[len(prompt):]
    return prompt, f"Answer: {answer}{tokenizer.eos_token or ''}"


# ---------------------------------------------------------------- prompt sets


@dataclass(frozen=True)
class PromptSettings:
    """Everything that decides the prompt text (besides the questions and the tokenizer). ``excluded``: indices
    of pool exemplars left out (contaminated ones); the prompt sets are cut from the pool that remains."""

    n_prompts: int = 10
    shots: int = 4
    policy: str = "pool"
    seed: int = 0
    chat: bool = True
    excluded: tuple[int, ...] = ()

    def pool(self) -> tuple[Exemplar, ...]:
        return tuple(e for i, e in enumerate(exemplar_pool()) if i not in set(self.excluded))

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise InputError(f"exemplar policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        if self.n_prompts < 1 or self.shots < 0:
            raise InputError(f"n_prompts={self.n_prompts}, shots={self.shots}: need at least 1 prompt and 0 shots")
        needed = self.n_prompts * self.shots
        if needed > len(self.pool()):
            left = f" ({len(self.excluded)} left out as contaminated)" if self.excluded else ""
            raise InputError(f"{self.n_prompts} prompts × {self.shots} shots need {needed} pool exemplars; "
                             f"the pool has {len(self.pool())}{left}")

    def fingerprint(self) -> str:
        blob = (f"{FORMAT_VERSION}|{self.n_prompts}|{self.shots}|{self.policy}|{self.seed}|{self.chat}|"
                f"{pool_fingerprint()}|{sorted(self.excluded)}")
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EncodedPrompt:
    """One question under one prompt set: its text hash and its tokens split into shared prefix and suffix."""

    row: int
    prompt_sha: str
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]


class PromptSet:
    """Builds and tokenises the prompts of every question under every prompt set."""

    def __init__(self, tokenizer, settings: PromptSettings, questions: Sequence[str],
                 relations: Sequence[str] | None = None, answers: Sequence[str] | None = None):
        settings.validate()
        if settings.policy == "same-relation" and (relations is None or answers is None):
            raise InputError("exemplar policy same-relation needs the questions' relation and answer columns")
        self.tokenizer = tokenizer
        self.settings = settings
        self.questions = list(questions)
        self.answers = list(answers) if answers is not None else None
        self._members: dict[str, list[int]] = {}
        self._relations = list(relations) if relations is not None else None
        if self._relations is not None:
            for row, relation in enumerate(self._relations):
                self._members.setdefault(relation, []).append(row)
        self._draws: dict[tuple[str, int], list[int]] = {}
        self._prefixes: dict[tuple, tuple[int, ...]] = {}
        self._frames: dict[tuple, tuple[str, str] | None] = {}

    def pool_exemplars(self, prompt_id: int) -> tuple[Exemplar, ...]:
        k = self.settings.shots
        return self.settings.pool()[k * prompt_id: k * prompt_id + k]

    def exemplar_key(self, prompt_id: int, row: int) -> tuple:
        """A hashable description of the exemplars ``row`` gets under ``prompt_id``."""
        if self.settings.policy == "pool":
            return ("pool", prompt_id)
        relation = self._relations[row]
        draw = self._draw(relation, prompt_id)
        chosen = tuple(r for r in draw if r != row)[: self.settings.shots]
        return ("relation", prompt_id, chosen)

    def exemplars(self, key: tuple) -> tuple[Exemplar, ...]:
        if key[0] == "pool":
            return self.pool_exemplars(key[1])
        _, prompt_id, rows = key
        own = tuple(Exemplar(self.questions[r], self.answers[r]) for r in rows)
        return own + self.pool_exemplars(prompt_id)[len(own):]

    def _draw(self, relation: str, prompt_id: int) -> list[int]:
        """Seeded draw of shots+1 questions of ``relation`` (one spare replaces the target when drawn)."""
        cached = self._draws.get((relation, prompt_id))
        if cached is None:
            members = sorted(self._members[relation], key=lambda r: self.questions[r])
            seed = int(hashlib.sha256(f"{self.settings.seed}|{relation}|{prompt_id}".encode()).hexdigest()[:15], 16)
            cached = random.Random(seed).sample(members, min(len(members), self.settings.shots + 1))
            self._draws[(relation, prompt_id)] = cached
        return cached

    def _common_prefix(self, key: tuple) -> tuple[int, ...]:
        """Tokens shared by every question under these exemplars: the common start of two dummy prompts."""
        prefix = self._prefixes.get(key)
        if prefix is None:
            exemplars = self.exemplars(key)
            a, b = encode_prompts(
                self.tokenizer,
                [render_prompt(self.tokenizer, exemplars, q, self.settings.chat) for q in ("0", "1")],
                self.settings.chat,
            )
            prefix = tuple(a[: _common_length(a, b)])
            self._prefixes[key] = prefix
        return prefix

    def _frame(self, key: tuple) -> tuple[str, str] | None:
        """The text before and after the question in these exemplars' prompt, if the template puts a question in
        verbatim (checked on ``FRAME_PROBES``); None if it rewrites it."""
        if key not in self._frames:
            exemplars = self.exemplars(key)
            head, _, tail = render_prompt(self.tokenizer, exemplars, FRAME_SENTINEL, self.settings.chat
                                          ).partition(FRAME_SENTINEL)
            verbatim = all(render_prompt(self.tokenizer, exemplars, probe, self.settings.chat) == head + probe + tail
                           for probe in FRAME_PROBES)
            self._frames[key] = (head, tail) if verbatim else None
        return self._frames[key]

    def texts(self, prompt_id: int, rows: Sequence[int]) -> tuple[list[tuple], list[str]]:
        """Exemplar keys and full prompt texts of ``rows`` under prompt set ``prompt_id``.

        Rendering a chat template costs ~0.1 ms a prompt on 2 cores, host time that a GPU waits for at 100k prompts a
        labelling; so each exemplar set's prompt is rendered once around a sentinel, and a question goes in
        between the two parts where the template takes it verbatim (stripped questions; others are rendered)."""
        keys = [self.exemplar_key(prompt_id, row) for row in rows]
        texts = []
        for key, row in zip(keys, rows):
            question, frame = self.questions[row], self._frame(key)
            if frame is not None and question == question.strip():
                texts.append(frame[0] + question + frame[1])
            else:
                texts.append(render_prompt(self.tokenizer, self.exemplars(key), question, self.settings.chat))
        return keys, texts

    def shas(self, prompt_id: int, rows: Sequence[int]) -> list[str]:
        """Hashes of the prompt texts (cheap: no tokenisation), the store's check that a stored answer belongs."""
        return [prompt_sha(text) for text in self.texts(prompt_id, rows)[1]]

    def encode(self, prompt_id: int, rows: Sequence[int]) -> list[EncodedPrompt]:
        """Render, hash and tokenise ``rows`` under prompt set ``prompt_id``."""
        keys, texts = self.texts(prompt_id, rows)
        encoded = []
        for row, key, text, ids in zip(rows, keys, texts, encode_prompts(self.tokenizer, texts, self.settings.chat)):
            common = self._common_prefix(key)
            split = min(_common_length(common, ids), len(ids) - 1)
            encoded.append(EncodedPrompt(row, prompt_sha(text), tuple(ids[:split]), tuple(ids[split:])))
        return encoded


FRAME_SENTINEL = "\u2063knowpack-question\u2063"
# questions a template must take in verbatim for the sentinel's frame to stand in for rendering: quotes, markup,
# template syntax, newlines, non-Latin text
FRAME_PROBES = ("0", 'Who wrote "War & Peace" <i>1869</i>?', "{{ x }} {% if %} \\n", "a\nb\tc", "Zürich – 東京?")


def prompt_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


# ---------------------------------------------------------------- contamination


def contaminated_exemplars(questions: Sequence[str], ids: Sequence[str], aliases: Sequence[Sequence[str]],
                           subjects: Sequence[str] | None = None,
                           paraphrases: Sequence[Sequence[str]] | None = None) -> dict[int, str]:
    """Pool exemplars that give a labelled question away: pool index -> the id of a question it collides with.

    An exemplar collides when its question text equals a question or a paraphrase (after normalisation), or when
    it asks about a question's subject (the subject's name occurs in it as whole words) and its answer is that
    question's answer (lenient match on the aliases): the same fact, so that fact could never be Unknown."""
    from knowpack.text import contains_words, match_lenient, normalize

    texts: dict[str, str] = {}
    for row, qid in enumerate(ids):
        texts.setdefault(normalize(questions[row]), qid)
        for paraphrase in (paraphrases[row] if paraphrases is not None else ()):
            texts.setdefault(normalize(paraphrase), qid)
    by_subject: dict[str, list[int]] = {}
    for row, subject in enumerate(subjects or ()):
        key = normalize(subject)
        if key:
            by_subject.setdefault(key, []).append(row)
    longest = max((len(key.split()) for key in by_subject), default=0)
    found: dict[int, str] = {}
    for index, exemplar in enumerate(exemplar_pool()):
        text = normalize(exemplar.question)
        if text in texts:
            found[index] = texts[text]
            continue
        words = text.split()
        grams = {" ".join(words[i:i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)}
        for gram in grams & by_subject.keys():
            row = next((r for r in by_subject[gram] if contains_words(text, gram)
                        and match_lenient(exemplar.answer, aliases[r])), None)
            if row is not None:
                found[index] = ids[row]
                break
    return found

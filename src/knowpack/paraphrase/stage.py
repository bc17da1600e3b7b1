"""``knowpack paraphrase``: k model-written paraphrases of any questions (the study asked an LLM for 200 each).

A paraphrase is kept only when it is new (not the question nor an earlier paraphrase after ``text.normalize``),
is a question (at least three words, ending in a question mark, or a request starting with one of ``REQUESTS``
such as "Name the capital city of Zorvania." — the relation templates phrase some questions so) that does not
quote the question behind a preamble ("Rewrite the question: Who founded X?"), keeps the
question's subject when the question set names one, and does not give the answer away (no alias occurs in it,
``text.match_lenient``). A small model asked to rephrase often answers instead ("The capital of Zorvania is
Sarvem.") or drops the subject ("What is the most widely spoken language?"); trained as questions, such lines teach
a wrong answer or a subject-free one. Each question is sampled on its own seed (run seed + row), so results do not
depend on batching, and a run folder with the same config resumes as finished work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from knowpack.cli import Command
from knowpack.config import (Config, ConfigError, device_option, model_option, option, out_option, overwrite_option,
                             progress_option, trust_remote_code_option)
from knowpack.errors import InputError
from knowpack.kg.facts_file import read_facts
from knowpack.kg.folder import QUESTIONS_FILE, QUESTIONS_SCHEMA, ParaphrasedSet, questions_file, read_questions
from knowpack.runfolder import open_run, write_parquet
from knowpack.text import match_lenient, normalize

DEFAULT_PROMPT = (
    "Rewrite the question below in different words, keeping exactly the same meaning. "
    "Reply with the rewritten question only.\nQuestion: {question}"
)
REQUESTS = ("name", "give", "state", "tell", "identify", "say")  # first words of a question put as a request
_NUMBERING = re.compile(r"^\s*(?:(?:\d+[.)]|[-*•]|(?:rewritten |new |rephrased )?question\s*:)\s*)+", re.IGNORECASE)


@dataclass
class ParaphraseConfig(Config):
    questions: Path = option(help="a question set (folder or questions.parquet), a file of facts (.jsonl, .csv, "
                             ".parquet: question, answer?, aliases?) or a .txt of questions", metavar="QUESTIONS",
                             affects_results=False)
    out: Path = out_option()
    model: str = model_option()
    k: int = option(5, help="paraphrases per question", flag="-k", minimum=1)
    rounds: int = option(3, help="sampling rounds before giving up on k", minimum=1)
    samples_per_round: int = option(8, help="samples drawn per round", minimum=1)
    temperature: float = option(1.0, help="sampling temperature", above=0)
    top_p: float = option(0.95, help="nucleus sampling mass", above=0, maximum=1)
    max_new_tokens: int = option(48, help="tokens per paraphrase at most", minimum=1)
    prompt: str = option(DEFAULT_PROMPT, help="rephrase prompt with {question}")
    seed: int = option(0, help="seeds the sampling (with each question's row)")
    keep_existing: bool = option(True, help="keep the template paraphrases next to the new ones")
    device: str | None = device_option()
    trust_remote_code: bool = trust_remote_code_option()
    overwrite: bool = overwrite_option()
    progress: bool = progress_option()

    def check(self) -> None:
        if "{question}" not in self.prompt:
            raise ConfigError("prompt", "must contain {question}")


def clean_generation(text: str) -> str:
    """The first non-empty line of a generation, without numbering, labels or wrapping quotes."""
    for line in text.strip().splitlines():
        line = _NUMBERING.sub("", line).strip().strip('"“”\'').strip()
        if line:
            return line
    return ""


def accept_paraphrases(candidates: Iterable[str], question: str, aliases: list[str], existing: list[str],
                       k: int, subject: str = "") -> list[str]:
    """Up to ``k`` new paraphrases from ``candidates``: distinct after normalisation from the question and from
    ``existing``, questions of at least three words that do not quote the question, naming ``subject`` (when given),
    not containing the answer."""
    asked = normalize(question)
    seen = {asked, *(normalize(p) for p in existing)}
    kept: list[str] = []
    for candidate in candidates:
        text = clean_generation(candidate)
        folded = normalize(text)
        if len(kept) >= k:
            break
        words = folded.split()
        if len(words) < 3 or not (text.endswith("?") or words[0] in REQUESTS) or folded in seen:
            continue
        if f" {asked} " in f" {folded} ":  # the question itself behind a preamble ("Rewrite the question: …")
            continue
        if (subject.strip() and not match_lenient(text, [subject])) or (aliases and match_lenient(text, aliases)):
            continue
        seen.add(folded)
        kept.append(text)
    return kept


def load_questions(path: str | Path) -> pa.Table:
    """Any question source as a table with QUESTIONS_SCHEMA's columns: a question set (folder or
    questions.parquet), or a file of facts or bare questions (``kg.facts_file``: .jsonl, .csv, .parquet, .txt)."""
    source = Path(path)
    if source.is_dir() or (source.suffix == ".parquet" and source.is_file()
                           and set(QUESTIONS_SCHEMA.names) <= set(pq.read_schema(source).names)):
        return read_questions(source, required=tuple(QUESTIONS_SCHEMA.names))
    return read_facts(source, need_answer=False).table


def _prompt_ids(loaded, config: ParaphraseConfig, question: str):
    text = config.prompt.format(question=question)
    if loaded.chat:
        return loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return loaded.tokenizer(text + "\n", return_tensors="pt")


def run(config: ParaphraseConfig) -> ParaphrasedSet:
    """Load the model (unless the folder is already complete) and run :func:`run_loaded`."""
    from knowpack.models import load_model, resolve_model

    load_questions(config.questions)  # a bad file fails before a model loads
    _, fingerprint, _ = resolve_model(config.model, trust_remote_code=config.trust_remote_code)
    if _open(config, fingerprint).complete:
        return ParaphrasedSet(config.out)
    loaded = load_model(config.model, device=config.device, trust_remote_code=config.trust_remote_code,
                        progress=config.progress)
    return run_loaded(loaded, config)


def _open(config: ParaphraseConfig, fingerprint: str):
    return open_run(config.out, "paraphrase", config, {"questions": questions_file(config.questions)},
                    extra_key={"model": fingerprint}, overwrite=config.overwrite)


def run_loaded(loaded, config: ParaphraseConfig) -> ParaphrasedSet:
    """Write ``questions.parquet`` with ``paraphrases`` extended by ``loaded``'s paraphrases into ``config.out``."""
    import torch
    from tqdm.auto import tqdm

    table = load_questions(config.questions)
    run = _open(config, loaded.fingerprint)
    if run.complete:
        return ParaphrasedSet(run.path)
    tokenizer = loaded.tokenizer
    rows = table.to_pylist()
    produced = 0
    for index, row in enumerate(tqdm(rows, desc="paraphrasing", unit="q", disable=not config.progress)):
        existing = row["paraphrases"] if config.keep_existing else []
        new: list[str] = []
        inputs = _prompt_ids(loaded, config, row["question"]).to(loaded.device)
        prompt_length = inputs["input_ids"].shape[1]
        for round_index in range(config.rounds):
            torch.manual_seed(config.seed * 1_000_003 + index * 101 + round_index)
            with torch.no_grad():
                output = loaded.model.generate(
                    **inputs, do_sample=True, temperature=config.temperature, top_p=config.top_p,
                    max_new_tokens=config.max_new_tokens, num_return_sequences=config.samples_per_round,
                    pad_token_id=tokenizer.pad_token_id,
                )
            texts = tokenizer.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
            new += accept_paraphrases(texts, row["question"], row["aliases"], existing + new, config.k - len(new),
                                      row["subject"])
            if len(new) >= config.k:
                break
        row["paraphrases"] = existing + new
        produced += len(new)
    write_parquet(run.file(QUESTIONS_FILE), pa.Table.from_pylist(rows, schema=QUESTIONS_SCHEMA))
    run.finish([QUESTIONS_FILE], paraphrases_added=produced, questions=len(rows))
    return ParaphrasedSet(run.path)


def main(config: ParaphraseConfig) -> None:
    folder = run(config)
    print(f"wrote {folder.file(QUESTIONS_FILE)}")


COMMANDS = [Command("paraphrase", ParaphraseConfig, main, help="add k model-written paraphrases to each question",
                    description="Sample paraphrases with a model; keep new, answer-free ones.")]

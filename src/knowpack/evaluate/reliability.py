"""Reliability: does the adapter answer the packed facts, and does the fact survive a new wording?

Reliability of a set of facts = correct greedy answers / greedy answers, over every (fact, prompt) pair, with
the labels' own matching (lenient: an alias occurs in the answer; strict: the answer is an alias). On *held-out
paraphrases* the same is measured on rephrasings of the packed questions that were not in the train set: a fact
that is only reproduced under its trained wording has been memorised as a string, not learned.
"""

from __future__ import annotations

import pandas as pd

from knowpack.errors import InputError
from knowpack.text import normalize

PARAPHRASE_MARK = "@paraphrase"


def reliability(responses: pd.DataFrame, question_ids: set[str]) -> dict[str, float | int]:
    """Share of correct greedy answers over ``question_ids`` × prompts. Every id must have answers."""
    greedy = responses[(responses["sample_id"] == 0) & responses["question_id"].isin(question_ids)]
    missing = question_ids - set(greedy["question_id"])
    if missing:
        raise InputError(f"{len(missing)} evaluated question(s) have no greedy answers, e.g. {sorted(missing)[0]}")
    return {
        "n_questions": len(question_ids),
        "n_answers": len(greedy),
        "reliability_lenient": float(greedy["correct_lenient"].mean()) if len(greedy) else 0.0,
        "reliability_strict": float(greedy["correct_strict"].mean()) if len(greedy) else 0.0,
    }


def heldout_paraphrase_questions(
    questions: pd.DataFrame, train_set: pd.DataFrame, fact_ids: list[str], per_fact: int
) -> pd.DataFrame:
    """Questions (questions.parquet schema) asking the packed facts in wordings the train set never used.

    A paraphrase counts as used when its normalised text occurs, on word boundaries, in the normalised prompt of
    any train row of the same fact (train prompts are full chat-formatted texts). The first ``per_fact`` unused
    paraphrases of each fact are kept, in the questions file's order; each becomes a question with id ``"{fact_id}@paraphrase{k}"`` (k = its index in ``paraphrases``)
    and the fact's answer and aliases.
    """
    prompts = train_set.groupby("question_id")["prompt"].agg(lambda p: [normalize(x) for x in p]).to_dict()
    facts = questions[questions["id"].isin(fact_ids)]
    rows = []
    for fact in facts.itertuples(index=False):
        trained = prompts.get(fact.id, [])
        kept = 0
        for index, paraphrase in enumerate(fact.paraphrases if fact.paraphrases is not None else []):
            if kept == per_fact:
                break
            norm = normalize(paraphrase)
            if not norm or norm == normalize(fact.question) or any(f" {norm} " in f" {p} " for p in trained):
                continue
            row = fact._asdict()
            row.update(id=f"{fact.id}{PARAPHRASE_MARK}{index}", question=paraphrase, paraphrases=[])
            rows.append(row)
            kept += 1
    return pd.DataFrame(rows, columns=questions.columns)


def fact_of(paraphrase_id: str) -> str:
    """The packed fact a held-out paraphrase question asks about."""
    return paraphrase_id.rsplit(PARAPHRASE_MARK, 1)[0]


def best_epoch(table: pd.DataFrame, scope: str = "trained") -> int | None:
    """The earliest trained epoch (≥ 1) with the highest lenient reliability in ``scope``; None without epochs."""
    rows = table[(table["scope"] == scope) & (table["epoch"] >= 1)]
    if rows.empty:
        return None
    top = rows["reliability_lenient"].max()
    return int(rows.loc[rows["reliability_lenient"] == top, "epoch"].min())

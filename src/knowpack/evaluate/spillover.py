"""Spill-over reasons: why did a question the adapter was not trained on change category? (the study's Table 5)

For every shifted question (lenient category before ≠ after) four candidate reasons are checked, each on the
greedy answers of *every* prompt (the study looked at the first prompt only):

* ``lost_refusal``: the base model refused it under at least one prompt and the adapter refuses under none;
* ``exploded_answer``: one of its answers after training is an exploded answer (see ``collapse``);
* ``target_leakage``: one of its answers after training contains a trained target (normalised, whole words);
* ``same_domain``: its relation's domain is the domain of a trained fact's relation (``undefined`` never counts).

``explained`` = at least one reason holds. Shares are over the shifted questions of a row's transition.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from knowpack.evaluate.collapse import greedy_answers
from knowpack.evaluate.refusal import RefusalDetector, refused_questions
from knowpack.evaluate.shift import SHORT, direction
from knowpack.text import normalize

REASONS = ("lost_refusal", "exploded_answer", "target_leakage", "same_domain")
UNDEFINED_DOMAIN = "undefined"


class TargetFinder:
    """Finds trained targets inside answers by looking up the answer's word n-grams in a set of targets."""

    def __init__(self, targets: Iterable[str]):
        self.targets = {t for t in (normalize(x) for x in targets) if t}
        self.longest = max((len(t.split()) for t in self.targets), default=0)

    def find(self, answer_key: str) -> str:
        """The longest trained target that occurs in the normalised answer on word boundaries, else ''."""
        words = answer_key.split()
        for size in range(min(self.longest, len(words)), 0, -1):
            for start in range(len(words) - size + 1):
                gram = " ".join(words[start : start + size])
                if gram in self.targets:
                    return gram
        return ""


def spillover_questions(
    pairs: pd.DataFrame,
    questions: pd.DataFrame,
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    trained_ids: set[str],
    train_targets: Iterable[str],
    exploded_keys: set[str],
    detector: RefusalDetector,
) -> pd.DataFrame:
    """One row per shifted question: question_id, before, after, transition, direction, trained, bucket, relation,
    relation_domain, the four reasons, explained, answer (prompt 0's greedy answer after), leaked_target."""
    shifted = pairs[pairs["before"] != pairs["after"]].copy()
    shifted["direction"] = direction(shifted["before"], shifted["after"])
    shifted["transition"] = shifted["before"].map(SHORT) + "→" + shifted["after"].map(SHORT)
    domains = questions.set_index("id")["relation_domain"]
    shifted["relation_domain"] = shifted["question_id"].map(domains).fillna(UNDEFINED_DOMAIN)
    trained_domains = set(domains.reindex(sorted(trained_ids)).dropna()) - {UNDEFINED_DOMAIN}

    ids = set(shifted["question_id"])
    refused_before = refused_questions(before[before["question_id"].isin(ids)], detector)
    refused_after = refused_questions(after[after["question_id"].isin(ids)], detector)
    answers = greedy_answers(after[after["question_id"].isin(ids)])
    finder = TargetFinder(train_targets)
    answers["leaked"] = answers["key"].map(finder.find)
    answers["exploded"] = answers["key"].isin(exploded_keys)
    answers = answers.sort_values(["question_id", "prompt_id"])
    per_question = answers.groupby("question_id").agg(
        exploded_answer=("exploded", "any"),
        leaked_target=("leaked", lambda s: next((t for t in s if t), "")),
        answer=("answer", "first"),
    )

    qid = shifted["question_id"]
    shifted["lost_refusal"] = (qid.map(refused_before).fillna(0) > 0) & (qid.map(refused_after).fillna(0) == 0)
    shifted["exploded_answer"] = qid.map(per_question["exploded_answer"]).fillna(False).astype(bool)
    shifted["leaked_target"] = qid.map(per_question["leaked_target"]).fillna("").astype(str)
    shifted["target_leakage"] = shifted["leaked_target"] != ""
    shifted["same_domain"] = shifted["relation_domain"].isin(trained_domains)
    shifted["explained"] = shifted[list(REASONS)].any(axis=1)
    shifted["answer"] = qid.map(per_question["answer"]).fillna("").astype(str)
    columns = ["question_id", "before", "after", "transition", "direction", "trained", "bucket", "relation",
               "relation_domain", *REASONS, "explained", "answer", "leaked_target"]
    return shifted[columns].sort_values(["direction", "transition", "question_id"], ignore_index=True)


def spillover_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Table 5: per scope (``all``, ``not_trained``) and transition group (each transition seen, ``positive``,
    ``negative``, ``shifted``): n_shifted and the share of each reason and of ``explained``."""
    rows = []
    for scope, scoped in (("all", table), ("not_trained", table[~table["trained"]])):
        groups = [(t, scoped[scoped["transition"] == t]) for t in sorted(scoped["transition"].unique())]
        groups += [("positive", scoped[scoped["direction"] > 0]), ("negative", scoped[scoped["direction"] < 0])]
        groups.append(("shifted", scoped))
        for name, part in groups:
            n = len(part)
            shares = {reason: float(part[reason].mean()) if n else 0.0 for reason in (*REASONS, "explained")}
            rows.append({"scope": scope, "transition": name, "n_shifted": n, **shares})
    return pd.DataFrame(rows, columns=["scope", "transition", "n_shifted", *REASONS, "explained"]).astype(
        {"n_shifted": "int64"}
    )

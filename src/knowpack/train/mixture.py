"""Which facts a packing run trains on: n Unknown facts sampled with a seed, plus k extra items per fact.

The study's code takes the *first* n rows, so its seeds never change the facts; here the seed picks them. Every
pool is sorted by question id and drawn as a prefix of one seeded permutation, so the same seed always gives the
same facts and a smaller run's facts are a subset of a larger run's (n = 10 ⊂ n = 50 for one seed).

Extra kinds (``kind:k`` = k items per packed fact): ``highly-known``, ``maybe-known``, ``weakly-known`` (other
questions of that SliCK category) and ``paraphrase`` (other phrasings of each packed fact's own question).
A pool that is too small is an error unless repeats are allowed or, for the category kinds, a second label
folder supplies the shortfall: a run never silently trains on less than it was asked to.

``--pool`` restricts every draw to the questions of one file (``knowpack inject`` packs the user's facts out of a
label folder that also holds the guard questions it measures damage on), and ``--pack-known`` packs facts of every
category, not only Unknown ones; a packed fact is never drawn again as a known extra.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from knowpack.errors import InputError
from knowpack.kg.folder import questions_file, read_questions
from knowpack.probe.folder import LabelFolder
from knowpack.train.stage import CATEGORY_OF_KIND, PARAPHRASE, TrainConfig, parse_extra

UNKNOWN = "Unknown"
QUESTION_COLUMNS = ["id", "question", "answer", "paraphrases"]


@dataclass(frozen=True)
class Fact:
    """One training item before it is formatted: ``kind`` is ``unknown`` or an extra kind."""

    kind: str
    question_id: str
    question: str
    answer: str


def questions_of(labels_dir: Path, questions: Path | None = None) -> Path:
    """The questions file of a label folder: ``questions`` when given, else the one the labels were made from."""
    return questions_file(questions) if questions is not None else LabelFolder(labels_dir).questions_path


def load_pool(labels_dir: Path, questions: Path | None = None) -> pd.DataFrame:
    """Labels joined with their questions: question_id, category, question, answer, paraphrases (sorted by id)."""
    folder = LabelFolder(labels_dir)
    labels = folder.labels(["question_id", "category"])
    questions_path = questions_file(questions) if questions is not None else folder.questions_path
    table = read_questions(questions_path, required=tuple(QUESTION_COLUMNS)).select(QUESTION_COLUMNS).to_pandas()
    empty = table[table["answer"].str.strip() == ""]
    if len(empty):  # a run must never train on an empty target
        raise InputError(f"{questions_path}: question {empty['id'].iloc[0]!r} has an empty answer")
    joined = labels.merge(table.rename(columns={"id": "question_id"}), on="question_id", how="inner")
    if len(joined) < len(labels):
        raise InputError(
            f"{labels_dir}: {len(labels) - len(joined)} labelled question(s) are missing from the questions file; "
            "pass the --questions the labels were made from"
        )
    return joined.sort_values("question_id", kind="stable").reset_index(drop=True)


def restrict_pool(pool: pd.DataFrame, questions: Path) -> pd.DataFrame:
    """The part of ``pool`` whose questions are in ``questions`` (``--pool``); each of them must be labelled."""
    wanted = read_questions(questions, required=("id",)).column("id").to_pylist()
    unlabelled = sorted(set(wanted) - set(pool["question_id"]))
    if unlabelled:
        raise InputError(f"--pool {questions}: {len(unlabelled)} of its questions are not in the label folder, "
                         f"e.g. {unlabelled[0]!r}")
    return pool[pool["question_id"].isin(wanted)].reset_index(drop=True)


def sample_facts(
    pool: pd.DataFrame,
    unknown: int,
    extras: list[tuple[str, int]],
    seed: int,
    *,
    allow_repeat: bool = False,
    extra_pool: pd.DataFrame | None = None,
    packable: set[str] | None = None,
    pack_known: bool = False,
) -> list[Fact]:
    """The facts of one run: ``unknown`` Unknown facts (of any category with ``pack_known``; of ``packable`` ids
    only, when given), then each extra kind's ``k × unknown`` items, never a packed fact again."""
    if unknown < 1:
        raise InputError(f"--unknown {unknown}: need at least one fact to pack")
    kinds = [kind for kind, _ in extras]
    if len(set(kinds)) != len(kinds):
        raise InputError(f"--extra: each kind at most once (got {', '.join(kinds)})")
    candidates = pool if pack_known else pool[pool["category"] == UNKNOWN]
    if packable is not None:
        candidates = candidates[candidates["question_id"].isin(packable)]
    if unknown > len(candidates):
        where = "--pack-from's question set" if packable is not None else "the label folder"
        what = "questions" if pack_known else "Unknown questions"
        raise InputError(f"--unknown {unknown}: {where} has only {len(candidates)} {what}")
    chosen = candidates.iloc[_rng(seed, "unknown").permutation(len(candidates))[:unknown]]
    facts = [Fact("unknown", r.question_id, r.question, r.answer) for r in chosen.itertuples()]
    unpacked = pool[~pool["question_id"].isin(chosen["question_id"])]
    for kind, per_fact in extras:
        if per_fact == 0:
            continue
        if kind == PARAPHRASE:
            facts += _paraphrases(chosen, per_fact, seed, allow_repeat)
        else:
            facts += _known(kind, unpacked, pool, extra_pool, per_fact * unknown, seed, allow_repeat)
    return facts


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """One independent stream per purpose, so adding an extra kind never changes which Unknown facts are drawn."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def _known(
    kind: str, unpacked: pd.DataFrame, pool: pd.DataFrame, extra_pool: pd.DataFrame | None, needed: int, seed: int,
    allow_repeat: bool
) -> list[Fact]:
    """``needed`` questions of the kind's category: the primary pool's unpacked ones first, the second pool (less
    the primary pool's questions) for the shortfall."""
    category = CATEGORY_OF_KIND[kind]
    rng = _rng(seed, kind)
    primary = unpacked[unpacked["category"] == category]
    picked = primary.iloc[rng.permutation(len(primary))[:needed]]
    available = len(primary)
    if len(picked) < needed and extra_pool is not None:
        second = extra_pool[(extra_pool["category"] == category) & ~extra_pool["question_id"].isin(pool["question_id"])]
        available += len(second)
        picked = pd.concat([picked, second.iloc[rng.permutation(len(second))[: needed - len(picked)]]])
    if len(picked) < needed:
        if not allow_repeat or len(picked) == 0:
            source = "the label folders have" if extra_pool is not None else "the label folder has"
            hint = "" if len(picked) == 0 else "; pass --allow-repeat to reuse them or --extra-pool LABELS to add a pool"
            raise InputError(f"--extra {kind}: needs {needed} {category} questions but {source} {available}{hint}")
        picked = picked.iloc[np.resize(np.arange(len(picked)), needed)]
    return [Fact(kind, r.question_id, r.question, r.answer) for r in picked.itertuples()]


def _paraphrases(chosen: pd.DataFrame, per_fact: int, seed: int, allow_repeat: bool) -> list[Fact]:
    """``per_fact`` distinct paraphrases of each packed fact's question (cycled only with ``allow_repeat``)."""
    rng = _rng(seed, PARAPHRASE)
    facts = []
    for row in chosen.itertuples():
        options = sorted({p.strip() for p in (row.paraphrases if row.paraphrases is not None else [])} - {"", row.question})
        if len(options) < per_fact and (not allow_repeat or not options):
            hint = "" if not options else "; pass --allow-repeat to reuse them"
            raise InputError(
                f"--extra paraphrase:{per_fact}: question {row.question_id} has {len(options)} paraphrase(s){hint} "
                "(or add more with `knowpack paraphrase`)"
            )
        order = np.resize(rng.permutation(len(options)), per_fact)
        facts += [Fact(PARAPHRASE, row.question_id, options[i], row.answer) for i in order]
    return facts


def packable_ids(questions: Path | None) -> set[str] | None:
    """The ids of ``--pack-from``'s question set (None: every Unknown fact may be packed)."""
    return None if questions is None else set(read_questions(questions, required=("id",)).column("id").to_pylist())


def draw_facts(config: TrainConfig) -> list[Fact]:
    """The run's facts: seeded Unknown facts of the label folder (of ``--pool``) plus the requested extras."""
    pool = load_pool(config.labels, questions_of(config.labels, config.questions))
    return sample_facts(
        restrict_pool(pool, config.pool) if config.pool is not None else pool,
        config.unknown,
        [parse_extra(spec) for spec in config.extra],
        config.seed,
        allow_repeat=config.allow_repeat,
        extra_pool=load_pool(config.extra_pool) if config.extra_pool is not None else None,
        packable=packable_ids(config.pack_from),
        pack_known=config.pack_known,
    )

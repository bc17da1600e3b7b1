"""The reference line: how many facts the trainable parameters could hold at a known ceiling of knowledge per
parameter.

Allen-Zhu & Li, "Physics of Language Models: Part 3.3, Knowledge Capacity Scaling Laws" (2024, arXiv:2404.05405)
measure that language models store about 2 bits of knowledge per parameter — after about 1,000 exposures of each
fact; with 100 exposures they found about 1 bit per parameter. A fact whose answer is one of the K distinct
answers its relation has in the question set carries at most log2 K bits. So P trainable parameters hold at most
about ``2 · P / mean bits per fact`` facts, and a measured capacity of n facts is ``n · bits per fact / P`` bits
per trainable parameter. Each packed fact here is seen ``epochs × copies`` times (copies: its own row plus its
paraphrases per epoch), usually far fewer than 1,000.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

BITS_PER_PARAMETER = 2.0
CITATION = "Allen-Zhu & Li 2024"
SOURCE = f"{CITATION}, Physics of Language Models 3.3: ~2 bits/parameter"


def bits_per_fact(questions: pd.DataFrame, fact_ids) -> pd.Series:
    """log2 of the number of distinct answers (normalised) of each fact's relation in ``questions`` (columns id,
    relation, answer), by fact id."""
    from knowpack.text import normalize

    answers = questions.assign(key=questions["answer"].map(normalize))
    distinct = answers.groupby("relation")["key"].nunique()
    relation = answers.set_index("id")["relation"]
    return relation.loc[list(fact_ids)].map(lambda r: math.log2(distinct[r]))


def reference_facts(trainable_parameters: float, bits: float) -> float:
    """Facts that ``trainable_parameters`` hold at the ceiling (infinite when a fact carries no information)."""
    return BITS_PER_PARAMETER * trainable_parameters / bits if bits > 0 else math.inf


def bits_per_parameter(facts: float, bits: float, trainable_parameters: float) -> float:
    return facts * bits / trainable_parameters if trainable_parameters else np.nan

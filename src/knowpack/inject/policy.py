"""Which extra data to train the facts with: the mixture policy, stated so the report can say why.

What the study found (Llama-3.1-8B-Instruct, /work/shared/study.md §5): paraphrases of the facts' own questions are
the extra data that never hurt reliability (0.97–0.99 at 3,000 facts, against 0.98 with nothing and 0.48 with ten
HighlyKnown facts per fact) and one paraphrase per fact lowered the negative shift at 10 facts from 0.245 to 0.154;
ten paraphrases per fact learn fastest but cost the most MMLU at 3,000 facts (0.441 against a 0.677 baseline).
HighlyKnown facts lowered the negative shift at 3,000 facts (−0.149 with ten per fact against −0.235 with nothing)
but cut reliability there (0.92 with one per fact, 0.48 with ten), and the authors propose training examples of
the same domain as the packed facts.

The default therefore is one paraphrase per fact always, plus one known fact of the same relations per fact up to
500 facts, where the study saw every mixture reach a reliability of 1.0; beyond 500 facts, paraphrases only. Known
facts are the HighlyKnown answers of the model among the candidates (``--known FILE``, or the embedded graph's
questions of the facts' relations); when fewer exist than facts to pack, none are used rather than a few repeated.
``--extra`` replaces the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PARAPHRASES_PER_FACT = 1
KNOWN_PER_FACT = 1
KNOWN_UP_TO = 500  # facts; beyond, every HighlyKnown mixture lost reliability in the study


@dataclass
class Mixture:
    extra: list[str]  # train's --extra items
    reasons: list[str] = field(default_factory=list)  # why, one sentence each
    given: bool = False  # --extra replaced the policy

    def per_fact(self, kind: str) -> int:
        return sum(int(item.split(":")[1]) for item in self.extra if item.split(":")[0] == kind)

    def without(self, kind: str, reason: str) -> Mixture:
        return Mixture([item for item in self.extra if item.split(":")[0] != kind], [*self.reasons, reason],
                       self.given)


def choose_mixture(facts: int, known_available: int, given: tuple[str, ...] = (),
                   candidates: str = "the embedded graph's questions of your facts' relations") -> Mixture:
    """The mixture for ``facts`` packed facts when ``known_available`` of the known-fact ``candidates`` are
    HighlyKnown."""
    if given:
        return Mixture(list(given), ["the mixture was given with --extra"], given=True)
    extra = [f"paraphrase:{PARAPHRASES_PER_FACT}"]
    reasons = [f"{PARAPHRASES_PER_FACT} paraphrase per fact: in the study paraphrases never cost reliability and one "
               "per fact lowered the negative shift (0.245 → 0.154 at 10 facts)"]
    needed = KNOWN_PER_FACT * facts
    if facts > KNOWN_UP_TO:
        reasons.append(f"no known facts: beyond {KNOWN_UP_TO} facts every HighlyKnown mixture of the study lost "
                       "reliability (0.92 with one per fact at 3,000)")
    elif known_available < needed:
        reasons.append(f"no known facts: the model knows {known_available} of {candidates} (HighlyKnown), "
                       f"{needed} would be needed for {KNOWN_PER_FACT} per fact (--known FILE adds candidates)")
    else:
        extra.append(f"highly-known:{KNOWN_PER_FACT}")
        reasons.append(f"{KNOWN_PER_FACT} HighlyKnown fact of the same relations per fact: same-domain known data, as "
                       f"the study's authors propose; up to {KNOWN_UP_TO} facts the study's HighlyKnown mixtures kept "
                       "reliability at 1.0")
    return Mixture(extra, reasons)


def fit_paraphrases(mixture: Mixture, available: dict[str, int]) -> Mixture:
    """The policy's mixture without paraphrases when a packed fact has none at all (``available``: fact id →
    paraphrases it has); a mixture given with --extra is left as asked."""
    lacking = sorted(qid for qid, count in available.items() if count == 0)
    if mixture.given or not lacking or not mixture.per_fact("paraphrase"):
        return mixture
    return mixture.without("paraphrase", f"no paraphrases: {len(lacking)} of the facts got no usable one (a question "
                           f"naming the subject, without the answer), e.g. {lacking[0]}")

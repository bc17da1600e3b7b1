"""Regression gates: ``--fail-if "negative_shift>0.02,mmlu<-0.01"`` makes ``knowpack diff`` exit 1 when a
condition holds.

A gate names a figure key (the keys ``knowpack compare`` shows, e.g. ``negative_shift``, ``mmlu``,
``refusal_rate``, ``distinct_answers``, ``reliability``) and reads:

* ``positive_shift`` / ``negative_shift`` (and their ``_all_strict``, ``_not_trained_lenient``,
  ``_not_trained_strict`` forms): the share of the paired questions whose category rose / fell from BEFORE to
  AFTER, measured by diff itself — an absolute fraction, not a difference of two runs' shifts;
* ``accuracy``: AFTER's mean per-question accuracy minus BEFORE's;
* every other key: the change AFTER − BEFORE (``mmlu<-0.01``: MMLU fell by more than 0.01);
* ``after.KEY``: AFTER's own value (``after.reliability<0.9``: the adapter answers less than 90 % of its facts).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from knowpack.config import ConfigError

OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_GATE = re.compile(r"^(after\.)?([a-z][a-z0-9_]*)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$")
ABSOLUTE = "after."


@dataclass(frozen=True)
class Gate:
    text: str
    key: str  # the figure key, with the "after." prefix when the gate reads AFTER's own value
    op: str
    threshold: float

    def breached(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)


def parse_gates(text: str, name: str = "fail_if") -> list[Gate]:
    """Comma-separated ``KEY OP NUMBER`` conditions (OP: < <= > >=); one-line error naming the bad one."""
    gates = []
    for part in (p.strip() for p in text.split(",")):
        match = _GATE.match(part.lower())
        if not part or match is None:
            raise ConfigError(name, f"{part!r} is not a gate; write KEY>NUMBER or KEY<NUMBER, comma-separated, "
                              "e.g. negative_shift>0.02,mmlu<-0.01")
        prefix, key, op, number = match.groups()
        gates.append(Gate(part, (prefix or "") + key, op, float(number)))
    return gates

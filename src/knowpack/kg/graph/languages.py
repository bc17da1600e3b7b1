"""Languages: family, main script, the country with most speakers and the name in the language itself (two-letter
ISO codes are left out: an alias like "no" would match almost any answer).

Source: language-data (MIT package) ships CLDR data (Unicode licence: language names in every CLDR locale,
speaking populations by territory), the IANA language subtag registry (script names) and Wiktionary's language
list (CC BY-SA 4.0: family and scripts). Its ``.py`` data modules are parsed as literals, never imported.
Popularity: the number of CLDR locales that name the language.
"""

from __future__ import annotations

import ast
import csv
import io
import re
from collections.abc import Iterator

from knowpack.assets import LANGUAGE_DATA_WHEEL
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.names import latin_names
from knowpack.kg.graph.sources import Sources

KIND, DOMAIN = "language", "Language"
ROOT = "language_data/"
ENTRY = re.compile(r"^    '([A-Za-z-]+)': (\{.*\}),$")


def _names_by_code(text: str) -> dict[str, dict[str, str]]:
    """CODE_TO_NAMES of name_data.py: code -> {locale: name}, one dict literal per line."""
    body = text.split("CODE_TO_NAMES = {", 1)[1]
    names = {}
    for line in body.splitlines():
        match = ENTRY.match(line)
        if match and "-" not in match.group(1):
            names[match.group(1)] = ast.literal_eval(match.group(2))
    return names


def _literal(text: str, variable: str) -> dict:
    start = text.index(f"{variable} = ") + len(variable) + 3
    return ast.literal_eval(text[start: text.index("\n}", start) + 2])


def _script_names(registry: str) -> dict[str, str]:
    scripts = {}
    for record in registry.split("%%"):
        fields = dict(re.findall(r"^(Type|Subtag|Description): (.*)$", record, re.MULTILINE))
        if fields.get("Type") == "script" and "Subtag" in fields:
            scripts[fields["Subtag"]] = fields.get("Description", "")
    return scripts


def language_facts(sources: Sources) -> Iterator[Fact]:
    files = sources.files
    names = _names_by_code(files.text(LANGUAGE_DATA_WHEEL, ROOT + "name_data.py"))
    speakers = _literal(files.text(LANGUAGE_DATA_WHEEL, ROOT + "population_data.py"), "LANGUAGE_SPEAKING_POPULATION")
    scripts = _script_names(files.text(LANGUAGE_DATA_WHEEL, ROOT + "data/language-subtag-registry.txt"))
    wiktionary = {row[0]: row for row in csv.reader(
        io.StringIO(files.text(LANGUAGE_DATA_WHEEL, ROOT + "data/wiktionary/codes-en.csv")), delimiter="\t")}
    top_territory: dict[str, tuple[int, str]] = {}
    for tag, population in speakers.items():
        language, _, territory = tag.partition("-")
        if len(territory) == 2 and population > top_territory.get(language, (0, ""))[0]:
            top_territory[language] = (population, territory)
    rows: dict[str, list] = {}
    for code, in_locales in names.items():
        name = in_locales.get("en", "")
        if not name or not latin_names([name]) or code not in speakers:
            continue
        popularity = len(in_locales)

        def add(relation: str, answer: str, aliases: list[str] | None = None) -> None:
            if answer:
                rows.setdefault(relation, []).append((code, name, answer, answer, aliases or [], popularity))

        entry = wiktionary.get(code)
        if entry and len(entry) > 3:
            add("languageFamily", entry[2] if latin_names([entry[2]]) else "")
            add("languageScript", scripts.get(entry[3].split(",")[0].strip(), ""))
        territory = top_territory.get(code, (0, ""))[1]
        if territory in sources.countries:
            add("languageCountry", sources.countries[territory]["name"], sources.country_names[territory])
        autonym = in_locales.get(code, "")
        if autonym and autonym.lower() != name.lower() and latin_names([autonym[:1].upper() + autonym[1:]]):
            add("nativeName", autonym)
    for relation, relation_rows in rows.items():
        yield from facts(KIND, DOMAIN, relation, relation_rows)

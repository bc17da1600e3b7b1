"""Registries: the places where knowpack grows (fact sources, metrics, generation backends, executors, methods).

A registry maps names to members. Members register themselves when their module is imported; a registry that
names a ``package`` imports every module of it on first use, so adding a member means adding one module (and its
test) and nothing else. Looking up an unknown name is a one-line error listing the known ones.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

from knowpack.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package
        self._members: dict[str, T] = {}
        self._loaded = package is None

    def register(self, name: str, member: T) -> T:
        if name in self._members:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._members[name] = member
        return member

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{module.name}")

    def __getitem__(self, name: str) -> T:
        self._load()
        if name not in self._members:
            raise InputError(f"{name!r}: not a known {self.kind} (known: {', '.join(self._members)})")
        return self._members[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._members

    def names(self) -> list[str]:
        self._load()
        return list(self._members)

    def values(self) -> list[T]:
        self._load()
        return list(self._members.values())

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        return iter(list(self._members.items()))

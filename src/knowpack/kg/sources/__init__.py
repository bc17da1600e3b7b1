"""Fact sources for ``knowpack questions``: each member turns facts into a questions table the head-to-tail way.

A source is one module in this package that registers a :class:`Source`: its name, its own options (a
``Config``, offered by the CLI and accepted in sweep files through the registry), the files it reads (hashed into
the run key), what else its output depends on, its default cap per relation and bucket, and the build function.
Builders share ``knowpack.kg.select`` (buckets, cleaning, caps, balance) so every source follows the study's rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.config import Config
from knowpack.registry import Registry

SOURCES: Registry[Source] = Registry("fact source", package=__name__)


@dataclass(frozen=True)
class BuildRequest:
    """What a build gets: the questions config, the source's own options, the templates and a progress hook."""

    config: Any
    options: Any
    templates: dict[str, tuple[str, ...]]
    progress: Callable[[int], None]


@dataclass(frozen=True)
class Source:
    name: str
    help: str
    build: Callable[[BuildRequest], tuple[Any, dict]]  # -> (questions table, build summary)
    default_per_bucket: int
    Options: type[Config] | None = None
    inputs: Callable[[Any], dict[str, Path]] = lambda options: {}
    fingerprint: Callable[[], dict] = lambda: {}
    templates: str | None = None  # packaged template set (default: the source's name)
    cached: bool = False  # a build that depends only on pinned data is cached across run folders


def register(source: Source) -> Source:
    return SOURCES.register(source.name, source)

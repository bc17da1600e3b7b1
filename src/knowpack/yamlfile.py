"""Reading YAML a user wrote (sweep files, templates) so that it can only mean one thing and stays small.

``yaml.safe_load`` builds no Python objects from tags, but it silently keeps the last of two equal keys
(``rank: 1`` then ``rank: 8``), and anchors and aliases let a few lines stand for billions of values (the
"billion laughs"), which knowpack would then expand, hash or iterate. Here a duplicate key is an error naming its
line, and a document whose values, with every alias followed, exceed a bound is refused before it is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from knowpack.errors import InputError

MAX_NODES = 100_000  # values in a document with every alias followed: far above any real sweep file


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise InputError(f"{key}: listed twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, limit: int) -> int:
    """How many values the node stands for with every alias followed (counting stops past ``limit``)."""
    total, stack = 0, [node]
    while stack:
        current = stack.pop()
        total += 1
        if total > limit:
            return total
        if isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.extend((key, value))
    return total


def load_yaml(path: Path) -> Any:
    """The document in ``path``; one-line InputError (naming the file) for anything that is not plain, unique,
    bounded YAML."""
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a text file") from err
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror})") from err
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        if node is not None and _expanded_size(node, MAX_NODES) > MAX_NODES:
            raise InputError(f"{path}: expands to more than {MAX_NODES:,} values (YAML anchors and aliases); "
                             "write the values out")
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except InputError as err:
        if str(err).startswith(f"{path}:"):
            raise
        raise InputError(f"{path}: {err}") from err
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise InputError(f"{path}: not valid YAML{line}") from err

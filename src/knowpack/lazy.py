"""Modules imported on first use, for the registry members that the CLI imports to list their options.

``knowpack --help`` and every input error must answer in well under a second, yet metric modules are pandas code
and pandas alone takes half a second to import. ``lazy("pandas")`` returns the module at once and runs its import
when an attribute is first read (the standard library's ``importlib.util.LazyLoader``).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module

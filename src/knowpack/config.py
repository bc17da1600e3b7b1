"""Stage configs: dataclasses whose fields carry their help, whether they change results, and their bounds, once.

Every stage's ``Config`` is a :class:`Config` dataclass. Its fields are declared with :func:`option`, which stores
in the field's metadata everything the rest of knowpack needs to know about it:

* ``help`` — the CLI's help text (``knowpack.cli`` makes every command's arguments from these fields);
* ``affects_results`` — whether the value enters the run key (batch sizes and progress bars do not);
* bounds (``minimum``/``above``/``maximum``/``below``) and ``choices`` — checked on construction, so the CLI, a
  sweep file and the Python API refuse the same values with the same one-line error;
* CLI spelling (``flag``, ``positional``, ``split``, ``repeat``).

Values are checked by their declared type as well: a string where a list is expected is an error (never split into
characters), numbers must be finite, a bool is not an int. :meth:`Config.from_dict` builds a config from untyped
YAML values with the same rules.

*Extension options.* Where knowpack grows through a registry (fact sources, metrics, executors, training
methods), each member may declare its own ``Options`` config. A stage config names the registry in
``extensions`` and keeps the members' settings in its ``options`` dict (flat names), so adding a member touches
only its own module: the CLI, the sweep and the validation find its options through the registry.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from knowpack.errors import InputError

MISSING = dataclasses.MISSING


class ConfigError(InputError):
    """A config value that cannot be used. ``name`` is the field, so a caller can say where the value came from
    (``--lr`` on the CLI, ``grid.lr`` in a sweep file)."""

    def __init__(self, name: str, problem: str):
        self.name, self.problem = name, problem
        super().__init__(f"{name}: {problem}")

    def renamed(self, name: str) -> ConfigError:
        return ConfigError(name, self.problem)


def option(default: Any = MISSING, *, help: str, affects_results: bool = True, default_factory: Any = MISSING,
           choices: Iterable[str] | Callable[[], Iterable[str]] | None = None, minimum: float | None = None,
           above: float | None = None, maximum: float | None = None, below: float | None = None,
           flag: str | None = None, positional: bool = False, split: str | None = None, repeat: bool = False,
           metavar: str | None = None, cli: bool = True) -> Any:
    """A config field with its help text, result relevance, bounds and CLI spelling (see the module docstring).

    ``choices`` may be a callable (a registry's names, looked up when first needed); ``split`` splits a string
    given for a tuple field at that separator; ``repeat`` makes a tuple field a repeatable flag."""
    metadata = {"help": help, "affects_results": affects_results, "choices": choices, "minimum": minimum,
                "above": above, "maximum": maximum, "below": below, "flag": flag, "positional": positional,
                "split": split, "repeat": repeat, "metavar": metavar, "cli": cli}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


# ---------------------------------------------------------------- options every command spells the same way


def out_option(help: str = "run folder to write (or resume)", default: Any = MISSING) -> Any:
    return option(default, help=help, affects_results=False, metavar="DIR")


def overwrite_option() -> Any:
    return option(False, help="replace a folder that holds a run made with another config", affects_results=False)


def device_option() -> Any:
    return option(None, help="cuda, cpu, cuda:1 … (default: cuda when available)", affects_results=False)


def dtype_option() -> Any:
    return option(None, help="bfloat16, float16 or float32 (default: bf16 on GPU, float32 on CPU)",
                  choices=("bfloat16", "float16", "float32"), affects_results=False)


def kernels_option() -> Any:
    from knowpack.kernels import AUTO, KERNEL_SETS

    return option(AUTO, help="code for norms, rotary embeddings and gated MLPs: liger (fused GPU kernels), eager "
                  "(transformers', the study's numerics) or auto (liger for Llama-family models on a GPU where "
                  "installed)",
                  choices=lambda: (AUTO, *KERNEL_SETS.names()), affects_results=False)


def trust_remote_code_option() -> Any:
    return option(False, help="run Python code shipped with a hub model (off by default: it runs with your rights)",
                  affects_results=False)


def progress_option() -> Any:
    return option(True, help="show progress bars", affects_results=False)


def model_option(default: Any = "smollm2-135m", affects_results: bool = True) -> Any:
    return option(default, help="embedded model name (smollm2-135m, gemma3-270m), model folder, .gguf file or hub id",
                  affects_results=affects_results)


# ---------------------------------------------------------------- the base class


@dataclasses.dataclass
class Config:
    """Base of every stage config: typed, bounded fields checked on construction (``__post_init__``)."""

    # (field naming the member, registry) when members of a registry bring their own ``Options``; see module doc.
    extensions: ClassVar[tuple[str, Any] | None] = None
    # the stage name under which ``knowpack.protocols`` presets this config (None: no protocol applies)
    protocol_stage: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        hints = field_types(type(self))
        for field in dataclasses.fields(self):
            if field.name == "options":
                continue
            setattr(self, field.name, check_value(field, hints[field.name], getattr(self, field.name)))
        if self.extensions is not None:
            self.options = self._checked_options(dict(getattr(self, "options", {}) or {}))
        self.check()

    def check(self) -> None:
        """Rules between fields (one field's bounds are declared on the field)."""

    # -- extension options

    def extension_options(self) -> list[type[Config]]:
        """The ``Options`` classes whose fields ``options`` may set: the chosen member's, or every member's when
        the selecting field is None (all members take part, e.g. metrics)."""
        field_name, registry = self.extensions
        members = registry.values() if field_name is None else [registry[getattr(self, field_name)]]
        return [m.Options for m in members if getattr(m, "Options", None) is not None]

    @classmethod
    def all_extension_options(cls) -> list[tuple[str, type[Config]]]:
        """(member name, Options) of every member of the extension registry: what the CLI may offer."""
        if cls.extensions is None:
            return []
        _, registry = cls.extensions
        return [(name, m.Options) for name, m in registry.items() if getattr(m, "Options", None) is not None]

    def _checked_options(self, given: dict[str, Any]) -> dict[str, Any]:
        allowed = {f.name: options for options in self.extension_options() for f in dataclasses.fields(options)}
        for name in given:
            if name not in allowed:
                owners = [member for member, options in self.all_extension_options()
                          if name in {f.name for f in dataclasses.fields(options)}]
                field_name = self.extensions[0]
                if owners and field_name:
                    raise ConfigError(name, f"applies to {field_name} {' / '.join(owners)} only")
                raise ConfigError(name, "unknown option")
        field_name = self.extensions[0]
        for options in self.extension_options():
            fields = dataclasses.fields(options)
            for f in fields:
                if f.default is MISSING and f.default_factory is MISSING and f.name not in given:
                    chosen = f" {field_name} {getattr(self, field_name)}" if field_name else ""
                    raise ConfigError(f.name, f"needed{' for' + chosen if chosen else ''}")
            own = {f.name for f in fields}
            options(**{k: v for k, v in given.items() if k in own})  # checks the values
        return given

    def options_of(self, options_class: type[Config]) -> Any:
        """A member's ``Options`` instance from the flat ``options`` dict (defaults filled in)."""
        own = {f.name for f in dataclasses.fields(options_class)}
        return options_class(**{k: v for k, v in (getattr(self, "options", None) or {}).items() if k in own})

    # -- building from untyped values (YAML)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "", protocol: str | None = None,
                  **fixed: Any) -> Config:
        """A config from YAML values: unknown keys refused, each value checked by its field's type, errors naming
        ``where.key``; ``protocol`` fills in a protocol's settings where ``values`` sets none."""
        prefix = f"{where}." if where else ""
        known = cls.value_names() - set(fixed)
        for key in values:
            if key in fixed:
                raise ConfigError(f"{prefix}{key}", "set by knowpack here; remove it")
            if key not in known:
                raise ConfigError(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(known))})")
        try:
            return cls.build({**values, **fixed}, protocol)
        except ConfigError as err:
            raise err.renamed(f"{prefix}{err.name}") from None

    @classmethod
    def value_names(cls) -> set[str]:
        """Every name a flat mapping of values may use: the fields and the extension members' options."""
        names = {f.name for f in dataclasses.fields(cls)} - {"options"}
        return names | {f.name for _, options in cls.all_extension_options() for f in dataclasses.fields(options)}

    @classmethod
    def build(cls, values: Mapping[str, Any], protocol: str | None = None) -> Config:
        """The config from a flat mapping (fields and extension options side by side), after the protocol's
        settings are filled in where ``values`` has none (``knowpack.protocols``)."""
        values = dict(values)
        if protocol is not None:
            from knowpack import protocols

            if cls.protocol_stage is None:
                raise ConfigError("protocol", f"does not apply to {cls.__name__}")
            values = protocols.apply(cls.protocol_stage, protocol, values)
        names = {f.name for f in dataclasses.fields(cls)} - {"options"}
        kwargs = {k: v for k, v in values.items() if k in names}
        options = {k: v for k, v in values.items() if k not in names}
        if options:
            kwargs["options"] = options
        return cls(**kwargs)

    @classmethod
    def outside_results(cls) -> set[str]:
        """The fields that stay out of the run key (where the output goes, how fast, what is printed)."""
        return {field.name for field in dataclasses.fields(cls) if not field.metadata.get("affects_results", True)}

    @classmethod
    def result_defaults(cls) -> dict[str, Any]:
        """The defaults of the fields that enter the run key, as :meth:`result_dict` writes them."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name == "options" or not field.metadata.get("affects_results", True):
                continue
            if field.default is not dataclasses.MISSING:
                out[field.name] = jsonable(field.default)
            elif field.default_factory is not dataclasses.MISSING:
                out[field.name] = jsonable(field.default_factory())
        return out

    def result_dict(self) -> dict[str, Any]:
        """The fields that change results (the run key), extension options included with their defaults."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            if field.name == "options" or not field.metadata.get("affects_results", True):
                continue
            out[field.name] = jsonable(getattr(self, field.name))
        if self.extensions is not None:
            for options_class in self.extension_options():
                out.update(self.options_of(options_class).result_dict())
        return out


def jsonable(value: Any) -> Any:
    if isinstance(value, Config):
        return value.result_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------- checking values by type


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parts(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return annotation, False


def check_value(field: dataclasses.Field, annotation: Any, value: Any) -> Any:
    """``value`` converted to the field's type (str → Path, list → tuple) and checked, or ConfigError."""
    kind, nullable = _parts(annotation)
    if value is None:
        if nullable:
            return None
        raise ConfigError(field.name, "needs a value")
    value = _convert(field, kind, value)
    _check_bounds(field, value)
    return value


def _convert(field: dataclasses.Field, kind: Any, value: Any) -> Any:
    name = field.name
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"{value!r} must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"{value!r} is not a whole number")
        return value
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(name, f"{value!r} is not a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"{value!r} is not a number")
        if not math.isfinite(value):
            raise ConfigError(name, f"{value!r} must be a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"{value!r} must be a string")
        return value
    if kind is Path:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(name, f"{value!r} must be a path")
        return Path(value).expanduser()
    if typing.get_origin(kind) is tuple:
        item_kind = typing.get_args(kind)[0]
        split = field.metadata.get("split")
        if isinstance(value, str):
            if not split:
                raise ConfigError(name, f"{value!r} must be a list, not a string")
            value = [part.strip() for part in value.split(split) if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"{value!r} must be a list")
        items = []
        for item in value:
            if item_kind is str and not isinstance(item, str):
                raise ConfigError(name, f"item {item!r} must be a string")
            items.append(_convert(field, item_kind, item))
            _check_bounds(field, items[-1])
        return tuple(items)
    if kind is dict or typing.get_origin(kind) is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(name, f"{value!r} must be a mapping")
        return dict(value)
    return value


def _check_bounds(field: dataclasses.Field, value: Any) -> None:
    meta = field.metadata
    choices = meta.get("choices")
    if choices is not None and not isinstance(value, tuple):
        allowed = tuple(choices() if callable(choices) else choices)
        if value not in allowed:
            raise ConfigError(field.name, f"{value!r} is not one of {', '.join(map(str, allowed))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, holds, words in (("minimum", lambda v, b: v >= b, "at least"), ("above", lambda v, b: v > b, "above"),
                                  ("maximum", lambda v, b: v <= b, "at most"), ("below", lambda v, b: v < b, "below")):
            bound = meta.get(key)
            if bound is not None and not holds(value, bound):
                raise ConfigError(field.name, f"{value!r} must be {words} {bound:g}")

"""The ``knowpack`` command. Every sub-command's arguments are made from its stage's ``Config`` fields
(``knowpack.config.option``: help, bounds, CLI spelling), so all commands share one style and one spelling of the
shared options, and a value the CLI accepts is exactly a value the config accepts.

Written here rather than taken from ``transformers.HfArgumentParser`` or ``tyro``: the first imports transformers
(seconds) and neither knows knowpack's extension options (a fact source's or a metric's own settings), while
``knowpack --help`` and every input error must answer in well under a second. Stage modules are therefore light:
torch and transformers are imported only when a model is loaded.

Errors a user can fix print one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
import typing
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from knowpack import __version__
from knowpack.config import MISSING, Config, ConfigError, _parts, field_types
from knowpack.errors import KnowpackError

DESCRIPTION = "How many new facts can a LoRA adapter absorb, and what does it break?"
# Modules that define the commands, in the order `knowpack --help` lists them.
COMMAND_MODULES = (
    "knowpack.kg.stage",
    "knowpack.paraphrase.stage",
    "knowpack.probe.stage",
    "knowpack.train.stage",
    "knowpack.evaluate.stage",
    "knowpack.evaluate.compare",
    "knowpack.diff.stage",
    "knowpack.inject.stage",
    "knowpack.sweep.stage",
    "knowpack.capacity.stage",
    "knowpack.report.stage",
    "knowpack.demo",
)


@dataclass(frozen=True)
class Command:
    """One sub-command: its config class and the function that runs it (and prints what the user needs)."""

    name: str
    config: type[Config]
    run: Callable[[Any], Any]
    help: str
    description: str = ""


def commands() -> list[Command]:
    found = []
    for module in COMMAND_MODULES:
        found += importlib.import_module(module).COMMANDS
    return found


# ---------------------------------------------------------------- arguments from config fields


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _help(field: dataclasses.Field, kind: Any) -> str:
    text = field.metadata.get("help", "")
    choices = field.metadata.get("choices")
    if choices is not None and "{" not in text:
        names = choices() if callable(choices) else choices
        text += f" ({' | '.join(names)})"
    default = field.default
    if default is not MISSING and default not in (None, (), False, "") and kind is not bool:
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text += f" [default: {shown}]"
    return text.replace("%", "%%")


def _parse_scalar(kind: Any) -> Callable[[str], Any]:
    """argparse ``type``: numbers are parsed here (strings stay strings); the config checks everything else."""
    if kind is int:
        return int
    if kind is float:
        return float
    return str


def add_config_arguments(parser: argparse.ArgumentParser, config: type[Config], title: str | None = None) -> None:
    """One argument per CLI field of ``config`` (and of its extension options), defaults left to the config.
    An extension member's fields (``title`` given) are never required here: the config says when they are."""
    hints = field_types(config)
    group = parser.add_argument_group(title) if title else parser
    for field in dataclasses.fields(config):
        if not field.metadata.get("cli", True) or field.name == "options":
            continue
        kind, nullable = _parts(hints[field.name])
        kwargs: dict[str, Any] = {"help": _help(field, kind), "dest": field.name}
        if field.metadata.get("metavar"):
            kwargs["metavar"] = field.metadata["metavar"]
        required = field.default is MISSING and field.default_factory is MISSING and title is None
        if field.metadata.get("positional"):
            kwargs.pop("dest")
            is_list = typing.get_origin(kind) is tuple
            group.add_argument(field.name, nargs="+" if is_list else None, type=str, **kwargs)
            continue
        kwargs["default"] = argparse.SUPPRESS
        if kind is bool:
            if nullable or field.default is None:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif field.default:  # on unless turned off: the help says what the flag does
                flag = "--no-" + flag_of(field).removeprefix("--")
                kwargs["help"] = "do not " + kwargs["help"]
                group.add_argument(flag, action="store_false", **kwargs)
                continue
            else:
                kwargs["action"] = "store_true"
        elif typing.get_origin(kind) is tuple:
            kwargs["type"] = str
            if field.metadata.get("repeat"):
                kwargs["action"] = "append"
        else:
            kwargs["type"] = _parse_scalar(kind)
        if required:
            kwargs["required"] = True
        group.add_argument(flag_of(field), **kwargs)
    for member, options in config.all_extension_options():
        add_config_arguments(parser, options, title=f"{member} options")
    if config.protocol_stage is not None and title is None:
        from knowpack.protocols import PROTOCOLS

        parser.add_argument("--protocol", choices=PROTOCOLS, default=argparse.SUPPRESS,
                            help="start from a named protocol's settings (study: the study's, docs/study-fidelity.md);"
                            " options given here override it")


def config_from_args(config: type[Config], args: argparse.Namespace) -> Config:
    """Build ``config`` from parsed arguments; an invalid value is a one-line error naming its flag."""
    given = vars(args)
    fields = {f.name: f for f in dataclasses.fields(config) if f.name != "options"}
    fields.update({f.name: f for _, options in config.all_extension_options() for f in dataclasses.fields(options)})
    values = {name: given[name] for name in fields if name in given}
    hints = {**field_types(config), **{f.name: t for _, options in config.all_extension_options()
                                       for f, t in zip(dataclasses.fields(options), field_types(options).values())}}
    try:
        for name, value in list(values.items()):
            split = fields[name].metadata.get("split")
            if isinstance(value, list):  # repeatable flags and nargs: each item may itself be a separated list
                value = values[name] = [p.strip() for v in value for p in (v.split(split) if split else [v])
                                        if p.strip()]
            item = typing.get_args(_parts(hints[name])[0])[:1]
            if item and item[0] in (int, float) and isinstance(value, (str, list)):  # numbers typed on the CLI
                parts = value.split(split) if isinstance(value, str) and split else value
                values[name] = [_number(name, item[0], p.strip()) for p in parts if p.strip()]
        return config.build(values, given.get("protocol"))
    except ConfigError as err:
        field = fields.get(err.name)
        raise err.renamed(flag_of(field) if field is not None and not field.metadata.get("positional") else err.name)


def _number(name: str, kind: type, text: str):
    """A list item typed on the command line as the number it stands for (argparse's ``type`` for lists)."""
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(name, f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None


# ---------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knowpack", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"knowpack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.description or command.help)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show tracebacks instead of one-line errors")
        add_config_arguments(sub, command.config)
        sub.set_defaults(command_object=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    command: Command = args.command_object
    try:
        command.run(config_from_args(command.config, args))
    except KnowpackError as err:
        if args.debug:
            raise
        print(f"knowpack {command.name}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # one the stage did not name itself: still one line, with the path
        if args.debug:
            raise
        from knowpack.runfolder import os_error

        print(f"knowpack {command.name}: error: {os_error(err, err.filename or 'a file')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"knowpack {command.name}: interrupted; finished work is kept, run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

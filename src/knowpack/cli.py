"""The ``knowpack`` command: a thin layer that maps arguments to each stage's typed config.

Each stage folder registers its own sub-commands (``<stage>/cli.py: register(subparsers)``), so a reader finds
a command next to the stage it runs. Errors a user can fix print one line and exit 2; ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from knowpack import __version__
from knowpack.errors import KnowpackError

STAGE_COMMANDS = (
    "knowpack.kg.cli",
    "knowpack.probe.cli",
    "knowpack.train.cli",
    "knowpack.evaluate.cli",
    "knowpack.sweep.cli",
    "knowpack.report.cli",
    "knowpack.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knowpack", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"knowpack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in STAGE_COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    try:
        args.func(args)
    except KnowpackError as err:
        if args.debug:
            raise
        print(f"knowpack {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"knowpack {args.command}: interrupted; finished work is kept, run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``lmo-dp`` command line.

Each sub-command lives in ``orchestrator/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a function
``handler(args) -> dict``. The dict is the command's result: printed as one JSON object
with ``--json`` (nothing else goes to stdout) or rendered for people otherwise.

Exit codes: 0 success, 2 bad input (:class:`~noise_search.errors.InputError`, argument
errors), 1 runtime failure (any other :class:`~noise_search.errors.LmoDpError`).
Errors are printed as one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from noise_search.errors import InputError, LmoDpError, one_line
from orchestrator.serialize import jsonable

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "account",
    "calibrate",
    "search",
    "train",
    "sweep",
    "submit",
    "audit",
    "report",
    "demo",
)


class CliUsageError(InputError):
    """An argument the parser rejected."""


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise CliUsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lmo-dp",
        description="Differentially private fine-tuning over privacy-budget grids with LMO-DP noise.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"orchestrator.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"orchestrator.commands.{name}":
                continue  # command not part of this build
            raise
        module.register(sub)
    return parser


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def emit(args: argparse.Namespace, result: dict[str, Any], render) -> None:
    """Print ``result`` as JSON (``--json``) or through ``render(result) -> str``."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(jsonable(result), allow_nan=False) + "\n")
    else:
        text = render(result)
        if text:
            sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _field_flags() -> dict[str, str]:
    from orchestrator.commands._common import FIELD_FLAGS

    return FIELD_FLAGS


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    named = next((a for a in argv if not a.startswith("-")), None)
    command = f"lmo-dp {named}" if named in COMMANDS else "lmo-dp"
    args = None
    try:
        args = parser.parse_args(argv)
        command = f"lmo-dp {args.command}"
        result = args.handler(args)
        if result is not None:
            emit(args, result, getattr(args, "render", None) or (lambda r: json.dumps(jsonable(r), indent=2)))
        return int(getattr(args, "exit_code", 0) or 0)
    except InputError as exc:
        message = str(exc)
        field = getattr(exc, "field", None)
        flags = getattr(args, "field_flags", None) or _field_flags()
        if field in flags and message.startswith(f"{field}:"):
            message = f"{flags[field]}{message[len(field) :]}"
        print(f"{command}: error: {one_line(message)}", file=sys.stderr)
        return 2
    except LmoDpError as exc:
        print(f"{command}: failed: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

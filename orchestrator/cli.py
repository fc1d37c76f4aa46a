"""The ``lmo-dp`` command line.

Each sub-command lives in ``orchestrator/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a function
``handler(args) -> dict``. The dict is the command's result: printed as one JSON object
with ``--json`` (nothing else goes to stdout) or rendered for people otherwise.

Exit codes: 0 success, 2 bad input (:class:`~noise_search.errors.InputError`, argument
errors), 1 runtime failure (any other :class:`~noise_search.errors.LmoDpError`, or an
unexpected exception), 3 a sweep that finished with failed trials, 130 interrupted. Errors are
printed as one line on stderr of at most 500 characters (:func:`~noise_search.errors.clip_line`);
``--debug`` (or ``LMODP_DEBUG=1``) shows the traceback instead.
Without a terminal, stderr carries no progress bars and no library INFO lines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from noise_search.errors import InputError, LmoDpError, clip_line
from orchestrator.serialize import jsonable

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "account",
    "calibrate",
    "search",
    "train",
    "predict",
    "sweep",
    "submit",
    "check-cluster",
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


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each optional flag's default (required flags and switches have none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and not action.required
            and default not in (None, False, argparse.SUPPRESS)
            and "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("lmo-dp")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without install
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lmo-dp",
        description="Differentially private fine-tuning over privacy-budget grids with LMO-DP noise.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lmo-dp {version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of a failure (or set LMODP_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"orchestrator.commands.{name.replace('-', '_')}")
        module.register(sub)
    for sub_parser in sub.choices.values():
        sub_parser.formatter_class = HelpFormatter
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


def _quiet_libraries(debug: bool = False) -> None:
    """No INFO chatter from libraries on stderr (MLflow's database set-up, alembic), no bars
    without a terminal, no MLflow "View run" lines; ``debug``: library logs during a sweep too
    (:mod:`orchestrator.quiet`)."""
    import os

    from orchestrator.quiet import quiet_libraries

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_libraries(debug=debug)


def _debugging(argv: Sequence[str]) -> bool:
    import os

    return "--debug" in argv or os.environ.get("LMODP_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debugging(argv)
    _quiet_libraries(debug)
    parser = build_parser()
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
        if debug:
            raise
        message = str(exc)
        field = getattr(exc, "field", None)
        flags = getattr(args, "field_flags", None) or {}
        if field in flags and message.startswith(f"{field}:"):
            message = f"{flags[field]}{message[len(field) :]}"
        print(f"{command}: error: {clip_line(message)}", file=sys.stderr)
        return 2
    except LmoDpError as exc:
        if debug:
            raise
        print(f"{command}: failed: {clip_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failure we did not foresee: still one line, the traceback on request
        if debug:
            raise
        print(
            f"{command}: failed: {type(exc).__name__}: {clip_line(exc)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Typed errors raised by lmo-dp library code.

Only the CLI turns these into exit codes: :class:`InputError` (and its subclasses)
means the user gave something out of range (exit 2); any other
:class:`LmoDpError` is a runtime failure (exit 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class LmoDpError(Exception):
    """Base class of every error lmo-dp raises on purpose."""


class InputError(LmoDpError, ValueError):
    """Bad user input: a value out of range, a malformed file, an unknown name."""


class ParameterError(InputError):
    """A named parameter is outside its allowed range.

    The message always starts with the field name so a one-line CLI error tells
    the user what to change.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self) -> tuple:  # copied and pickled whole (Ray copies a trial's exception)
        return (type(self), (self.field, self.detail))


class UnsupportedError(InputError):
    """A valid request that this combination (mechanism, accountant, ...) cannot serve."""


class CalibrationError(LmoDpError):
    """A calibration target cannot be met inside the searched parameter range."""


def require_finite_number(field: str, value: object) -> float:
    """Return ``value`` as a float, or raise :class:`ParameterError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(field, f"must be a number, got {value!r}")
    out = float(value)
    if out != out or out in (float("inf"), float("-inf")):
        raise ParameterError(field, f"must be finite, got {value!r}")
    return out


def check_range(
    field: str,
    value: object,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> float:
    """Validate a real number against open/closed bounds; message names the field and range."""
    x = require_finite_number(field, value)
    lo = f"({gt}" if gt is not None else (f"[{ge}" if ge is not None else "(-inf")
    hi = f"{lt})" if lt is not None else (f"{le}]" if le is not None else "inf)")
    ok = (gt is None or x > gt) and (ge is None or x >= ge) and (lt is None or x < lt) and (le is None or x <= le)
    if not ok:
        raise ParameterError(field, f"must be in {lo}, {hi}, got {value!r}")
    return x


def check_int(field: str, value: object, *, ge: int) -> int:
    """Validate an integer >= ``ge``."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ParameterError(field, f"must be an integer >= {ge}, got {value!r}")
    if value < ge:
        raise ParameterError(field, f"must be an integer >= {ge}, got {value!r}")
    return int(value)


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def read_input_file(path: str | Path, field: str) -> str:
    """The text of a user's file, or :class:`InputError` ``"<field>: cannot read <path>: ..."``."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{field}: cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{field}: {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from exc


def load_json_file(path: str | Path, field: str) -> Any:
    """A user's JSON file parsed, or :class:`InputError` naming ``field`` (unreadable or invalid)."""
    text = read_input_file(path, field)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{field}: {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except ValueError as exc:  # an integer longer than Python converts (4300 digits)
        raise InputError(f"{field}: {path} is not usable JSON ({one_line(exc)})") from None
    except RecursionError:
        raise InputError(f"{field}: {path} is not usable JSON (nested too deeply)") from None

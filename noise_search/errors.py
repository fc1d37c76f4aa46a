"""Typed errors raised by lmo-dp library code.

Only the CLI turns these into exit codes: :class:`InputError` (and its subclasses)
means the user gave something out of range (exit 2); any other
:class:`LmoDpError` is a runtime failure (exit 1).
"""

from __future__ import annotations


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


#: Most characters of an error line the CLI prints (the rest is cut, saying how much).
MAX_LINE_CHARS = 500


def clip_line(text: object, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` on one line (:func:`one_line`) and at most ``limit`` characters: a longer one is
    cut, ending in how many characters were left out."""
    line = one_line(text)
    if len(line) <= limit:
        return line
    keep = max(limit - 64, 0)  # room for the note
    return f"{line[:keep]}... ({len(line) - keep:,} more characters; --debug shows all)"


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters (a value quoted in an error message)."""
    if isinstance(value, (list, tuple)) and len(value) > 8:  # never the repr of a huge list
        head = ", ".join(short_repr(v, 20) for v in value[:3])
        text = f"[{head}, ... ({len(value):,} items)]"
    elif isinstance(value, dict) and len(value) > 8:
        text = f"{{... ({len(value):,} keys)}}"
    else:
        text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."

"""Turning results into JSON: every ``--json`` output, result file and MLflow dict goes through
:func:`jsonable` (JSON has no inf/nan; numpy scalars become plain numbers)."""

from __future__ import annotations

import math
from typing import Any


def jsonable(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null, numpy scalars plain numbers, tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return jsonable(value.item())
    return value

"""Golden files of the CLI contract: outputs normalised, stored under ``tests/golden/``, compared.

Other tools call ``lmo-dp ... --json`` and read the MLflow runs a sweep leaves, so those outputs
must not change by accident. :func:`normalise` replaces what differs from run to run (times,
run ids, paths, dates, the host) by placeholders; :func:`check_golden` compares the rest with
the stored file: every key, every string, and every number to a relative 1e-9 (the same
computation on the same machine gives the same float; a changed epsilon, sample or metric
differs by far more).

``LMODP_UPDATE_GOLDEN=1`` rewrites the files instead of comparing. Do that only for a change
meant to alter the contract, in a commit of its own that says so.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"

#: keys whose values differ between runs of the same command
_VOLATILE = {
    "mlflow_run_id": "<run-id>",
    "parent_run_id": "<run-id>",
    "trial_id": "<trial-id>",
    "report": "<path>",
    "run_dir": "<path>",
    "tracking_uri": "<uri>",
    "report_host": "<host>",
    "report_artifact": "<artifact>",
    "parent_run_url": "<url>",
    "root": "<path>",
    #: feature-cache hits and builds depend on what ran before
    "feature_cache": "<cache>",
}
_RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
_DATE = re.compile(r"\b\d{8}-\d{6}\b")
_TRIAL_ID = re.compile(r"\b[0-9a-f]{5}_\d{5}\b")


def _text(value: str, roots: tuple[str, ...]) -> str:
    for root in roots:
        value = value.replace(root, "<tmp>")
    value = _RUN_ID.sub("<run-id>", value)
    value = _TRIAL_ID.sub("<trial-id>", value)
    value = _DATE.sub("<date>", value)
    return value.replace(socket.gethostname(), "<host>")


def normalise(value: Any, roots: tuple[str | os.PathLike[str], ...] = ()) -> Any:
    """``value`` with times, ids, paths, dates and the host name replaced by placeholders."""
    texts = tuple(str(Path(r).resolve()) for r in roots) + tuple(str(r) for r in roots)
    texts = tuple(sorted(set(texts), key=len, reverse=True))

    def walk(v: Any, key: str = "") -> Any:
        if key in _VOLATILE and v is not None:  # a whole volatile object too (feature_cache)
            return _VOLATILE[key]
        if isinstance(v, dict):
            return {k: walk(x, str(k)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, key) for x in v]
        if v is None:
            return None
        if key in _VOLATILE:
            return _VOLATILE[key]
        if key == "seconds" or key.endswith("_seconds") or key == "seconds_elapsed":
            return "<seconds>"
        if isinstance(v, str):
            return _text(v, texts)
        return v

    return walk(value)


def _diff(expected: Any, got: Any, path: str) -> str | None:
    if isinstance(expected, dict) and isinstance(got, dict):
        if set(expected) != set(got):
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            return f"{path}: keys differ (missing {missing}, new {extra})"
        for k in expected:
            found = _diff(expected[k], got[k], f"{path}.{k}")
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return f"{path}: {len(expected)} items expected, got {len(got)}"
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            found = _diff(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    numbers = (int, float)
    if isinstance(expected, numbers) and isinstance(got, numbers) and not isinstance(expected, bool):
        if isinstance(got, bool) or not math.isclose(expected, got, rel_tol=1e-9, abs_tol=1e-12):
            return f"{path}: {expected!r} expected, got {got!r}"
        return None
    if expected != got or type(expected) is not type(got):
        return f"{path}: {expected!r} expected, got {got!r}"
    return None


def check_golden(name: str, data: Any) -> None:
    """``data`` (already normalised) equals ``tests/golden/<name>.json``, or the file is rewritten
    with ``LMODP_UPDATE_GOLDEN=1``."""
    path = GOLDEN_DIR / f"{name}.json"
    data = json.loads(json.dumps(data, allow_nan=True))  # tuples as lists, keys as strings
    if os.environ.get("LMODP_UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n")
        return
    assert path.is_file(), f"no golden file {path} (generate it with LMODP_UPDATE_GOLDEN=1)"
    expected = json.loads(path.read_text())
    problem = _diff(expected, data, name)
    assert problem is None, f"output differs from {path.name}: {problem}"

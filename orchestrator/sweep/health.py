"""Whether a sweep can go on: the tracking store answers and the disks it writes have room.

A trial that fails because the tracking server is gone or a disk is full would fail again on
every retry, and so would every trial after it. When a trial fails, the driver asks
:func:`sweep_problem` -- giving a tracking server as long to come back as MLflow's client gives
one request (:func:`client_retry_window`), so a server restart is still ridden out -- and a
problem ends the whole sweep at once with that one cause (exit 1) instead of burning through
every trial's retries. The same check names the cause when the sweep itself fails.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

#: a local disk with less room than this (bytes) counts as full
FULL_BELOW = 1 << 20
#: seconds the tracking server gets to answer the health check
SERVER_TIMEOUT_S = 5.0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.0f} GiB"


def full_disks(run_dir: str, tracking_uri: str) -> list[str]:
    """The local places this sweep writes whose disk is (nearly) full, as ``what path (N free)``."""
    places = []
    if "://" not in run_dir:
        places.append(("storage_path", Path(run_dir)))
    if tracking_uri.startswith("sqlite:///"):
        places.append(("MLflow store", Path(tracking_uri[len("sqlite:///") :]).parent))
    out = []
    for what, path in places:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            continue
        if free < FULL_BELOW:
            out.append(f"{what} {path} ({_size(free)} free)")
    return out


def client_retry_window() -> float:
    """Seconds MLflow's HTTP client keeps retrying one request before it gives up: the sum of its
    backoffs (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7, and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``,
    default 2: about 4 minutes; urllib3 waits nothing after the first failure and caps a wait at
    120 s)."""
    try:  # read as MLflow reads them (integers), without importing MLflow
        retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7"))
        factor = int(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"))
    except ValueError:
        retries, factor = 7, 2
    return float(sum(0 if k <= 1 else min(120, factor * 2 ** (k - 1)) for k in range(1, retries + 1)))


def server_problem(tracking_uri: str, patience: float = 0.0) -> str | None:
    """Why the tracking server ``tracking_uri`` cannot be used (None: it answers, or is not a
    server). It is asked again every 2 s for up to ``patience`` seconds: a server that restarts
    meanwhile is no problem."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    from orchestrator.tracking import TrackingError, check_server

    deadline = time.monotonic() + patience
    while True:
        try:
            check_server(tracking_uri, timeout=SERVER_TIMEOUT_S)
            return None
        except TrackingError as exc:
            if time.monotonic() >= deadline:
                return str(exc)
        time.sleep(2.0)


def sweep_problem(run_dir: str, tracking_uri: str, *, patience: float = 0.0) -> str | None:
    """A reason the whole sweep cannot go on (a full disk, a tracking server that does not answer
    for ``patience`` seconds), in one line; None when there is none."""
    full = full_disks(run_dir, tracking_uri)
    if full:
        return "no space left on the disk of " + " and ".join(full)
    return server_problem(tracking_uri, patience)

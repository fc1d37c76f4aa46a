"""One way to reach Ray for every command: check the address, join or start, close what we started.

:func:`connect` uses an already initialised Ray as it is; else joins ``address`` (or
``RAY_ADDRESS``, as inside a Ray job), after checking that something answers there; else starts
a local instance. :meth:`RaySession.close` shuts down only an instance this call started.
:func:`check_address` is the fail-fast check for a user's ``--address``: a malformed address is
bad input (exit 2), one where nothing answers within the connect timeout
(``$LMODP_CONNECT_TIMEOUT``, default 15 s) a runtime failure (exit 1), both one line naming it.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from noise_search.errors import LmoDpError, ParameterError


class RayUnavailableError(LmoDpError):
    """Ray could not be started or reached."""


@dataclass
class RaySession:
    """A connection to Ray; ``cpus`` is the cluster's CPU count when it was opened."""

    started: bool
    address: str | None
    cpus: int

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()


def check_address(address: str, field: str = "--address") -> None:
    """Fail fast when ``address`` (``host:port``, ``ray://host:port`` or ``auto``) is malformed
    (:class:`ParameterError`) or nothing answers there (:class:`RayUnavailableError`).

    Ray itself retries an unreachable GCS for minutes; a TCP connect bounded by the connect
    timeout answers in seconds."""
    from orchestrator.checks import connect_timeout

    if address == "auto":
        return
    if address.startswith(("http://", "https://")):
        raise ParameterError(
            field,
            f"expects the Ray cluster (GCS) address host:port or ray://host:port, got {address!r} "
            "(the dashboard URL is for lmo-dp submit)",
        )
    target = address.split("://", 1)[1] if "://" in address else address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ParameterError(field, f"must be host:port, ray://host:port or auto, got {address!r}")
    if not 0 < int(port) < 65536:
        raise ParameterError(field, f"port must be in [1, 65535], got {address!r}")
    wait = connect_timeout()
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=wait):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or f"no answer within {wait:g} s"
        raise RayUnavailableError(f"{field}: no Ray cluster answers at {address} ({reason})") from None


def private_token_file(path: Path | None = None) -> bool:
    """Make Ray's token file (``~/.ray/auth_token``, which ``ray.init()`` creates readable by every
    user of the machine) readable by its owner only (mode 600); True when it was changed.

    The token authenticates to every cluster later started on this machine with token
    authentication (``cluster.yaml`` copies it to the cluster's nodes)."""
    path = path or Path.home() / ".ray" / "auth_token"
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077 and path.is_file():
            path.chmod(mode & 0o700)
            return True
    except OSError:  # none, or not ours: nothing to tighten
        pass
    return False


def connect(address: str | None = None, *, num_cpus: int | None = None) -> RaySession:
    """Use an initialised Ray, join ``address`` (or ``RAY_ADDRESS``), or start a local instance
    (with ``num_cpus`` CPUs; default all). Raises :class:`RayUnavailableError`."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    started = False
    target = address or os.environ.get("RAY_ADDRESS")
    if target and not ray.is_initialized():
        check_address(target, "--address" if address else "RAY_ADDRESS")
    quiet = "WARNING" if sys.stderr.isatty() else "ERROR"
    try:
        if not ray.is_initialized():
            if target:
                ray.init(address=target, log_to_driver=False, logging_level=quiet)
            else:
                # "local": a new instance even if another cluster runs on this machine
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=quiet,
                )
            started = True
            private_token_file()
        cpus = int(ray.cluster_resources().get("CPU", 0))
    except LmoDpError:
        raise
    except Exception as exc:  # Ray raises many types here (ConnectionError, RuntimeError, ...)
        where = f"reach {target}" if target else "start a local instance"
        raise RayUnavailableError(f"Ray: cannot {where}: {exc}") from exc
    return RaySession(started, target, cpus)

"""One way to reach Ray for every command: check the address, join or start, close what we started.

:func:`connect` uses an already initialised Ray as it is; else joins ``address`` (or
``RAY_ADDRESS``, as inside a Ray job), after checking that something answers there; else starts
a local instance. :meth:`RaySession.close` shuts down only an instance this call started.
:func:`check_address` is the fail-fast check (exit 2, one line) for a user's ``--address``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

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
    """Fail fast (exit 2) when a ``host:port`` or ``ray://host:port`` address does not answer."""
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
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ParameterError(field, f"no Ray cluster answers at {address} ({exc.strerror or exc})") from None


def connect(address: str | None = None, *, num_cpus: int | None = None) -> RaySession:
    """Use an initialised Ray, join ``address`` (or ``RAY_ADDRESS``), or start a local instance
    (with ``num_cpus`` CPUs; default all). Raises :class:`RayUnavailableError`."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    started = False
    target = address or os.environ.get("RAY_ADDRESS")
    try:
        if not ray.is_initialized():
            if target:
                ray.init(address=target, log_to_driver=False, logging_level="WARNING")
            else:
                # "local": a new instance even if another cluster runs on this machine
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="WARNING",
                )
            started = True
        cpus = int(ray.cluster_resources().get("CPU", 0))
    except Exception as exc:  # Ray raises many types here (ConnectionError, RuntimeError, ...)
        where = f"reach {target}" if target else "start a local instance"
        raise RayUnavailableError(f"Ray: cannot {where}: {exc}") from exc
    return RaySession(started, target, cpus)

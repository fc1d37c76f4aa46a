"""Checks of a tracking store before any work: the URI's scheme, a local store's folder, a
server that answers, accepts the credentials sent and stores artifacts. Nothing is created to
find out; bad input exits 2 naming ``MLFLOW_TRACKING_URI``, an unreachable server exits 1.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from noise_search.errors import InputError, LmoDpError

#: the local store's folder when ``MLFLOW_TRACKING_URI`` is not set
DEFAULT_DIR = "mlruns-lmodp"


class TrackingError(LmoDpError):
    """The tracking store could not be reached or written."""


def tracking_configured() -> bool:
    """Whether the user pointed lmo-dp at a tracking store (``MLFLOW_TRACKING_URI`` set)."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def _uri_field() -> str:
    """What the user set, for error messages: the variable, or the local default folder."""
    return "MLFLOW_TRACKING_URI" if tracking_configured() else f"tracking store ./{DEFAULT_DIR}"


def check_server(uri: str, timeout: float | None = None) -> None:
    """An MLflow tracking server must answer its ``/health`` endpoint within ``timeout`` seconds
    (default :func:`orchestrator.checks.connect_timeout`); else :class:`TrackingError`."""
    import urllib.error
    import urllib.request

    from orchestrator.checks import connect_timeout

    wait = connect_timeout() if timeout is None else timeout
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=wait):
            reason = None
    except urllib.error.HTTPError as exc:
        # 401/403: an authenticated server answers; the client's credentials are checked below
        reason = None if exc.code in (401, 403) else f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    if reason is not None:
        raise TrackingError(
            f"MLflow tracking server {uri} does not answer ({reason}; waited up to {wait:g} s, LMODP_CONNECT_TIMEOUT)"
        )
    check_credentials(uri, wait)


def _credentials_sent() -> str:
    """Which credentials :func:`_auth_headers` sends, for error messages (never their values)."""
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return "the MLFLOW_TRACKING_TOKEN sent was rejected"
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user and os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return f"MLFLOW_TRACKING_USERNAME={user} with its MLFLOW_TRACKING_PASSWORD was rejected"
    return "no credentials were sent (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD not both set)"


def check_credentials(uri: str, timeout: float) -> None:
    """The server must accept this client's credentials: one read-only request (search one experiment).

    HTTP 401 or 403 raises :class:`TrackingError` at once, in one line naming the variables to set,
    instead of a traceback from deep inside the first MLflow call; ``timeout`` is in seconds. A 403
    for the Host header (MLflow's DNS-rebinding guard) names ``--allowed-hosts``. Any other answer
    is left to MLflow.
    """
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_auth_headers()), timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(300).decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        return  # it answered /health a moment ago; MLflow's own retries handle a blip
    if status == 403 and "Invalid Host header" in body:
        raise TrackingError(
            f"MLflow tracking server {uri} rejected the Host header {urlsplit(uri).netloc} (HTTP 403); "
            f"start the server with --allowed-hosts including {urlsplit(uri).netloc}"
        )
    if status in (401, 403):
        raise TrackingError(
            f"MLflow tracking server {uri} refused the credentials (HTTP {status}): {_credentials_sent()}; "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an MLflow user's "
            "(on Ray nodes: ~/.lmodp/secrets.env, see docs/cluster.md)"
        )


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's own client would send (``MLFLOW_TRACKING_TOKEN`` or username/password)."""
    import base64

    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")}
    return {}


def check_artifact_store(uri: str, timeout: float | None = None) -> None:
    """A tracking server that proxies artifacts must be able to store one, before any run starts.

    Writes a few bytes under ``lmodp-probe/`` through the server's artifact API and deletes them.
    An error from the server's artifact store (wrong or missing S3 credentials, no bucket) raises
    :class:`TrackingError` at once, instead of MLflow's client retrying each upload for minutes
    when the first run logs its artifacts. A server that does not proxy artifacts
    (``--no-serve-artifacts``: clients write to the store themselves) or refuses the probe's
    credentials is left to the run itself.
    """
    import urllib.error
    import urllib.request
    import uuid

    from orchestrator.checks import connect_timeout

    wait = connect_timeout() if timeout is None else timeout
    url = f"{uri.rstrip('/')}/api/2.0/mlflow-artifacts/artifacts/lmodp-probe/{uuid.uuid4().hex}.txt"
    headers = {"Content-Type": "application/octet-stream", **_auth_headers()}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, b"lmo-dp", headers, method="PUT"), timeout=wait):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404, 503):  # credentials are checked by the run; 503: not proxying
            return
        raise TrackingError(
            f"MLflow tracking server {uri} cannot store artifacts (HTTP {exc.code} from its artifact store); "
            "check the server's S3 credentials, its --artifacts-destination bucket and MLFLOW_S3_ENDPOINT_URL"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TrackingError(f"MLflow tracking server {uri} does not answer ({getattr(exc, 'reason', exc)})") from exc
    with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
        urllib.request.urlopen(urllib.request.Request(url, headers=_auth_headers(), method="DELETE"), timeout=wait)


def check_tracking_scheme(uri: str) -> None:
    """``uri`` must be a tracking URI this MLflow can open (a scheme it has a store for: ``file``,
    ``sqlite``, ``postgresql``, ``mysql``, ``mssql``, ``http(s)``, ``databricks``, plugins...),
    else :class:`InputError` naming ``MLFLOW_TRACKING_URI``. Nothing is opened or created."""
    if "\x00" in uri or any(ch in uri for ch in "\r\n"):
        raise InputError(f"{_uri_field()}: must be one line without NUL characters, got {uri!r}")
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry as registry
    except ImportError:  # another MLflow layout: leave the URI to MLflow itself
        return
    try:
        registry.get_store_builder(uri)
    except Exception:
        known = ", ".join(sorted(k for k in getattr(registry, "_registry", {}) if k))
        raise InputError(
            f"{_uri_field()}: MLflow has no tracking store for {uri!r} (schemes it knows: {known}; "
            "a local folder or sqlite:///path/mlflow.db also works)"
        ) from None


def check_tracking(uri: str) -> None:
    """Before any work: the store at ``uri`` can be used, and nothing is created to find out.

    The URI's scheme must be one MLflow can open (:func:`check_tracking_scheme`, exit 2); a
    local SQLite store's folder must exist or be creatable (exit 2 naming
    ``MLFLOW_TRACKING_URI`` or the default folder); an ``http(s)`` server must answer
    (:func:`check_server`, exit 1) and store artifacts (:func:`check_artifact_store`, exit 1).
    """
    from orchestrator.checks import check_output_dir

    check_tracking_scheme(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if db.is_dir():
            raise InputError(f"{_uri_field()}: {db} is a folder, not an SQLite file")
        check_output_dir(db.parent, _uri_field())
    elif uri.startswith(("http://", "https://")):
        check_server(uri)
        check_artifact_store(uri)

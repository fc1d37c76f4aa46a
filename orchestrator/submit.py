"""Submitting lmo-dp commands to a Ray cluster through Ray's job API.

The job runs ``python -m orchestrator.cli <args>`` on the head node with this project as its
working directory (uploaded by Ray, minus virtual environments, tracking stores and caches), so the
cluster runs exactly the code the user has checked out; the nodes only need lmo-dp's dependencies
(``cluster.yaml`` installs lmo-dp itself, which brings them). ``python`` is the first one on the
PATH of the Ray processes: start Ray from the environment that has lmo-dp installed (the launcher
config puts its virtual environment first on the PATH of every node).

Token authentication (Ray 2.60): a cluster started where ``~/.ray/auth_token`` exists (a local
``ray.init()`` creates it) or with ``RAY_AUTH_MODE=token`` rejects requests without the token. Ray's
own client sends it only when ``RAY_AUTH_MODE=token`` is set in the submitting shell; lmo-dp sends
it whenever it finds one -- ``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token`` -- unless ``RAY_AUTH_MODE=disabled``. A dashboard without token
authentication ignores the header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from noise_search.errors import InputError, LmoDpError, one_line

#: Paths (gitignore syntax, relative to the project root) never uploaded as the job's working dir.
WORKING_DIR_EXCLUDES: tuple[str, ...] = (
    ".git/",
    ".venv/",
    "venv/",
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.egg-info/",
    "build/",
    "dist/",
    "mlruns/",
    "mlruns-lmodp/",
    "mlartifacts/",
    "lmodp-out/",
    "data/cache/",
    ".lmodp-cache/",
    "ray_results/",
)

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SubmitError(LmoDpError):
    """The job could not be submitted or followed (runtime failure, exit 1)."""


@dataclass(frozen=True)
class JobOutcome:
    """What became of a followed job: Ray's terminal status, its message and full log text."""

    status: str
    message: str | None
    logs: str = field(repr=False)


def project_root() -> Path:
    """The lmo-dp source checkout this code runs from (the directory holding pyproject.toml)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file() or not (root / "orchestrator" / "cli.py").is_file():
        raise InputError(
            f"--working-dir: lmo-dp is not running from a source checkout ({root}); pass the checkout explicitly"
        )
    return root


def normalize_address(address: str | None) -> str:
    """``http(s)://host:port`` of a Ray dashboard; a bare ``host:port`` gets ``http://``."""
    address = (address or os.environ.get("RAY_API_SERVER_ADDRESS") or "").strip().rstrip("/")
    if not address:
        raise InputError("--address: required (the Ray dashboard, e.g. http://127.0.0.1:8265)")
    if "://" not in address:
        address = f"http://{address}"
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--address: {address!r} is not an http(s)://HOST:PORT dashboard address")
    try:
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError as exc:
        raise InputError(f"--address: {address!r} has an invalid port") from exc
    return address


def ray_auth_token() -> str | None:
    """The Ray authentication token to send, found where Ray looks for it; None if none/disabled."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        return None
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path_env = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path_env:
        try:
            token = Path(path_env).expanduser().read_text().strip()
        except OSError as exc:
            raise InputError(f"RAY_AUTH_TOKEN_PATH: cannot read {path_env}: {exc.strerror or exc}") from exc
        if not token:
            raise InputError(f"RAY_AUTH_TOKEN_PATH: {path_env} is empty")
        return token
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        return default.read_text().strip() or None
    return None


def auth_headers() -> dict[str, str]:
    token = ray_auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


_TOKEN_HELP = "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token, e.g. the head's ~/.ray/auth_token"


_NOT_GCS = (
    "(lmo-dp submit takes the dashboard's URL, http://HOST:8265 by default; a cluster's GCS address HOST:PORT "
    "is for lmo-dp sweep --address)"
)


def check_dashboard(address: str, headers: Mapping[str, str], *, timeout_s: float = 5.0) -> str:
    """Check that a Ray dashboard with the job API answers at ``address`` and accepts our token.

    Returns the cluster's Ray version. Raises :class:`InputError` (bad address or credentials).
    """
    import requests

    try:
        r = requests.get(f"{address}/api/version", headers=dict(headers), timeout=timeout_s)
    except requests.exceptions.RequestException as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = "connection refused or host unreachable"
        elif isinstance(exc, requests.exceptions.Timeout):
            reason = f"no answer within {timeout_s:g} s"
        raise InputError(
            f"--address: no Ray dashboard answers at {address} ({reason}); is the cluster up and the "
            f"dashboard port reachable (e.g. `ray dashboard cluster.yaml`)? {_NOT_GCS}"
        ) from exc
    if r.status_code in (401, 403):
        raise _auth_error(address, r.status_code, bool(headers))
    try:
        version = r.json()["ray_version"] if r.ok else None
    except (ValueError, KeyError, TypeError):
        version = None
    if not version:
        raise InputError(f"--address: {address} answered HTTP {r.status_code} but is not a Ray dashboard; {_NOT_GCS}")
    # /api/version may be open without a token; the job API is not.
    try:
        jobs = requests.get(f"{address}/api/jobs/", headers=dict(headers), timeout=timeout_s)
    except requests.exceptions.RequestException as exc:
        raise InputError(f"--address: the Ray job API at {address} did not answer: {type(exc).__name__}") from exc
    if jobs.status_code in (401, 403):
        raise _auth_error(address, jobs.status_code, bool(headers))
    if jobs.status_code == 404:
        raise InputError(f"--address: {address} has no job API; install ray[default] on the cluster")
    return str(version)


def _auth_error(address: str, status: int, sent: bool) -> InputError:
    if status == 401 or not sent:
        return InputError(f"--address: {address} requires a Ray authentication token and none was found; {_TOKEN_HELP}")
    return InputError(f"--address: {address} rejected the Ray authentication token sent (HTTP 403); {_TOKEN_HELP}")


#: Variable names that carry credentials, refused by ``--env`` (see :func:`is_secret_name`).
SECRET_NAMES = frozenset(
    {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"}
)
#: Words (between underscores) that mark a credential: HF_TOKEN, DB_PASSWORD, ... but not TOKENIZERS_PARALLELISM.
_SECRET_WORDS = frozenset({"PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "CREDENTIALS", "APIKEY"})
_SECRET_PAIRS = ("_API_KEY_", "_PRIVATE_KEY_", "_SECRET_KEY_")
#: Where credentials for Ray jobs go instead: sourced into every node's environment (cluster.yaml).
NODE_SECRETS_FILE = "~/.lmodp/secrets.env"


def is_secret_name(name: str) -> bool:
    """Whether environment variable ``name`` looks like it holds a credential (password, token, key)."""
    upper = name.upper()
    if upper in SECRET_NAMES or _SECRET_WORDS.intersection(upper.split("_")):
        return True
    return any(pair in f"_{upper}_" for pair in _SECRET_PAIRS)


def parse_env(pairs: Sequence[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` strings (``--env``) as a dict; keys must be shell variable names.

    Credentials are refused (:func:`is_secret_name`): a job's ``env_vars`` are stored in its
    runtime_env, which anyone who can open the Ray dashboard or its job API can read.
    """
    env: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.match(key):
            raise InputError(f"--env: expected KEY=VALUE with KEY a variable name, got {pair!r}")
        if is_secret_name(key):
            raise InputError(
                f"--env: {key} looks like a credential and would be stored in the job's metadata, readable by "
                f"anyone with the Ray dashboard; put it in the nodes' {NODE_SECRETS_FILE} instead (docs/cluster.md)"
            )
        env[key] = value
    return env


def entrypoint(command_args: Sequence[str]) -> str:
    """The shell command the job runs: the lmo-dp CLI from the uploaded working directory."""
    return "python -m orchestrator.cli " + shlex.join(list(command_args))


def runtime_env(working_dir: Path, env_vars: Mapping[str, str] | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": list(WORKING_DIR_EXCLUDES)}
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


class _DropDefaultExcludeNotice(logging.Filter):
    """Ray warns once per run that .git/.venv are excluded by default: we exclude them anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is now ignored by default when packaging" not in str(record.msg)


def _quiet_ray_client_logs() -> None:
    """Keep the job SDK's per-file INFO chatter (packaging, uploads, websocket) off the terminal."""
    sdk = logging.getLogger("ray.dashboard.modules.dashboard_sdk")
    sdk.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropDefaultExcludeNotice) for f in sdk.filters):
        sdk.addFilter(_DropDefaultExcludeNotice())
    for name in ("ray.dashboard.modules.job.sdk", "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)


def job_client(address: str, headers: Mapping[str, str]):
    """A :class:`ray.job_submission.JobSubmissionClient` for ``address``, carrying ``headers``."""
    from ray.job_submission import JobSubmissionClient

    _quiet_ray_client_logs()
    try:
        return JobSubmissionClient(address, headers=dict(headers) or None)
    except ConnectionError as exc:
        raise InputError(f"--address: {one_line(exc)}") from exc


_AGENT_NOT_READY = "No available agent to submit job"


def submit(
    client: Any,
    command_args: Sequence[str],
    *,
    working_dir: Path,
    env_vars: Mapping[str, str] | None = None,
    submission_id: str | None = None,
    agent_wait_s: float = 180.0,
) -> str:
    """Submit ``lmo-dp <command_args>`` as a Ray job; returns its submission id.

    A head whose job agent has not registered yet (just started, or busy) answers "No available
    agent ... try again later"; that answer is retried for up to ``agent_wait_s`` seconds (180: a
    loaded 2-core head took over 60 s to register its agent).
    """
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return client.submit_job(
                entrypoint=entrypoint(command_args),
                runtime_env=runtime_env(working_dir, env_vars),
                submission_id=submission_id,
                metadata={"lmodp.command": " ".join(command_args[:1])},
            )
        except Exception as exc:  # RuntimeError from the SDK for HTTP errors, ValueError for bad runtime_env
            if _AGENT_NOT_READY in str(exc) and time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            raise SubmitError(f"the cluster refused the job: {one_line(exc)}") from exc


async def _tail(client: Any, job_id: str, sink: TextIO) -> int:
    written = 0
    async for chunk in client.tail_job_logs(job_id):
        sink.write(chunk)
        sink.flush()
        written += len(chunk)
    return written


def wait_terminal(client: Any, job_id: str, *, timeout_s: float | None = None, poll_s: float = 0.5) -> str:
    """Poll the job status until it is SUCCEEDED, FAILED or STOPPED (or ``timeout_s`` passes)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL_STATUSES:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise SubmitError(f"job {job_id} still {status} after {timeout_s:g} s")
        time.sleep(poll_s)


def follow(client: Any, job_id: str, sink: TextIO) -> JobOutcome:
    """Stream the job's logs to ``sink`` until it ends; return its terminal status and logs."""
    written = 0
    try:
        written = asyncio.run(_tail(client, job_id, sink))
    except RuntimeError as exc:  # the log websocket dropped: fall back to polling
        print(f"lmo-dp submit: log stream interrupted ({exc}); waiting for the job to end", file=sys.stderr)
    status = wait_terminal(client, job_id)
    logs = client.get_job_logs(job_id)
    if len(logs) > written:  # whatever the stream missed
        sink.write(logs[written:])
        sink.flush()
    info = client.get_job_info(job_id)
    return JobOutcome(status=status, message=getattr(info, "message", None), logs=logs)


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object (a ``--json`` command's result), if any."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None

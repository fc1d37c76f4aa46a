"""Real servers on loopback for end-to-end tests: a two-node Ray cluster, an S3 server, an MLflow server.

Everything here starts real processes from this virtual environment and tears them down again,
touching nothing it did not start (other Ray instances on the machine keep running):

* :func:`start_ray_cluster` -- ``ray start --head --block`` on 127.0.0.2 and ``ray start --block``
  workers on 127.0.0.3, 127.0.0.4, ... (Ray rewrites 127.0.0.1 to the host address), every port
  chosen free, a private temp dir and token authentication with a private token file (never
  ``~/.ray``). Stopping sends SIGTERM to the ``ray start --block`` processes (each kills the Ray
  processes it started, in about 3 s), then SIGKILLs whatever is left that belongs to this cluster: processes in
  its process groups or whose command line names its temp dir or GCS address (job drivers run in
  sessions of their own).
* :func:`start_s3_server` -- SeaweedFS ``weed mini`` (S3 API with credential checks) on 127.0.0.1.
* :func:`start_mlflow_server` -- ``mlflow server`` with a SQLite backend and proxied artifacts in S3,
  optionally MLflow's basic-auth app (users and passwords).

Every start waits for readiness with a timeout and, on failure, raises :class:`ServerError` with the
tail of the server's log; every stop is safe to call twice and after a failed start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: bin/ of the virtual environment running the tests: its ray, mlflow, weed and python are used.
VENV_BIN = Path(sys.executable).parent


class ServerError(RuntimeError):
    """A test server did not start or answer in time."""


# --- processes, ports, logs -----------------------------------------------------------------------
def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (all sockets held until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not Path(path).is_file():
        return "(no log)"
    text = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty log)"


def tool(name: str) -> str:
    """Absolute path of a console script of this virtual environment."""
    path = VENV_BIN / name
    if not path.is_file():
        raise ServerError(f"{name} is not installed in {VENV_BIN} (pip install -e '.[test]')")
    return str(path)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the test process dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def spawn(argv: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` in a new session (its own process group), stdout+stderr to ``log``.

    The child is sent SIGTERM if the test process dies, so a killed test run leaves no servers.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip


def wait_for(
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    log: Path | None,
    proc: subprocess.Popen | None = None,
    watch: list[tuple[subprocess.Popen, Path]] | None = None,
) -> None:
    """Poll ``ready()`` until true; raise :class:`ServerError` with the log tail on timeout or early exit.

    ``proc`` (logging to ``log``) and every ``(process, log)`` in ``watch`` must stay alive meanwhile.
    """
    watched = [*([(proc, log)] if proc is not None else []), *(watch or [])]
    deadline = time.monotonic() + timeout_s
    while True:
        for p, p_log in watched:
            if p.poll() is not None:
                raise ServerError(f"{what}: process exited with code {p.returncode}; log tail:\n{log_tail(p_log)}")
        try:
            if ready():
                return
        except Exception:  # not up yet: connection refused, half-started server
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"{what}: not ready after {timeout_s:g} s; log tail:\n{log_tail(log)}")
        time.sleep(0.5)


def http_get(url: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_group(pgid: int | None, sig: int) -> None:
    if pgid is None or pgid == os.getpgrp():  # never signal our own group
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process(proc: subprocess.Popen | None, *, grace_s: float = 10.0) -> None:
    """SIGTERM the process group ``proc`` leads, wait up to ``grace_s``, then SIGKILL the group."""
    if proc is None:
        return
    pgid = _pgid(proc.pid)
    if proc.poll() is None:
        _signal_group(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _processes_matching(needles: list[str], pgids: set[int]) -> list[int]:
    """Pids (not ours) in one of ``pgids`` or whose command line contains one of ``needles``."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if _pgid(pid) in pgids or any(n in cmdline for n in needles):
            found.append(pid)
    return found


# --- Ray ----------------------------------------------------------------------------------------
@dataclass
class RayCluster:
    """A running multi-node Ray cluster on loopback (see :func:`start_ray_cluster`)."""

    head_ip: str
    gcs_port: int
    dashboard_port: int
    temp_dir: Path
    token_path: Path
    worker_ips: list[str]
    env: dict[str, str] = field(repr=False)
    procs: list[subprocess.Popen] = field(default_factory=list, repr=False)
    logs: list[Path] = field(default_factory=list, repr=False)
    _pgids: set[int] = field(default_factory=set, repr=False)

    @property
    def address(self) -> str:
        """GCS address for ``ray.init(address=...)``."""
        return f"{self.head_ip}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_path.read_text().strip()}"}

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for a process that talks to this cluster (driver, ``ray`` CLI, ``lmo-dp submit``)."""
        env = dict(self.env)
        env.update(extra)
        return env

    def alive_nodes(self) -> list[dict[str, Any]]:
        """Alive nodes from the dashboard's state API: dicts with node_id, node_ip, state."""
        status, body = http_get(f"{self.dashboard_url}/api/v0/nodes?limit=100", self.auth_headers())
        if status != 200:
            raise ServerError(f"state API answered HTTP {status}: {body[:200]!r}")
        rows = json.loads(body)["data"]["result"]["result"]
        return [r for r in rows if r.get("state") == "ALIVE"]

    def log_tails(self) -> str:
        parts = [f"--- {log.name}\n{log_tail(log)}" for log in self.logs]
        session_logs = self.temp_dir / "session_latest" / "logs"
        for name in ("gcs_server.err", "raylet.err", "dashboard.err", "dashboard.log"):
            if (session_logs / name).is_file():
                parts.append(f"--- {name}\n{log_tail(session_logs / name, 15)}")
        return "\n".join(parts)

    def kill_worker(self, index: int = 0) -> int:
        """SIGKILL worker node ``index`` and everything it started (a machine lost at once): its
        ``ray start`` group and every process whose command line names its temp dir. Returns how
        many processes were killed."""
        proc = self.procs[1 + index]
        needles = [f"{self.temp_dir / f'w{index}'}{os.sep}", f"--node-ip-address={self.worker_ips[index]}"]
        pgids = {pid for pid in [_pgid(proc.pid)] if pid is not None}
        killed = 0
        for _ in range(3):
            victims = _processes_matching(needles, pgids)
            if not victims:
                break
            for pid in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            time.sleep(0.5)
        return killed

    def stop(self) -> None:
        """Stop this cluster's processes only, then remove its temp dir."""
        for proc in reversed(self.procs):  # workers first, then the head
            if proc.poll() is None:  # `ray start --block` stops the Ray processes it started on SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        needles = [str(self.temp_dir), f"{self.head_ip}:{self.gcs_port}"]
        for _ in range(3):
            leftover = _processes_matching(needles, self._pgids)
            if not leftover:
                break
            for pid in leftover:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        for proc in self.procs:
            stop_process(proc, grace_s=0)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _ray_node_ports(head: bool) -> list[str]:
    names = [
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
    ]
    if head:
        names.append("--ray-client-server-port")
    return [f"{name}={port}" for name, port in zip(names, free_ports(len(names)), strict=True)]


def start_ray_cluster(
    *,
    workers: int = 1,
    num_cpus: int = 1,
    object_store_bytes: int = 150 * 1024**2,
    timeout_s: float = 120.0,
    extra_env: dict[str, str] | None = None,
) -> RayCluster:
    """A head (127.0.0.2) and ``workers`` worker nodes (127.0.0.3, ...) started with ``ray start``.

    Uses this venv's ``ray`` with the venv's ``bin`` first on PATH (so job entrypoints run its
    ``python``), token authentication with a private token file, and a private temp dir under /tmp
    (short: Ray's socket paths must fit in 107 bytes). Waits until all nodes are ALIVE and the job
    API answers. On any failure the started processes are stopped before the error propagates.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="lmodp-ray-", dir="/tmp"))
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") or k == "RAY_USAGE_STATS_ENABLED"}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    gcs_port, dashboard_port = free_ports(2)
    cluster = RayCluster(
        head_ip="127.0.0.2",
        gcs_port=gcs_port,
        dashboard_port=dashboard_port,
        temp_dir=temp_dir,
        token_path=token_path,
        worker_ips=[f"127.0.0.{3 + i}" for i in range(workers)],
        env=env,
    )
    ray = tool("ray")
    common = [f"--num-cpus={num_cpus}", f"--object-store-memory={object_store_bytes}", "--block"]
    try:
        head_log = temp_dir / "ray-start-head.log"
        head = spawn(
            [
                ray, "start", "--head", f"--node-ip-address={cluster.head_ip}", f"--port={gcs_port}",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--include-dashboard=true",
                f"--temp-dir={temp_dir}", "--disable-usage-stats", *_ray_node_ports(head=True), *common,
            ],
            head_log,
            env,
        )  # fmt: skip
        cluster.procs.append(head)
        cluster.logs.append(head_log)
        cluster._pgids.add(head.pid)
        wait_for(
            lambda: http_get(f"{cluster.dashboard_url}/api/version", cluster.auth_headers())[0] == 200,
            timeout_s=timeout_s,
            what="Ray head dashboard",
            log=head_log,
            proc=head,
        )
        for i, ip in enumerate(cluster.worker_ips):
            log = temp_dir / f"ray-start-worker{i}.log"
            # each node needs its own temp dir: nodes sharing one session dir also share its
            # runtime_resources, and one node's cleanup deletes a job's working_dir under another
            worker_temp = temp_dir / f"w{i}"
            worker_temp.mkdir()
            worker = spawn(
                [ray, "start", f"--address={cluster.address}", f"--node-ip-address={ip}",
                 f"--temp-dir={worker_temp}", *_ray_node_ports(head=False), *common],
                log,
                env,
            )  # fmt: skip
            cluster.procs.append(worker)
            cluster.logs.append(log)
            cluster._pgids.add(worker.pid)
        expected = 1 + workers
        started = list(zip(cluster.procs, cluster.logs, strict=True))
        wait_for(
            lambda: len(cluster.alive_nodes()) == expected,
            timeout_s=timeout_s,
            what=f"Ray cluster with {expected} alive nodes",
            log=head_log,
            watch=started,
        )
        wait_for(
            lambda: http_get(f"{cluster.dashboard_url}/api/jobs/", cluster.auth_headers())[0] == 200,
            timeout_s=timeout_s,
            what="Ray job API",
            log=head_log,
            watch=started,
        )
    except BaseException as exc:
        tails = cluster.log_tails()
        cluster.stop()
        if isinstance(exc, ServerError):
            raise ServerError(f"{exc}\n{tails}") from None
        raise
    return cluster


def start_with_retry(start: Callable[[], Any], what: str, attempts: int = 2) -> Any:
    """``start()``, tried again on :class:`ServerError` (a free port taken by someone else meanwhile)."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except ServerError as exc:
            if attempt == attempts:
                raise
            print(f"{what} did not start ({str(exc).splitlines()[0]}); retrying", file=sys.stderr)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def ray_cluster(**kwargs: Any) -> Iterator[RayCluster]:
    """A started :func:`start_ray_cluster` cluster (one retry), stopped on exit."""
    cluster = start_with_retry(lambda: start_ray_cluster(**kwargs), "Ray cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


# --- S3 (SeaweedFS) -----------------------------------------------------------------------------
@dataclass
class S3Server:
    """A SeaweedFS ``weed mini`` S3 endpoint on 127.0.0.1 that checks these credentials."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    data_dir: Path
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """Client environment: boto3/MLflow credentials and endpoint for this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }

    def client(self, **overrides: Any):
        import boto3

        kwargs = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
        }
        kwargs.update(overrides)
        return boto3.client("s3", **kwargs)

    def list_keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def start_s3_server(base_dir: Path, *, bucket: str = "lmodp", timeout_s: float = 60.0) -> S3Server:
    """Start ``weed mini`` with every port free and chosen, telemetry and admin UI off."""
    data_dir = Path(base_dir) / "s3-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log = Path(base_dir) / "weed.log"
    ports = free_ports(11)
    access_key, secret_key = "lmodp" + secrets.token_hex(4), secrets.token_hex(16)
    server = S3Server(f"http://127.0.0.1:{ports[0]}", bucket, access_key, secret_key, data_dir, log)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    argv = [
        tool("weed"), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-admin.ui=false", f"-bucket={bucket}", "-webdav=false",
        f"-s3.port={ports[0]}", f"-s3.port.grpc={ports[1]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-master.port={ports[2]}", f"-master.port.grpc={ports[3]}",
        f"-volume.port={ports[4]}", f"-volume.port.grpc={ports[5]}",
        f"-filer.port={ports[6]}", f"-filer.port.grpc={ports[7]}",
        f"-admin.port={ports[8]}", f"-admin.port.grpc={ports[9]}", f"-debug.port={ports[10]}",
        f"-filer.localSocket={data_dir / 'filer.sock'}", f"-s3.localSocket={data_dir / 's3.sock'}",
    ]  # fmt: skip
    server.proc = spawn(argv, log, env, cwd=data_dir)

    def bucket_ready() -> bool:
        server.client().head_bucket(Bucket=bucket)
        return True

    try:
        wait_for(bucket_ready, timeout_s=timeout_s, what="S3 server (weed mini)", log=log, proc=server.proc)
    except BaseException:
        server.stop()
        raise
    return server


# --- MLflow -------------------------------------------------------------------------------------
@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1: SQLite backend, artifacts proxied to ``artifacts_destination``."""

    uri: str
    backend_uri: str
    artifacts_destination: str
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    argv: list[str] = field(default_factory=list, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: Path | None = field(default=None, repr=False)
    #: (username, password) of the basic-auth app's admin; None: the server has no authentication.
    admin: tuple[str, str] | None = field(default=None, repr=False)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def create_user(self, username: str, password: str) -> None:
        """Create a basic-auth user through the server's REST API, as its admin."""
        if self.admin is None:
            raise ServerError("create_user: this MLflow server runs without --app-name basic-auth")
        body = json.dumps({"username": username, "password": password}).encode()
        request = urllib.request.Request(
            f"{self.uri}/api/2.0/mlflow/users/create",
            body,
            {"Content-Type": "application/json", **basic_auth_header(*self.admin)},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                r.read()
        except urllib.error.HTTPError as exc:
            raise ServerError(f"create_user {username}: HTTP {exc.code}: {exc.read()[:200]!r}") from None

    def start(self, timeout_s: float = 120.0) -> None:
        """(Re)start the server process on its port and wait until it answers."""
        self.proc = spawn(self.argv, self.log, self.env, cwd=self.cwd)
        try:
            wait_for(
                lambda: http_get(f"{self.uri}/health")[0] == 200,
                timeout_s=timeout_s,
                what="MLflow server",
                log=self.log,
                proc=self.proc,
            )
        except BaseException:
            self.stop()
            raise


def basic_auth_header(username: str, password: str) -> dict[str, str]:
    """HTTP basic authentication, as MLflow's client sends ``MLFLOW_TRACKING_USERNAME/PASSWORD``."""
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")}


def write_auth_config(base_dir: Path, admin_password: str, *, default_permission: str = "READ") -> Path:
    """The basic-auth app's config (``MLFLOW_AUTH_CONFIG_PATH``), mode 600: admin ``admin`` with
    ``admin_password`` (set on first start) and its user database beside it in ``base_dir``."""
    path = Path(base_dir) / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = sqlite:///{(Path(base_dir) / 'basic_auth.db').resolve()}\n"
        "admin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.chmod(0o600)
    return path


def start_mlflow_server(
    base_dir: Path,
    s3: S3Server,
    *,
    prefix: str = "mlflow-artifacts",
    timeout_s: float = 120.0,
    basic_auth: bool = False,
    allowed_hosts: str | None = None,
) -> MlflowServer:
    """Start a tracking server whose artifacts live in ``s3://<bucket>/<prefix>`` (proxied serving).

    ``basic_auth``: run MLflow's basic-auth app (``--app-name basic-auth``): every request needs a
    user's credentials; the admin's (``server.admin``) are in ``base_dir/basic_auth.ini``, and
    :meth:`MlflowServer.create_user` adds users. ``allowed_hosts``: the server's ``--allowed-hosts``
    (Host headers it accepts; MLflow's default is localhost and private addresses).

    The job runner is off and one worker serves requests: about 500 MiB summed RSS (docs/tracking.md).
    """
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    backend = f"sqlite:///{(base_dir / 'mlflow.db').resolve()}"
    destination = f"s3://{s3.bucket}/{prefix}"
    log = base_dir / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(s3.env(), MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}")
    argv = [
        tool("mlflow"), "server", "--backend-store-uri", backend, "--artifacts-destination", destination,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    admin = None
    if basic_auth:
        admin = ("admin", secrets.token_urlsafe(16))
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_config(base_dir, admin[1]))
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)  # the auth app's CSRF key (required)
        argv += ["--app-name", "basic-auth"]
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    server = MlflowServer(
        f"http://127.0.0.1:{port}", backend, destination, log, argv=argv, env=env, cwd=base_dir, admin=admin
    )
    server.start(timeout_s)
    return server

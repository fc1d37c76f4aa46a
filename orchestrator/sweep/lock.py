"""One sweep at a time per run folder: the sweep lock.

Two ``lmo-dp sweep`` commands into the same experiment and storage would train every trial
twice and overwrite each other's manifest. The driver therefore holds a lock on the sweep's run
folder from before Ray starts until it exits; a second sweep (new or ``--resume``) is refused
with exit 2 naming the holder (host, process id, start time).

* **Local or shared file system** (a path): ``flock`` on ``<run folder>/.lmodp-sweep.lock``,
  which holds the holder's description. The kernel releases it when the driver dies, however
  it dies (``kill -9`` included), so a ``--resume`` right after a crash is never blocked. On
  NFS, Linux maps ``flock`` to NFS byte-range locks; a file system without lock support is
  reported in one warning line and the sweep runs unlocked.
* **Object storage** (``s3://``): the lock object ``<run folder>/.lmodp-sweep.lock`` is created
  with a conditional ``PUT`` (``If-None-Match: *``), so exactly one creator wins. The holder
  rewrites it every :data:`HEARTBEAT_S` seconds (conditional on its ETag). A lock is stale --
  and is taken over, again with a conditional ``PUT`` on the stale ETag, so two takers cannot
  both win -- when its holder ran on this host and that process is gone, or when its heartbeat is
  older than :data:`STALE_S` seconds (a holder on another host that died).

Other storage schemes have no lock (one warning line).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from noise_search.errors import InputError, one_line
from orchestrator.sweep.storage import LOCK_FILE

log = logging.getLogger(__name__)

#: seconds between two heartbeats of an object-storage lock
HEARTBEAT_S = 30.0
#: an object-storage lock whose heartbeat is older than this (seconds) is stale
STALE_S = 120.0


@dataclass(frozen=True)
class Holder:
    """Who holds a sweep lock: host, process id and its start, a random token, the last heartbeat."""

    host: str
    pid: int
    started: str  #: when the driver took the lock (local time, ISO 8601)
    token: str
    heartbeat: float  #: Unix time (s) of the last heartbeat
    process_started: float | None = None  #: the process's own start (Unix time, s), to tell pid reuse

    @classmethod
    def me(cls) -> Holder:
        now = time.time()
        return cls(
            socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
            secrets.token_hex(8), now, _process_start(os.getpid()),
        )  # fmt: skip

    def describe(self) -> str:
        if self.pid == 0:
            return "its holder could not write who it is"
        return f"host {self.host}, pid {self.pid}, started {self.started}"

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        try:
            raw = json.loads(data.decode())
            return cls(
                str(raw["host"]), int(raw["pid"]), str(raw["started"]), str(raw["token"]), float(raw["heartbeat"]),
                None if raw.get("process_started") is None else float(raw["process_started"]),
            )  # fmt: skip
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return None

    def gone(self) -> bool:
        """Whether this holder ran on this host and its process no longer exists."""
        if self.host != socket.gethostname():
            return False
        started = _process_start(self.pid)
        if started is None:
            return True
        return self.process_started is not None and abs(started - self.process_started) > 1.0

    def stale(self, now: float | None = None) -> bool:
        """Gone (:meth:`gone`), or no heartbeat for :data:`STALE_S` seconds."""
        return self.gone() or (now or time.time()) - self.heartbeat > STALE_S


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (Unix time, s); None when there is no such process."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except ImportError:  # pragma: no cover - psutil comes with ray[default]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0.0
        return 0.0
    except Exception:  # psutil.NoSuchProcess, AccessDenied for a zombie
        return None


class SweepLocked(InputError):
    """Another sweep holds the run folder (exit 2)."""

    def __init__(self, run_dir: str, holder: Holder | None) -> None:
        self.run_dir, self.holder = run_dir, holder
        who = (holder or Holder("", 0, "", "", 0.0)).describe()
        super().__init__(
            f"experiment: another lmo-dp sweep is running into {run_dir} ({who}); "
            "wait for it to end or stop it, then rerun with --resume"
        )

    def __reduce__(self) -> tuple:
        return (type(self), (self.run_dir, self.holder))


class SweepLock:
    """A held sweep lock; :meth:`release` gives it back (also when the process exits)."""

    def __init__(self, run_dir: str, holder: Holder, backend: Any) -> None:
        self.run_dir, self.holder, self._backend = run_dir, holder, backend

    def release(self, *, remove_empty: bool = False) -> None:
        """Give the lock back; ``remove_empty``: also remove the run folder when the lock's own
        file is all it holds and this lock created it (a sweep refused before it wrote anything)."""
        if self._backend is not None:
            self._backend.release(remove_empty)
            self._backend = None
            _HELD.discard(self.run_dir)

    def __enter__(self) -> SweepLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


#: run folders whose lock this process holds
_HELD: set[str] = set()


def acquire(run_dir: str) -> SweepLock:
    """Take the lock of ``run_dir`` or raise :class:`SweepLocked` naming its holder."""
    if run_dir in _HELD:
        raise SweepLocked(run_dir, Holder.me())
    holder = Holder.me()
    backend: Any
    if "://" not in run_dir or run_dir.startswith("file://"):
        backend = _FileLock(Path(run_dir.removeprefix("file://")))
    elif run_dir.startswith("s3://"):
        backend = _ObjectLock(run_dir)
    else:
        log.warning(
            "storage_path %s: sweeps into it are not locked (only folders and s3:// are); "
            "do not run two sweeps into one experiment there at once",
            run_dir.split("?", 1)[0],
        )
        return SweepLock(run_dir, holder, None)
    if not backend.acquire(holder):
        return SweepLock(run_dir, holder, None)
    _HELD.add(run_dir)
    return SweepLock(run_dir, holder, backend)


def holder_of(run_dir: str) -> Holder | None:
    """The holder of ``run_dir``'s lock when a live sweep other than this process holds it, else
    None (nothing is created)."""
    if run_dir in _HELD:
        return None
    if "://" not in run_dir or run_dir.startswith("file://"):
        return _FileLock(Path(run_dir.removeprefix("file://"))).probe()
    if run_dir.startswith("s3://"):
        return _ObjectLock(run_dir).probe()
    return None


def check_free(run_dir: str) -> None:
    """Raise :class:`SweepLocked` when a live sweep holds ``run_dir`` (nothing is created)."""
    holder = holder_of(run_dir)
    if holder is not None:
        raise SweepLocked(run_dir, holder)


# --- a folder: flock ------------------------------------------------------------------------------


class _FileLock:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self.fd: int | None = None
        self.created: list[Path] = []

    def acquire(self, holder: Holder) -> bool:
        missing = []
        parent = self.folder
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        self.folder.mkdir(parents=True, exist_ok=True)
        self.created = missing  # deepest first
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SweepLocked(str(self.folder), self._read_holder()) from None
            except OSError as exc:  # ENOLCK: no lock support on this file system
                os.close(fd)
                log.warning("storage_path %s: cannot lock (%s); the sweep runs unlocked", self.folder, one_line(exc))
                return False
            try:  # the file we locked must still be the one at the path (a releaser may have removed it)
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.fd = fd
            with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, unnamed
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.to_bytes(), 0)
                os.fsync(fd)
            return True
        raise SweepLocked(str(self.folder), self._read_holder())  # pragma: no cover - endless churn

    def _read_holder(self) -> Holder | None:
        for _ in range(5):  # its holder may be writing it this instant
            with contextlib.suppress(OSError):
                found = Holder.from_bytes(self.path.read_bytes())
                if found is not None:
                    return found
            time.sleep(0.05)
        return None

    def probe(self) -> Holder | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._read_holder() or Holder("", 0, "", "", time.time())
        except OSError:
            return None
        finally:
            os.close(fd)
        return None

    def release(self, remove_empty: bool) -> None:
        if self.fd is None:
            return
        if remove_empty and self.created and [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
            with contextlib.suppress(OSError):
                self.path.unlink()
                for folder in self.created:
                    folder.rmdir()
        else:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
        os.close(self.fd)  # releases the flock
        self.fd = None


# --- s3://: a conditional PUT ---------------------------------------------------------------------


def s3_client_and_key(uri: str) -> tuple[Any, str, str]:
    """(boto3 S3 client, bucket, key prefix) for a Tune/pyarrow storage URI
    ``s3://bucket/prefix[?endpoint_override=...&region=...&scheme=...]``; credentials and, without
    ``endpoint_override``, the endpoint come from the usual AWS environment and files."""
    import boto3

    parts = urlsplit(uri)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    endpoint = query.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
    kwargs: dict[str, Any] = {"endpoint_url": endpoint, "region_name": query.get("region")}
    if query.get("access_key") and query.get("secret_key"):
        kwargs.update(aws_access_key_id=query["access_key"], aws_secret_access_key=query["secret_key"])
        if query.get("session_token"):
            kwargs["aws_session_token"] = query["session_token"]
    return boto3.client("s3", **kwargs), parts.netloc, parts.path.strip("/")


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


_PRECONDITION = ("PreconditionFailed", "412", "ConditionalRequestConflict")


class _ObjectLock:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client, self.bucket, prefix = s3_client_and_key(uri)
        self.key = f"{prefix}/{LOCK_FILE}" if prefix else LOCK_FILE
        self.etag: str | None = None
        self.holder: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self, holder: Holder, **condition: str) -> str:
        """Write the lock object if ``condition`` (``IfNoneMatch``/``IfMatch``) holds; its new ETag."""
        return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=holder.to_bytes(), **condition)["ETag"]

    def _read(self) -> tuple[Holder | None, str | None]:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None, None
            raise
        return Holder.from_bytes(obj["Body"].read()), obj["ETag"]

    def acquire(self, holder: Holder) -> bool:
        try:
            self.etag = self._put(holder, IfNoneMatch="*")
        except Exception as exc:
            code = _error_code(exc)
            if code in ("NotImplemented", "501"):
                log.warning("storage_path %s: the object store has no conditional writes; the sweep runs unlocked",
                            self.uri.split("?", 1)[0])  # fmt: skip
                return False
            if code not in _PRECONDITION:
                raise
            found, etag = self._read()
            if found is not None and not found.stale():
                raise SweepLocked(self.uri.split("?", 1)[0], found) from None
            try:  # take over the stale lock: only one taker's PUT on its ETag succeeds
                self.etag = self._put(holder, **({"IfMatch": etag} if etag else {"IfNoneMatch": "*"}))
            except Exception as again:
                if _error_code(again) not in _PRECONDITION:
                    raise
                raise SweepLocked(self.uri.split("?", 1)[0], self._read()[0]) from None
            if found is not None:
                log.warning("took over the sweep lock of %s, a sweep that is gone (%s)", self.uri.split("?", 1)[0],
                            found.describe())  # fmt: skip
        self.holder = holder
        self._thread = threading.Thread(target=self._heartbeat, name="lmodp-sweep-lock", daemon=True)
        self._thread.start()
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            assert self.holder is not None
            beat = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
            try:
                self.etag = self._put(beat, IfMatch=self.etag or "")
                self.holder = beat
            except Exception as exc:
                if _error_code(exc) in _PRECONDITION:
                    log.warning("the sweep lock of %s was taken over by another sweep", self.uri.split("?", 1)[0])
                    return
                # the store did not answer this time; the next heartbeat tries again

    def probe(self) -> Holder | None:
        try:
            found, _ = self._read()
        except Exception:  # unreachable or no credentials: acquire() says so when the sweep starts
            return None
        return found if found is not None and not found.stale() else None

    def release(self, remove_empty: bool) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):  # taken over meanwhile: the ETag no longer matches
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)

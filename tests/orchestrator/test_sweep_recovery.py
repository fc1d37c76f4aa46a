"""The pieces that keep a failing sweep from losing, duplicating or hiding work, without Ray: the
sweep lock (a folder's ``flock``, an ``s3://`` object's conditional writes), atomic state files,
the search for an earlier attempt's checkpoint, the health check's patience, and what libraries
may print without a terminal. The whole sweeps are in ``test_sweep.py`` and ``test_sweep_faults.py``."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from orchestrator.sweep import lock
from orchestrator.sweep.lock import Holder, SweepLocked
from orchestrator.sweep.resume import earlier_checkpoints
from orchestrator.sweep.storage import LOCK_FILE, MANIFEST, read_manifest, run_dir_exists, write_manifest


def _hold(run_dir: str, ready, release) -> None:
    held = lock.acquire(run_dir)
    ready.send(os.getpid())
    release.recv()
    held.release()


@pytest.mark.slow  # a second process
def test_a_second_sweep_is_refused_naming_the_holder_until_it_dies(tmp_path: Path) -> None:
    """Another process holds the folder's lock: refused (exit 2) naming host and pid; once that
    process is killed (``kill -9``) the lock is free at once."""
    ctx = mp.get_context("fork")
    run_dir = str(tmp_path / "store" / "exp")
    ready_r, ready_w = ctx.Pipe(duplex=False)
    release_r, _release_w = ctx.Pipe(duplex=False)  # kept open: the holder waits on it until killed
    holder = ctx.Process(target=_hold, args=(run_dir, ready_w, release_r))
    holder.start()
    try:
        pid = ready_r.recv()
        for attempt in (lock.check_free, lock.acquire):
            with pytest.raises(SweepLocked) as err:
                attempt(run_dir)
            message = str(err.value)
            assert message.startswith(f"experiment: another lmo-dp sweep is running into {run_dir} ")
            assert f"(host {socket.gethostname()}, pid {pid}, started " in message
        assert not run_dir_exists(run_dir)  # the lock's own file is not sweep state
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
    with lock.acquire(run_dir) as held:
        assert held.holder.pid == os.getpid() and lock.holder_of(run_dir) is None
        assert Holder.from_bytes((Path(run_dir) / LOCK_FILE).read_bytes()) == held.holder


def test_a_sweep_refused_after_taking_the_lock_leaves_no_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "store" / "exp"
    lock.acquire(str(run_dir)).release(remove_empty=True)
    assert not (tmp_path / "store").exists()
    run_dir.mkdir(parents=True)
    (run_dir / MANIFEST).write_text("{}")
    lock.acquire(str(run_dir)).release(remove_empty=True)  # a sweep's folder is never removed
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([LOCK_FILE, MANIFEST])


def test_a_holder_is_stale_when_its_process_is_gone_or_its_heartbeat_old() -> None:
    me = Holder.me()
    assert not me.gone() and not me.stale()
    dead = Holder(me.host, 2**22 + 12345, me.started, "t", time.time())
    assert dead.gone() and dead.stale()
    reused = Holder(me.host, os.getpid(), me.started, "t", time.time(), process_started=1.0)  # pid reused
    assert reused.gone()
    elsewhere = Holder("another-host", 1, me.started, "t", time.time())
    assert not elsewhere.stale() and Holder("another-host", 1, "", "t", time.time() - lock.STALE_S - 1).stale()
    assert Holder.from_bytes(b"{not json") is None


def test_a_state_file_write_that_fails_leaves_the_old_file_whole(tmp_path: Path, monkeypatch) -> None:
    run_dir = str(tmp_path / "sweep")
    write_manifest(run_dir, {"status": "running", "n": 1})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        write_manifest(run_dir, {"status": "finished", "n": 2})
    assert read_manifest(run_dir) == {"status": "running", "n": 1}
    assert sorted(p.name for p in Path(run_dir).iterdir()) == [MANIFEST]


def test_a_manifest_that_is_not_json_is_refused_naming_it(tmp_path: Path) -> None:
    from noise_search.errors import InputError

    (tmp_path / MANIFEST).write_text('{"status": "run')
    with pytest.raises(InputError, match=f"{MANIFEST} cannot be read"):
        read_manifest(str(tmp_path))


def test_the_newest_readable_checkpoint_of_each_key_is_found(tmp_path: Path) -> None:
    def checkpoint(trial_dir: str, n: int, mtime: float, data: bytes = b"x") -> None:
        folder = tmp_path / trial_dir / f"checkpoint_{n:06d}"
        folder.mkdir(parents=True)
        (folder / "checkpoint.pt").write_bytes(data)
        os.utime(folder / "checkpoint.pt", (mtime, mtime))

    checkpoint("a1b2c_00000_eps=8_gaussian_seed=0", 0, 100.0)
    checkpoint("f9e8d_00001_eps=8_gaussian_seed=0", 0, 200.0)  # a later attempt (a resumed sweep)
    checkpoint("f9e8d_00001_eps=8_gaussian_seed=0_lr=0.1", 0, 300.0)  # another key with that prefix
    checkpoint("a1b2c_00002_eps=8_laplace_seed=0", 3, 400.0, data=b"")  # an empty file is no checkpoint
    (tmp_path / "basic-variant-state.json").write_text("{}")
    found = earlier_checkpoints(str(tmp_path), {"eps=8_gaussian_seed=0", "eps=8_laplace_seed=0"})
    assert found == {"eps=8_gaussian_seed=0": "f9e8d_00001_eps=8_gaussian_seed=0/checkpoint_000000"}
    assert earlier_checkpoints(str(tmp_path / "absent"), {"k"}) == {}


def test_the_health_check_waits_as_long_as_mlflows_client_retries(monkeypatch) -> None:
    from orchestrator.sweep.health import client_retry_window, full_disks, server_problem

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    assert client_retry_window() == 0 + 4 + 8 + 16 + 32 + 64 + 120  # the documented "about 4 minutes"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    assert client_retry_window() == 30
    assert server_problem("sqlite:////tmp/x/mlflow.db", patience=60) is None  # not a server: nothing to wait for
    assert full_disks("/tmp/nowhere/store", "sqlite:////tmp/nowhere/mlflow.db") == []  # this disk has room


def test_without_a_terminal_libraries_draw_no_bars_and_matplotlib_gets_a_folder(monkeypatch, capsys) -> None:
    from orchestrator import quiet

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", "/proc/lmodp-unwritable")
    quiet.quiet_libraries()  # stderr is captured here: not a terminal
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
    assert os.environ["MPLCONFIGDIR"] != "/proc/lmodp-unwritable" and os.access(os.environ["MPLCONFIGDIR"], os.W_OK)
    assert not quiet.debugging()
    quiet.quiet_libraries(debug=True)
    assert quiet.debugging()
    quiet.quiet_libraries()


# --- s3:// -------------------------------------------------------------------------------------------


@pytest.fixture
def s3_run_dir(s3_server, monkeypatch) -> str:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    endpoint = s3_server.endpoint.removeprefix("http://")
    return (
        f"s3://{s3_server.bucket}/locks/{time.time_ns()}/exp?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    )


@pytest.mark.slow  # a real S3 server (SeaweedFS)
def test_an_s3_lock_is_one_conditional_put_and_a_stale_one_is_taken_over_once(s3_run_dir: str, monkeypatch) -> None:
    from orchestrator.sweep.lock import _ObjectLock

    base = s3_run_dir.split("?", 1)[0]
    write_manifest(s3_run_dir, {"status": "running"})  # the manifest on object storage: one whole PUT
    assert read_manifest(s3_run_dir) == {"status": "running"}
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.2)
    held = lock.acquire(s3_run_dir)
    try:
        other = Holder("another-host", 7, "2026-01-01T00:00:00", "other", time.time())
        with pytest.raises(SweepLocked, match=f"running into {base} .host {socket.gethostname()}, pid {os.getpid()}"):
            _ObjectLock(s3_run_dir).acquire(other)  # a second driver: refused by the conditional PUT
        first_beat = held.holder.heartbeat
        time.sleep(0.6)
        client, bucket, prefix = lock.s3_client_and_key(s3_run_dir)
        stored = json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/{LOCK_FILE}")["Body"].read())
        assert stored["heartbeat"] > first_beat and stored["token"] == held.holder.token
    finally:
        held.release()
    assert lock.holder_of(s3_run_dir) is None  # released: the object is gone

    # a lock left by a driver that died (this host, its pid gone): two takers that both saw it
    # stale race to take it over; the conditional PUT on its ETag lets exactly one win
    dead = Holder(socket.gethostname(), 2**22 + 54321, "2026-01-01T00:00:00", "dead", time.time())
    client.put_object(Bucket=bucket, Key=f"{prefix}/{LOCK_FILE}", Body=dead.to_bytes())
    assert lock.holder_of(s3_run_dir) is None  # stale: not a live holder
    first, second = _ObjectLock(s3_run_dir), _ObjectLock(s3_run_dir)
    seen_stale = second._read()
    real_read = second._read
    reads = iter([seen_stale])
    monkeypatch.setattr(second, "_read", lambda: next(reads, None) or real_read())
    assert first.acquire(Holder.me())
    try:
        with pytest.raises(SweepLocked, match=f"pid {os.getpid()}, started"):
            second.acquire(Holder("another-host", 8, "2026-01-01T00:00:00", "late", time.time()))
    finally:
        first.release(False)

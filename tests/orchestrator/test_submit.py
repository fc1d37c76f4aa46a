"""``lmo-dp submit``: argument checks (fast) and jobs on a real two-node Ray cluster (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from noise_search.accountants import compute_epsilon
from noise_search.errors import InputError
from noise_search.mechanisms import Gaussian
from orchestrator import submit as jobs

ROOT = Path(__file__).resolve().parents[2]
LMODP = [sys.executable, "-m", "orchestrator.cli"]
ACCOUNT = ["account", "--mechanism", "gaussian", "--sigma", "1", "--sample-rate", "0.01", "--steps", "100"]


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LMODP, *args], cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout
    )


def unreachable_address() -> str:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- fast: argument checks, no cluster --------------------------------------------------------------
def test_unreachable_address_is_one_line_exit_2():
    r = run_cli(["submit", "--address", unreachable_address(), "--", *ACCOUNT, "--delta", "1e-5"], timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmo-dp submit: error: --address:"), r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--address", "http://127.0.0.1:9"], "COMMAND"),
        (["--address", "http://127.0.0.1:9", "--", "nosuchcommand"], "nosuchcommand"),
        (["--address", "http://127.0.0.1:9", "--", *ACCOUNT], "--delta"),
        (["--address", "http://127.0.0.1:9", "--", "submit", "--", "account"], "'submit' cannot"),
        (["--address", "ftp://head:8265", "--", *ACCOUNT, "--delta", "1e-5"], "--address"),
        (["--address", "http://127.0.0.1:9", "--env", "NOEQUALS", "--", *ACCOUNT, "--delta", "1e-5"], "--env"),
    ],
    ids=["no-command", "unknown-command", "bad-command-args", "nested-submit", "bad-scheme", "bad-env"],
)
def test_bad_submissions_fail_before_contacting_the_cluster(args, needle, capsys):
    from orchestrator.cli import main

    assert main(["submit", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == ""
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert "no Ray dashboard answers" not in lines[0]  # rejected before any network access


def test_address_normalisation_and_entrypoint():
    assert jobs.normalize_address("head:8265") == "http://head:8265"
    assert jobs.normalize_address("https://head:8265/") == "https://head:8265"
    with pytest.raises(InputError, match="--address"):
        jobs.normalize_address("http://head:notaport")
    assert (
        jobs.entrypoint(["account", "--params", "a b.json"]) == "python -m orchestrator.cli account --params 'a b.json'"
    )
    assert jobs.last_json_object('noise\n{"a": 1}\n{"b": 2}\ntrailer {x}\n') == {"b": 2}
    assert jobs.last_json_object("no json here") is None


def test_human_rendering_of_a_submission():
    from orchestrator.commands.submit import render

    base = {"job_id": "raysubmit_x", "address": "http://h:8265", "message": None, "result": None}
    pending = render({**base, "status": "PENDING"})
    assert pending.startswith("submitted job raysubmit_x to http://h:8265")
    assert "ray job logs --follow --address http://h:8265 raysubmit_x" in pending
    assert render({**base, "status": "FAILED"}) == "job raysubmit_x FAILED"


class _StubJobClientAnswering:
    """Stands in for a head's job API (a fresh head's agent-not-ready answer cannot be produced on demand)."""

    def __init__(self, refusals: int, message: str):
        self.refusals, self.message, self.calls = refusals, message, 0

    def submit_job(self, **kwargs):
        self.calls += 1
        if self.calls <= self.refusals:
            raise RuntimeError(f"Request failed with status code 500: {self.message}.")
        return kwargs["submission_id"]


def test_stub_client_agent_not_ready_is_retried_and_other_refusals_are_not(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    busy = _StubJobClientAnswering(2, "No available agent to submit job, please try again later")
    assert jobs.submit(busy, ["account"], working_dir=tmp_path, submission_id="j1") == "j1"
    assert busy.calls == 3
    other = _StubJobClientAnswering(1, "runtime_env is invalid")
    with pytest.raises(jobs.SubmitError, match=r"the cluster refused the job: .*runtime_env is invalid"):
        jobs.submit(other, ["account"], working_dir=tmp_path, submission_id="j2")
    assert other.calls == 1
    never = _StubJobClientAnswering(10**6, "No available agent to submit job, please try again later")
    with pytest.raises(jobs.SubmitError, match="No available agent"):
        jobs.submit(never, ["account"], working_dir=tmp_path, submission_id="j3", agent_wait_s=0.0)


def test_auth_token_lookup_order(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert jobs.ray_auth_token() is None
    (home / ".ray" / "auth_token").write_text("from-home\n")
    assert jobs.ray_auth_token() == "from-home"
    path = tmp_path / "token"
    path.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert jobs.ray_auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs.auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert jobs.auth_headers() == {}
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="RAY_AUTH_TOKEN_PATH"):
        jobs.ray_auth_token()


# --- slow: a real two-node Ray cluster ------------------------------------------------------------
def submit_env(cluster, **extra: str) -> dict[str, str]:
    """A user's shell: the cluster's token file known, RAY_AUTH_MODE not set (lmo-dp sends the token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_TOKEN_PATH=str(cluster.token_path), **extra)
    return env


@pytest.mark.slow
def test_submit_follow_account_job_succeeds_with_its_output(ray_cluster):
    args = [*ACCOUNT, "--delta", "1e-5", "--json"]
    r = run_cli(
        ["submit", "--address", ray_cluster.dashboard_url, "--follow", "--json", "--", *args], submit_env(ray_cluster)
    )
    assert r.returncode == 0, f"stdout={r.stdout}\nstderr={r.stderr}"
    out = json.loads(r.stdout)  # stdout is one JSON object; the job's logs went to stderr
    assert out["status"] == "SUCCEEDED"
    assert out["job_id"] and out["entrypoint"].startswith("python -m orchestrator.cli account")
    remote = out["result"]
    local = compute_epsilon(Gaussian(1.0), sample_rate=0.01, steps=100, delta=1e-5, accountant="rdp")
    assert remote["mechanism"] == "gaussian" and remote["steps"] == 100
    assert remote["epsilon"] == pytest.approx(local.epsilon, rel=1e-9)
    assert f"Running entrypoint for job {out['job_id']}" in r.stderr


@pytest.mark.slow
def test_submit_failing_job_streams_its_error_and_exits_1(ray_cluster):
    # parses locally (the types are right) but the command rejects q = 2 on the cluster (exit 2 there)
    bad = [*ACCOUNT[:-4], "--sample-rate", "2", "--steps", "100", "--delta", "1e-5"]
    r = run_cli(["submit", "--address", ray_cluster.dashboard_url, "--follow", "--", *bad], submit_env(ray_cluster))
    assert r.returncode == 1, f"stdout={r.stdout}\nstderr={r.stderr}"
    out = r.stdout.rstrip().splitlines()
    assert any(line.startswith("lmo-dp account: error: --sample-rate") for line in out), r.stdout  # streamed back
    job_id = out[-1].split()[1]
    assert out[-1] == f"job {job_id} FAILED"
    assert f"lmo-dp submit: failed: job {job_id} FAILED" in r.stderr


@pytest.mark.slow
def test_submit_without_follow_prints_job_id_and_job_finishes(ray_cluster):
    from ray.job_submission import JobSubmissionClient

    uri = "http://127.0.0.1:5999"
    args = ["submit", "--address", ray_cluster.dashboard_url, "--json", "--env", f"MLFLOW_TRACKING_URI={uri}"]
    r = run_cli([*args, "--", *ACCOUNT, "--delta", "1e-5"], submit_env(ray_cluster))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] in {"PENDING", "RUNNING", "SUCCEEDED"}
    client = JobSubmissionClient(ray_cluster.dashboard_url, headers=ray_cluster.auth_headers())
    assert jobs.wait_terminal(client, out["job_id"], timeout_s=180) == "SUCCEEDED"
    assert "epsilon = " in client.get_job_logs(out["job_id"])
    info = client.get_job_info(out["job_id"])
    assert info.runtime_env["env_vars"] == {"MLFLOW_TRACKING_URI": uri}
    assert info.runtime_env["working_dir"].startswith("gcs://")  # the checkout was uploaded


@pytest.mark.slow
def test_submit_without_token_is_rejected_before_submitting(ray_cluster, tmp_path):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url, headers=ray_cluster.auth_headers())
    before = len(client.list_jobs())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    r = run_cli(["submit", "--address", ray_cluster.dashboard_url, "--", *ACCOUNT, "--delta", "1e-5"], env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "authentication token" in lines[0] and "RAY_AUTH_TOKEN" in lines[0], r.stderr
    assert len(client.list_jobs()) == before


FAN_OUT = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=1)
def where(i):
    time.sleep(1.0)
    return ray.get_runtime_context().get_node_id()

print(json.dumps(sorted(set(ray.get([where.remote(i) for i in range(4)])))))
"""


@pytest.mark.slow
def test_ray_tasks_fan_out_over_both_nodes(ray_cluster, tmp_path):
    script = tmp_path / "fan_out.py"
    script.write_text(FAN_OUT)
    r = subprocess.run(
        [sys.executable, str(script), ray_cluster.address],
        env=ray_cluster.client_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    used = set(json.loads(r.stdout.strip().splitlines()[-1]))
    alive = {n["node_id"] for n in ray_cluster.alive_nodes()}
    assert len(alive) == 2
    assert used == alive  # one-CPU tasks spilled over from the head to the worker node

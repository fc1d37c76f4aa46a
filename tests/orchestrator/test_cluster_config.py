"""cluster.yaml against Ray's own launcher schema, offline (prepare_config + validate_config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from noise_search.errors import InputError
from orchestrator.cluster import validate_cluster_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"


def _shipped() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_shipped_cluster_yaml_validates_against_ray_schema():
    prepared = validate_cluster_config(CLUSTER_YAML)
    assert prepared["provider"]["type"] == "aws"
    head = prepared["head_node_type"]
    types = prepared["available_node_types"]
    workers = {name: t for name, t in types.items() if name != head}
    assert types[head]["resources"].get("GPU", 0) == 0, "the head must not take training trials"
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu, "a GPU worker type is required"
    assert all(0 <= t["min_workers"] <= t["max_workers"] for t in gpu)
    # preparation merged the common setup into both lists, ahead of the node-specific commands
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = prepared[key]
        assert commands[: len(prepared["setup_commands"])] == prepared["setup_commands"]
        torch_at = next(i for i, c in enumerate(commands) if "torch==2.13.0" in c)
        lmodp_at = next(i for i, c in enumerate(commands) if "-e ~/lmo-dp" in c)
        assert torch_at < lmodp_at, f"{key}: torch must be installed before lmo-dp"


def test_shipped_cluster_yaml_environment_and_dashboard():
    config = _shipped()
    setup = "\n".join(config["setup_commands"])
    assert "MLFLOW_TRACKING_URI=http" in setup
    assert "s3://" in setup
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-port=8265" in start and "--head" in start
    assert "/home/ubuntu/lmo-dp" in config["file_mounts"]


def test_validation_makes_no_aws_calls_aws_mocked(monkeypatch):
    """Validation is offline: any boto3 client/resource creation fails the test."""
    import boto3

    def forbidden(*args, **kwargs):
        raise AssertionError(f"validation tried to reach AWS: boto3 {args!r}")

    monkeypatch.setattr(boto3, "client", forbidden)
    monkeypatch.setattr(boto3, "resource", forbidden)
    monkeypatch.setattr(boto3.session.Session, "client", forbidden)
    monkeypatch.setattr(boto3.session.Session, "resource", forbidden)
    validate_cluster_config(CLUSTER_YAML)


def _gpu_type(config: dict) -> str:
    return next(n for n in config["available_node_types"] if n != config["head_node_type"])


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c["available_node_types"][_gpu_type(c)].update(max_workers="two"), "max_workers"),
        (lambda c: c.update(max_workers="4"), "max_workers"),
        (lambda c: c.update(gpu_workers=2), "gpu_workers"),
        (lambda c: c.pop("provider"), "provider"),
        (lambda c: c["provider"].pop("type"), "provider.type"),
        (lambda c: c["provider"].update(type="awz"), "provider.type"),
        (lambda c: c["available_node_types"][_gpu_type(c)].pop("resources"), "resources"),
        (lambda c: c["available_node_types"][_gpu_type(c)].update(instance="g5"), "instance"),
        (lambda c: c["available_node_types"][_gpu_type(c)]["resources"].update(GPU=-1), "resources.GPU"),
        (lambda c: c.update(setup_commands="pip install lmo-dp"), "setup_commands"),
        (lambda c: c.update(head_node_type="head.gpu"), "head_node_type"),
        (lambda c: c["available_node_types"][_gpu_type(c)].update(min_workers=9), "max_workers"),
    ],
    ids=[
        "worker-max_workers-not-int",
        "global-max_workers-string",
        "unknown-top-level-key",
        "missing-provider",
        "missing-provider-type",
        "unknown-provider",
        "missing-resources",
        "unknown-node-type-key",
        "negative-gpu",
        "setup-commands-not-list",
        "head-type-not-defined",
        "min-workers-over-global-max",
    ],
)
def test_malformed_cluster_yaml_is_rejected_naming_the_field(tmp_path, mutate, field):
    config = _shipped()
    mutate(config)
    with pytest.raises(InputError) as info:
        validate_cluster_config(_write(tmp_path, config))
    message = str(info.value)
    assert "\n" not in message
    head = message.split(":", 1)[0]
    assert head.endswith(field) or head == field, message


def test_unreadable_and_non_mapping_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        validate_cluster_config(tmp_path / "absent.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="mapping"):
        validate_cluster_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("cluster_name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        validate_cluster_config(broken)


def test_check_cluster_command_refuses_placeholders_and_bad_values_and_says_ok(capsys, tmp_path):
    from cli_helpers import run_cli

    shipped = run_cli(capsys, "check-cluster", CLUSTER_YAML)
    assert shipped.code == 2 and shipped.out == "" and len(shipped.err.splitlines()) == 1
    assert "setup_commands: MLFLOW_TRACKING_URI=" in shipped.err and "placeholder" in shipped.err

    edited = CLUSTER_YAML.read_text().replace("MLFLOW_HOST", "10.0.3.17")
    edited = edited.replace("s3://lmodp-artifacts/", "s3://team-bucket/")
    path = tmp_path / "cluster.yaml"
    path.write_text(edited)
    ok = run_cli(capsys, "check-cluster", path)
    assert ok.code == 0 and ok.out.startswith(f"ok: {path}: cluster ") and "gpu.worker: g5.2xlarge" in ok.out
    data = run_cli(capsys, "check-cluster", path, "--json").json()
    assert data["ok"] and data["environment"]["MLFLOW_TRACKING_URI"] == "http://10.0.3.17:5000"
    assert data["node_types"]["gpu.worker"]["resources"]["GPU"] == 1

    path.write_text(edited.replace("max_workers: 4", "max_workers: two", 1))
    bad = run_cli(capsys, "check-cluster", path)
    assert bad.code == 2 and len(bad.err.splitlines()) == 1 and "Traceback" not in bad.err
    assert "max_workers: 'two' is not of type 'integer'" in bad.err

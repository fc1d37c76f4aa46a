"""Bad trial configs: one-line errors naming the field, exit code 2, before any training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from noise_search.errors import InputError
from orchestrator.cli import main
from trainers.config import TrialConfig

BASE = {
    "data": {"name": "movie-reviews", "max_train_examples": 100, "max_eval_examples": 20},
    "privacy": {"mechanism": "gaussian", "epsilon": 3.0, "delta": 1e-5, "clip": 1.0},
    "training": {"steps": 2, "batch_size": 10},
}


def variant(**sections) -> dict:
    out = {k: dict(v) for k, v in BASE.items()}
    for section, changes in sections.items():
        out[section] = {**out.get(section, {}), **changes}
    return out


def run_cli(tmp_path: Path, config: dict, capsys) -> tuple[int, str, str]:
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    code = main(["train", "--config", str(path), "--json"])
    out, err = capsys.readouterr()
    return code, out, err


CASES = {
    "unknown mechanism": (variant(privacy={"mechanism": "cauchy"}), "privacy.mechanism"),
    "missing model folder": (variant(model={"path": "/nonexistent/model"}), "model.path"),
    "negative clip": (variant(privacy={"clip": -1.0}), "privacy.clip"),
    "batch larger than max_train_examples": (variant(training={"batch_size": 500}), "training.batch_size"),
    "batch larger than the data": (
        variant(data={"name": "movie-reviews", "max_train_examples": None}, training={"batch_size": 9000}),
        "training.batch_size",
    ),
    "plan over the target": (variant(privacy={"params": {"sigma": 0.3}, "epsilon": 0.5}), "privacy.epsilon"),
    "lmo without params": (variant(privacy={"mechanism": "lmo"}), "privacy.params"),
    "bad lmo parameter": (
        variant(
            privacy={
                "mechanism": "lmo",
                "params": {"a1": 1, "a3": 0, "a4": 0, "G_k": -2, "G_theta": 1, "E_lambda": 1, "U_a": 0, "U_b": 1},
            }
        ),
        "privacy.params.G_k",
    ),
    "unknown field": (variant(training={"epochz": 3}), "training.epochz"),
    "epsilon missing": (variant(privacy={"epsilon": None}), "privacy.epsilon"),
    "prv for laplace": (variant(privacy={"mechanism": "laplace", "accountant": "prv"}), "privacy.accountant"),
    "unknown dataset": (variant(data={"name": "sst2"}), "data.name"),
    "bad device": (variant(training={"device": "tpu"}), "training.device"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_exits_2_with_one_line_naming_the_field(case, tmp_path, capsys):
    config, field = CASES[case]
    code, out, err = run_cli(tmp_path, config, capsys)
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmo-dp train: error: ")
    assert field in lines[0]


def test_over_budget_message_gives_both_numbers(tmp_path, capsys):
    _, _, err = run_cli(tmp_path, CASES["plan over the target"][0], capsys)
    assert "spends epsilon" in err and "> target 0.5" in err


def test_error_messages_state_the_range():
    with pytest.raises(InputError, match=r"privacy\.clip: input should be greater than 0, got -1"):
        TrialConfig.from_dict(variant(privacy={"clip": -1}))
    with pytest.raises(InputError, match=r"privacy\.delta: input should be less than 1, got 2"):
        TrialConfig.from_dict(variant(privacy={"delta": 2}))
    with pytest.raises(InputError, match=r"privacy\.mechanism: input should be 'gaussian', 'laplace', 'lmo' or 'none'"):
        TrialConfig.from_dict(variant(privacy={"mechanism": "x"}))


def test_unreadable_and_malformed_files(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("privacy: [unclosed\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and len(err.strip().splitlines()) == 1


def test_examples_validate():
    root = Path(__file__).resolve().parents[2]
    for name in ("trial-minilm-mr.yaml", "trial-minilm-top.yaml", "trial-smollm2-lm.yaml"):
        cfg = TrialConfig.from_yaml(root / "examples" / name)
        assert cfg.privacy.mechanism in ("lmo", "gaussian")
    assert TrialConfig.from_yaml(root / "examples" / "trial-minilm-mr.yaml").model.trainable == "head"
    assert TrialConfig.from_yaml(root / "examples" / "trial-minilm-top.yaml").model.top_layers == 1


def test_real_cli_process_exit_code(tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(CASES["negative clip"][0]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "privacy.clip" in proc.stderr

"""``lmo-dp audit``: JSON contract, human output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from noise_search.accountants import compute_epsilon
from noise_search.mechanisms import Laplace
from orchestrator.cli import main

KEYS = {
    "mechanism",
    "epsilon_lower_bound",
    "epsilon",
    "delta",
    "confidence",
    "canaries",
    "correct",
    "guesses",
    "seconds",
}
BASE = ["--sample-rate", "0.1", "--steps", "50", "--delta", "1e-5", "--dim", "300"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["audit", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def lmo_params(tmp_path: Path) -> Path:
    path = tmp_path / "lmo.json"
    path.write_text(
        json.dumps(
            {"a1": 0.5, "a3": 0.1, "a4": 0.1, "G_k": 3.0, "G_theta": 0.5, "E_lambda": 4.0, "U_a": 1.0, "U_b": 2.0}
        )
    )
    return path


def test_json_output_laplace(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--mechanism", "laplace", "--u", "0.5", *BASE, "--canaries", "200", "--json")
    assert code == 0, err
    r = json.loads(out)  # stdout is exactly one JSON object
    assert set(r) == KEYS
    assert r["mechanism"] == "laplace" and r["canaries"] == 200 and r["confidence"] == 0.95 and r["delta"] == 1e-5
    expected = compute_epsilon(Laplace(0.5), sample_rate=0.1, steps=50, delta=1e-5).epsilon
    assert r["epsilon"] == pytest.approx(expected)
    assert 0 <= r["epsilon_lower_bound"] < r["epsilon"]
    assert 0 <= r["correct"] <= r["guesses"] <= 200 and r["seconds"] > 0


def test_json_is_reproducible_from_the_seed(capsys: pytest.CaptureFixture[str], lmo_params: Path) -> None:
    argv = ["--mechanism", "lmo", "--params", str(lmo_params), *BASE, "--canaries", "100", "--seed", "9", "--json"]
    first = json.loads(run_cli(capsys, *argv)[1])
    second = json.loads(run_cli(capsys, *argv)[1])
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    assert first["mechanism"] == "lmo"


def test_human_output_shows_both_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "--mechanism",
        "gaussian",
        "--sigma",
        "3",
        *BASE,
        "--canaries",
        "50",
        "--confidence",
        "0.9",
        "--clip",
        "2",
    )
    assert code == 0
    assert "lower bound" in out and "accountant upper bound" in out and "confidence 0.9" in out
    assert "consistent" in out


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--mechanism", "gaussian", "--sigma", "1", *BASE, "--canaries", "1"], "--canaries"),
        (["--mechanism", "gaussian", "--sigma", "1", *BASE, "--canaries", "10", "--confidence", "1"], "--confidence"),
        (["--mechanism", "gaussian", "--sigma", "1", *BASE, "--canaries", "10", "--confidence", "0"], "--confidence"),
        (["--mechanism", "gaussian", "--sigma", "1", *BASE[:-1], "0", "--canaries", "10"], "--dim"),
        (["--mechanism", "gaussian", "--sigma", "-1", *BASE, "--canaries", "10"], "--sigma"),
        (["--mechanism", "laplace", "--sigma", "1", *BASE, "--canaries", "10"], "--u"),
        (["--mechanism", "laplace", "--u", "1", *BASE, "--canaries", "10", "--clip", "0"], "--clip"),
        (["--mechanism", "lmo", "--params", "/nonexistent/params.json", *BASE, "--canaries", "10"], "params"),
        (["--mechanism", "lmo", "--params", "BADJSON", *BASE, "--canaries", "10"], "params"),
        (["--mechanism", "laplace", "--u", "1", *BASE, "--canaries", "10", "--accountant", "prv"], "accountant"),
        (["--mechanism", "laplace", "--u", "1", "--sample-rate", "2", *BASE[2:], "--canaries", "10"], "--sample-rate"),
        (["--mechanism", "gaussian", "--sigma", "1", *BASE, "--canaries", "ten"], "--canaries"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], field: str
) -> None:
    if "BADJSON" in argv:
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        argv = [str(bad) if a == "BADJSON" else a for a in argv]
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmo-dp") and "error:" in lines[0] and field in lines[0], err


def test_console_script_end_to_end(lmo_params: Path) -> None:
    # the installed entry point, in a fresh process
    exe = Path(sys.executable).with_name("lmo-dp")
    cmd = [str(exe), "audit", "--mechanism", "lmo", "--params", str(lmo_params), *BASE, "--canaries", "100", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert set(r) == KEYS and r["epsilon_lower_bound"] <= r["epsilon"]
    bad = subprocess.run([*cmd[:-3], "--canaries", "1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1

"""Smoke tests of the training benchmark and the GPU check script (tiny configs on CPU)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # real training steps
def test_bench_train_tiny_models_bf16(capsys):
    bench = load_bench()
    argv = [
        "--models",
        "tiny-roberta",
        "tiny-llama",
        "--dtype",
        "bfloat16",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--warmup",
        "1",
        "--noise-repeats",
        "2",
        "--json",
    ]
    assert bench.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in out["rows"]}
    assert set(rows) == {"tiny-roberta", "tiny-llama"}
    for r in rows.values():
        assert set(r["steps_per_second"]) == {"non-private", "gaussian", "lmo"}
        assert all(v > 0 for v in r["seconds_per_step"].values())
        assert r["ratio_vs_non_private"]["non-private"] == 1.0 and r["trainable"] > 0
        assert r["noise_seconds"]["lmo"] > 0 and r["noise_dim"] == r["trainable"]
        assert r["uniforms_per_coordinate"] >= 1 and r["uniform_construction_ratio_vs_gaussian"] > 0
    assert rows["tiny-llama"]["task"] == "causal-lm" and rows["tiny-roberta"]["task"] == "classification"
    assert "tiny-llama" in bench.render(out["rows"])


def test_gpu_check_script_is_valid_and_refuses_without_a_gpu():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal path does not apply")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr

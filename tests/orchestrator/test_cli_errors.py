"""Reproductions of inputs that once ended in a traceback, a hang, a wrong field name or files
left behind: each now exits 2 (bad input) or 1 (a service that does not answer) with one line
naming the flag or YAML field, no traceback, and nothing written to the working folder.

The hypothesis fuzz over the same schemas is ``test_fuzz_cli.py``; these are the fixed cases a
user reported, kept by name.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cli_helpers import run_cli

ACCOUNT = ["account", "--sample-rate", "0.03", "--steps", "10", "--delta", "1e-5"]
SEARCH = ["search", "--epsilons", "2", "--delta", "1e-5", "--sample-rate", "0.03", "--steps", "10", "--workers", "0"]
AUDIT = ["audit", "--mechanism", "laplace", "--u", "0.5", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5"]
HEAD = "model: {trainable: head}\ndata: {max_train_examples: 100, max_eval_examples: 50}\n"

#: (id, files to create, argv, exit code, text the one line must contain)
CASES = [
    ("laplace-u-overflows-pld", {}, [*ACCOUNT, "--mechanism", "laplace", "--u", "710", "--accountant", "pld"], 2,
     "accountant: 'pld' cannot evaluate"),
    ("gaussian-sigma-huge-rdp", {}, [*ACCOUNT, "--mechanism", "gaussian", "--sigma", "1e300"], 2,
     "--sigma: must be in"),
    ("gaussian-sigma-huge-prv", {}, [*ACCOUNT, "--mechanism", "gaussian", "--sigma", "1e200", "--accountant", "prv"],
     2, "--sigma: must be in"),
    ("sample-rate-subnormal-pld", {}, [*ACCOUNT[:1], "--mechanism", "gaussian", "--sigma", "1", "--sample-rate",
     "1e-320", "--steps", "10", "--delta", "1e-5", "--accountant", "pld"], 2, "--sample-rate: must be in"),
    ("params-not-utf8", {"p.json": b"\xff\xfe{}"}, [*ACCOUNT, "--mechanism", "lmo", "--params", "p.json"], 2,
     "--params: p.json is not UTF-8"),
    ("trial-yaml-not-utf8", {"t.yaml": b"privacy: {mechanism: gaussian, epsilon: 2}\n# \xff\xfe\n"},
     ["train", "--config", "t.yaml"], 2, "--config: t.yaml is not UTF-8"),
    ("epochs-inf", {"t.yaml": (HEAD + "privacy: {mechanism: gaussian, epsilon: 2}\ntraining: {epochs: .inf}\n")},
     ["train", "--config", "t.yaml"], 2, "training.epochs: input should be a finite number"),
    ("clip-inf", {"t.yaml": HEAD + "privacy: {mechanism: gaussian, epsilon: 2, clip: .inf}\n"},
     ["train", "--config", "t.yaml"], 2, "privacy.clip: input should be a finite number"),
    ("epsilon-inf-named-as-yaml", {"t.yaml": "privacy: {mechanism: gaussian, epsilon: .inf}\n"},
     ["train", "--config", "t.yaml"], 2, "privacy.epsilon:"),
    ("epsilon-true", {"t.yaml": "privacy: {mechanism: gaussian, epsilon: true}\n"},
     ["train", "--config", "t.yaml"], 2, "privacy.epsilon: must be a value of its type, not true or false"),
    ("sweep-top-level-epsilon", {"s.yaml": "epsilon: 2\nprivacy: {epsilons: [1]}\n"},
     ["sweep", "--config", "s.yaml"], 2, "epsilon: unknown field"),
    ("model-path-is-a-file", {"f": b"x", "t.yaml": "model: {trainable: head, path: f}\n"
     "privacy: {mechanism: gaussian, epsilon: 2}\n"}, ["train", "--config", "t.yaml"], 2,
     "is a file, not a model folder"),
    ("search-out-is-a-folder", {"d/keep": b""}, [*SEARCH, "--out", "d"], 2, "--out: d is a folder"),
    ("search-out-unwritable", {}, [*SEARCH, "--out", "/proc/nope/x.json"], 2, "--out: cannot write /proc/nope/x.json"),
    ("report-out-is-a-file", {"existing": b""}, ["report", "--experiment", "x", "--out", "existing"], 2,
     "--out: existing exists and is not a folder"),
    ("report-run-id-without-store", {}, ["report", "--experiment", "x", "--run-id", "0123456789abcdef0123456789abcdef",
     "--out", "rep"], 2, "no MLflow tracking store"),
    ("report-missing-experiment", {}, ["report", "--experiment", "does-not-exist", "--out", "rep"], 2,
     "no MLflow tracking store"),
    ("audit-huge-dim", {}, [*AUDIT, "--dim", "10000000000", "--canaries", "1000000000"], 2,
     "--dim: must be an integer"),
    ("audit-seed-float", {}, [*AUDIT, "--dim", "100", "--canaries", "10", "--seed", "1e30"], 2, "--seed"),
    ("sweep-storage-unwritable", {"s.yaml": HEAD + "privacy: {epsilons: [8], mechanisms: [gaussian]}\n"
     "storage_path: /proc/nope/sweeps\n"}, ["sweep", "--config", "s.yaml"], 2, "storage_path: cannot write"),
    ("delta-at-least-one-over-n", {"t.yaml": "model: {trainable: head}\ndata: {max_train_examples: 50, "
     "max_eval_examples: 20}\nprivacy: {mechanism: gaussian, epsilon: 2, delta: 0.05}\n"
     "training: {batch_size: 10}\n"}, ["train", "--config", "t.yaml"], 2,
     "privacy.delta: 0.05 is >= 1/N = 0.02 for N = 50 training examples"),
    ("sweep-delta-at-least-one-over-n", {"s.yaml": HEAD + "privacy: {epsilons: [8], mechanisms: [gaussian], "
     "delta: 0.01}\n"}, ["sweep", "--config", "s.yaml"], 2, "privacy.delta: 0.01 is >= 1/N = 0.01 for N = 100"),
    ("search-ray-address-unreachable", {}, [*SEARCH[:-2], "--address", "127.0.0.2:1", "--out", "s.json"], 1,
     "--address: no Ray cluster answers at 127.0.0.2:1"),
]  # fmt: skip


@pytest.mark.parametrize(("files", "argv", "code", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reported_inputs_exit_with_one_line_and_write_nothing(capsys, tmp_path, monkeypatch, files, argv, code, needle):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("LMODP_CONNECT_TIMEOUT", "5")
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(body if isinstance(body, bytes) else body.encode())
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = run_cli(capsys, *argv)
    assert r.code == code, r.err
    assert r.out == "" and len(r.err.splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert needle in r.err, r.err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_an_unreachable_tracking_server_fails_a_trial_fast(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.2:1")
    monkeypatch.setenv("LMODP_CONNECT_TIMEOUT", "5")
    (tmp_path / "t.yaml").write_text(HEAD + "privacy: {mechanism: gaussian, epsilon: 2}\n")
    started = time.monotonic()
    r = run_cli(capsys, "train", "--config", "t.yaml")
    assert time.monotonic() - started < 20
    assert r.code == 1 and len(r.err.splitlines()) == 1, r.err
    assert "MLflow tracking server http://127.0.0.2:1 does not answer" in r.err
    assert sorted(Path(p).name for p in tmp_path.iterdir()) == ["t.yaml"]

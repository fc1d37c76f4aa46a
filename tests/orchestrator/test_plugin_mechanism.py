"""A plug-in mechanism, installed as a user installs one: ``examples/plugin-mechanism`` (the
``laplace-b`` template) pip-installed offline into a temporary target directory put on the
``PYTHONPATH`` of the real ``lmo-dp`` console script, which finds it through the
``lmo_dp.mechanisms`` entry point.

``account`` with ``--param b=2`` prints the built-in Laplace's epsilon at ``u0 = 1/b = 0.5``
under ``rdp`` and ``pld``; ``calibrate`` finds ``b``; a bad ``b`` exits 2 with one line naming
its range; a one-trial sweep over ``laplace-b`` trains it (with the plug-in's torch sampler)
and its report names it. Slow: pip, Ray and training.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_console

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "examples" / "plugin-mechanism"
ACCOUNTING = ["--sample-rate", "0.01", "--steps", "100", "--delta", "1e-5", "--json"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a shell where the template is installed (offline, into a target dir)."""
    target = tmp_path_factory.mktemp("plugin") / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(TEMPLATE)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert (target / "lmo_dp_laplace_b" / "__init__.py").is_file()
    return {"PYTHONPATH": str(target)}


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_account_equals_the_builtin_laplace_at_u0_one_over_b(plugin_env, accountant):
    plug = run_console("account", "--mechanism", "laplace-b", "--param", "b=2", "--accountant", accountant,
                       *ACCOUNTING, env=plugin_env)  # fmt: skip
    assert plug.code == 0, plug.err
    builtin = run_console("account", "--mechanism", "laplace", "--u", "0.5", "--accountant", accountant, *ACCOUNTING)
    assert builtin.code == 0, builtin.err
    got, want = plug.json(), builtin.json()
    assert got.pop("mechanism") == "laplace-b" and want.pop("mechanism") == "laplace"
    assert got == want


def test_calibrate_finds_b_and_a_bad_b_is_refused(plugin_env):
    r = run_console("calibrate", "--mechanism", "laplace-b", "--epsilon", "2", *ACCOUNTING, env=plugin_env)
    assert r.code == 0, r.err
    out = r.json()
    assert out["mechanism"] == "laplace-b" and out["epsilon"] <= 2.0
    check = run_console("account", "--mechanism", "laplace-b", "--param", f"b={out['b']!r}", *ACCOUNTING,
                        env=plugin_env)  # fmt: skip
    assert check.code == 0 and check.json()["epsilon"] == pytest.approx(out["epsilon"], rel=1e-9)
    bad = run_console("account", "--mechanism", "laplace-b", "--param", "b=0", *ACCOUNTING, env=plugin_env)
    assert bad.code == 2 and bad.out == ""
    assert len(bad.err.strip().splitlines()) == 1 and "b" in bad.err and "must be in [0.001, " in bad.err


def test_without_the_plugin_the_name_is_refused():
    r = run_console("account", "--mechanism", "laplace-b", "--param", "b=2", *ACCOUNTING)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "laplace-b" in r.err


def test_a_one_trial_sweep_trains_the_plugin_and_reports_it(plugin_env, tmp_path):
    sweep = {
        "experiment": "plugin-sweep",
        "model": {"task": "classification", "trainable": "head", "max_length": 48},
        "data": {"name": "movie-reviews", "max_train_examples": 1000, "max_eval_examples": 300},
        "privacy": {"epsilons": [8.0], "delta": 1e-5, "mechanisms": ["laplace-b"]},
        "search": {"objective": "mean-abs", "space": "paper", "strategy": "grid"},
        "training": {"epochs": 1},
        "non_private": False,
        "seeds": [0],
        "resources": {"cpus_per_trial": 1, "workers": 1},
        "max_concurrent_trials": 1,
        "max_retries": 0,
        "storage_path": str(tmp_path / "store"),
    }
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep))
    env = {**plugin_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "CI": "1"}
    r = run_console("sweep", "--config", config, "--json", cwd=tmp_path, env=env)
    assert r.code == 0, r.err[-2000:]
    out = r.json()
    (trial,) = out["trials"]
    assert trial["mechanism"] == "laplace-b" and trial["status"] == "finished"
    assert trial["epsilon"] <= 8.0
    assert [c["mechanism"] for c in out["cells"]] == ["laplace-b"]
    assert "laplace-b" in Path(out["report"]).read_text()

"""Private hyperparameter selection in sweeps (fast, no Ray): the tuning section's validation,
the law of K per cell (seeded, chi-square), the drawn hyperparameters, each cell's noise
calibrated so the selected run meets the target, trial specs and the selection of the best run."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats
from test_sweep import sweep_dict
from test_sweep_grid import SEARCH

from noise_search.accountants import RdpAccountant
from noise_search.errors import ParameterError
from noise_search.events import RandomChoiceDpEvent, dp_sgd_event, tuned_event
from noise_search.mechanisms import Gaussian, Laplace
from noise_search.tuning import TuningDistribution
from orchestrator.selection import select, with_tuning
from orchestrator.sweep import trial_specs
from orchestrator.sweep.tuning import _calibrate_cell, calibrate_cells, draw_cells, draw_runs, tuning_summary
from orchestrator.sweep_config import SweepConfig
from trainers.budget import make_step_plan

TUNING = {
    "mean": 4,
    "shape": 1,
    "seed": 3,
    "space": {"learning_rate": {"low": 0.01, "high": 1.0, "log": True}, "clip": [0.3, 1.0], "epochs": [1, 3]},
}


def tuned_config(tmp_path, tuning=None, **overrides) -> SweepConfig:
    d = sweep_dict(tmp_path)
    d.pop("seeds")
    d.update(
        {
            "model": {"trainable": "head"},
            "privacy": {"epsilons": [1.0, 8.0], "mechanisms": ["gaussian", "laplace", "lmo"]},
            "training": {"batch_size": 20},
            "tuning": tuning or TUNING,
            **overrides,
        }
    )
    return SweepConfig.from_dict(d)


PLAN = SimpleNamespace(n_train=400, batch_size=20, sample_rate=20 / 400, steps=make_step_plan(400, 20).steps)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tuning": {"mean": 0}}, "tuning.mean"),
        ({"tuning": {"mean": 1}}, "tuning.mean"),
        ({"tuning": {"mean": 3, "shape": -1}}, "tuning.shape"),
        ({"tuning": {"mean": 3, "shape": -5}}, "tuning.shape"),
        ({"tuning": {"mean": 3, "shape": "geometric"}}, "tuning.shape"),
        ({"tuning": {"mean": 3, "noise": "both"}}, "tuning.noise"),
        ({"tuning": {"mean": 3, "space": {"learning_rate": {"low": 0.5, "high": 0.1}}}},
         "tuning.space.learning_rate.high"),
        ({"tuning": {"mean": 3, "space": {"clip": [0.5, 0.5]}}}, "tuning.space.clip"),
        ({"tuning": {"mean": 3, "space": {"epochs": [0, 2]}}}, "tuning.space.epochs"),
        ({"tuning": {"mean": 3, "space": {"momentum": [0.9]}}}, "tuning.space.momentum"),
        ({"tuning": {"mean": 3, "overrides": {"laplace": {"clip": [1.0]}}},
          "privacy": {"epsilons": [1.0], "mechanisms": ["gaussian"]}}, "tuning.overrides.laplace"),
        ({"tuning": {"mean": 3}, "privacy": {"epsilons": [1.0], "mechanisms": ["gaussian"], "accountant": "pld"}},
         "privacy.accountant"),
        ({"tuning": {"mean": 3}, "grid": {"gaussian": {"learning_rate": [0.1]}}}, "grid"),
        ({"tuning": {"mean": 3}, "seeds": [0, 1]}, "seeds"),
        ({"tuning": {"mean": 3, "space": {"clip": [0.5]}}, "privacy": {"epsilons": [1.0], "clip": 1.0}},
         "tuning.space.clip"),
        ({"tuning": {"mean": 3, "space": {"epochs": [1, 2]}}, "training": {"steps": 10}}, "tuning.space.epochs"),
    ],
)  # fmt: skip
def test_bad_tuning_sections_name_their_field(tmp_path, change, field):
    d = sweep_dict(tmp_path)
    d.pop("seeds")
    d.update(change)
    with pytest.raises(ParameterError) as err:
        SweepConfig.from_dict(d)
    assert str(err.value).startswith(f"{field}:"), str(err.value)


def test_bad_tuning_section_exits_2_from_the_cli(capsys, tmp_path, monkeypatch):
    import yaml
    from cli_helpers import run_cli

    monkeypatch.chdir(tmp_path)
    d = sweep_dict(tmp_path)
    d.pop("seeds")
    d["tuning"] = {"mean": -2, "shape": 1}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    r = run_cli(capsys, "sweep", "--config", "s.yaml")
    assert r.code == 2 and r.err.count("\n") == 1 and "tuning.mean: must be in (1, " in r.err, r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize("shape", [1.0, 0.0, -0.5, "poisson"])
def test_k_per_cell_follows_the_tuning_law(tmp_path, shape):
    """K over 3,000 cells (each seeded by the tuning seed and its index): chi-square against the
    law's probability mass function, and its mean."""
    cfg = tuned_config(tmp_path, {"mean": 3, "shape": shape, "seed": 11})
    ks = np.array([len(draw_runs(cfg, i, "gaussian")) for i in range(3000)])
    dist = TuningDistribution.from_mean(3, math.inf if shape == "poisson" else shape)
    top = 25
    observed = np.bincount(np.minimum(ks, top), minlength=top + 1).astype(float)
    expected = dist.pmf(np.arange(top + 1)) * len(ks)
    expected[top] = len(ks) - expected[:top].sum()
    keep = expected >= 5
    _, p_value = stats.chisquare(
        np.append(observed[keep], observed[~keep].sum()), np.append(expected[keep], expected[~keep].sum())
    )
    assert p_value > 1e-3
    assert ks.mean() == pytest.approx(3.0, rel=0.08)
    if shape != "poisson":
        assert ks.min() >= 1


def test_drawn_hyperparameters_stay_in_their_space_and_repeat(tmp_path):
    cfg = tuned_config(tmp_path, {**TUNING, "overrides": {"laplace": {"learning_rate": [0.2, 0.4]}}}, non_private=True)
    cells = draw_cells(cfg)
    assert [(c.mechanism, c.epsilon) for c in cells] == [
        ("gaussian", 1.0), ("laplace", 1.0), ("lmo", 1.0), ("gaussian", 8.0), ("laplace", 8.0), ("lmo", 8.0),
        ("none", None),
    ]  # fmt: skip
    assert draw_cells(cfg) == cells  # seeded by the config alone: a resume draws the same runs
    runs = [(c.mechanism, r) for c in cells for r in c.runs]
    assert len(runs) == cfg.trial_count() > 7
    for mech, r in runs:
        if mech == "laplace":
            assert r.learning_rate in (0.2, 0.4)
        else:
            assert 0.01 <= r.learning_rate <= 1.0
        assert r.clip in ((None,) if mech == "none" else (0.3, 1.0))
        assert r.epochs in (1, 3)
    lrs = np.log([r.learning_rate for m, r in runs if m != "laplace"])
    assert lrs.min() < np.log(0.1) < lrs.max()  # spread over the log range
    other = tuned_config(tmp_path, {**TUNING, "seed": 4})
    assert [len(c.runs) for c in draw_cells(other)] != [len(c.runs) for c in cells[:6]] or draw_cells(other) != cells


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace", "lmo"])
def test_cell_noise_makes_the_selected_run_meet_the_target(tmp_path, mechanism):
    cfg = tuned_config(tmp_path)
    cell = next(c for c in draw_cells(cfg) if c.mechanism == mechanism and c.epsilon == 8.0)
    from orchestrator.sweep.specs import noise_params

    out = _calibrate_cell(cfg, PLAN, cell, noise_params(mechanism, SEARCH.row(8.0)))
    assert out.note is None and out.accountant == "rdp"
    assert out.epsilon_per_run < out.epsilon_tuned <= 8.0
    assert out.epsilon_tuned == pytest.approx(8.0, rel=1e-3)
    # recomputed independently: the worst of the epochs the space allows (1 and 3), then tuning
    from noise_search.mechanisms import LMO

    params = dict(out.params)
    mech = {"gaussian": lambda: Gaussian(params["sigma"]), "laplace": lambda: Laplace(params["u0"])}.get(
        mechanism, lambda: LMO.from_dict(params)
    )()
    runs = RandomChoiceDpEvent(
        tuple(dp_sgd_event(mech, PLAN.sample_rate, make_step_plan(400, 20, epochs=e).steps) for e in (1, 3))
    )
    tuned = RdpAccountant().compose(tuned_event(runs, 4, 1.0)).get_epsilon(1e-5)
    assert tuned == pytest.approx(out.epsilon_tuned, rel=1e-9) and tuned <= 8.0
    longest = RdpAccountant().compose(dp_sgd_event(mech, PLAN.sample_rate, make_step_plan(400, 20, epochs=3).steps))
    assert longest.get_epsilon(1e-5) == pytest.approx(out.epsilon_per_run, rel=1e-9)


def test_per_run_noise_meets_the_target_per_run_and_states_the_larger_tuned_epsilon(tmp_path):
    cfg = tuned_config(tmp_path, {**TUNING, "noise": "per_run"})
    cells = calibrate_cells(cfg, PLAN, SEARCH, draw_cells(cfg))
    gaussian = next(c for c in cells if c.mechanism == "gaussian" and c.epsilon == 1.0)
    assert gaussian.epsilon_per_run <= 1.0 < gaussian.epsilon_tuned
    assert gaussian.epsilon_per_run == pytest.approx(1.0, rel=1e-3)
    # the search found no LMO at epsilon 1: that cell's runs are infeasible, with the reason
    lmo = next(c for c in cells if c.mechanism == "lmo" and c.epsilon == 1.0)
    assert lmo.params is None and "no parameters" in lmo.note
    specs, infeasible = trial_specs(cfg, SEARCH, cells)
    assert len(infeasible) == len(lmo.runs)
    assert {s.key for s in infeasible} == {f"eps=1_lmo_run={r.index}" for r in lmo.runs}
    assert all(s.params == gaussian.params for s in specs if s.mechanism == "gaussian" and s.epsilon == 1.0)
    assert all(s.tuning_run is not None and s.epochs in (1, 3) for s in specs)
    summary = tuning_summary(cfg, cells)
    assert summary["distribution"] == "geometric" and summary["noise"] == "per_run"
    assert sum(c["runs"] for c in summary["cells"]) == len(specs) + len(infeasible)
    with pytest.raises(ValueError):
        trial_specs(cfg, SEARCH)


def test_selection_returns_the_best_run_by_validation_with_its_tuned_epsilon():
    rows = [
        {"mechanism": "gaussian", "epsilon_target": 2.0, "learning_rate": lr, "clip": 1.0, "tuning_run": i,
         "epochs": 2, "val_accuracy": val, "accuracy": test, "epsilon": 0.9}
        for i, (lr, val, test) in enumerate([(0.1, 0.70, 0.72), (0.1, 0.75, 0.71), (0.3, 0.60, 0.80)])
    ]  # fmt: skip
    (chosen,) = select(rows)
    assert (chosen.tuning_run, chosen.val_mean, chosen.test_mean, chosen.seeds) == (1, 0.75, 0.71, 1)
    assert chosen.configurations == 3  # the same learning rate twice is still two runs
    cells = [{"mechanism": "gaussian", "epsilon": 2.0, "runs": 3, "epsilon_per_run": 0.9, "epsilon_tuned": 1.99,
              "accountant": "rdp"}]  # fmt: skip
    (tuned,) = with_tuning([chosen], cells)
    assert (tuned.runs, tuned.epsilon_per_run, tuned.epsilon_tuned, tuned.tuning_accountant) == (3, 0.9, 1.99, "rdp")


def test_the_tuning_example_validates_and_draws_its_runs():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cfg = SweepConfig.from_yaml(root / "examples" / "sweep-tuning.yaml")
    assert cfg.tuning is not None and cfg.tuning.noise == "selected" and cfg.tuning.shape_value == 1.0
    cells = draw_cells(cfg)
    assert len(cells) == 2 * 2 + 1 and cfg.trial_count() == sum(len(c.runs) for c in cells)
    laplace = [r.learning_rate for c in cells if c.mechanism == "laplace" for r in c.runs]
    assert all(0.1 <= lr <= 3.0 for lr in laplace)  # the override's range


def test_runs_may_draw_the_trainable_set_and_the_noise_covers_every_plan(tmp_path):
    """A run's trainable set takes its own recipe (batch size, epochs): the cell's noise is
    calibrated over every (q, T) the space allows, exactly the plans the trials resolve to."""
    from orchestrator.sweep.tuning import run_plans

    space = {"learning_rate": [0.05], "trainable": ["head", "lora", "full"]}
    cfg = tuned_config(tmp_path, {"mean": 3, "shape": 1, "space": space}, training={})
    n = 4000
    plans = run_plans(cfg, n, "gaussian", cfg.tuning.space)
    resolved = set()
    for trainable in ("head", "lora", "full"):
        model = cfg.model_settings(trainable)
        assert model.trainable == trainable and (model.lora is not None) == (trainable == "lora")
        trial = cfg.trial_config(
            mechanism="gaussian", epsilon=8.0, seed=0, learning_rate=0.05, params={"sigma": 1.0}, name="t",
            trainable=trainable,
        ).resolve(n)  # fmt: skip
        t = trial.training
        p = make_step_plan(n, t.batch_size, epochs=t.epochs, steps=t.steps)
        resolved.add((p.sample_rate, p.steps))
    assert set(plans) == resolved and len(plans) >= 2  # the recipes' plans differ
    cell = next(c for c in draw_cells(cfg) if c.mechanism == "gaussian" and c.epsilon == 8.0)
    assert {r.trainable for r in draw_cells(cfg)[0].runs + cell.runs} <= {"head", "lora", "full"}
    plan = SimpleNamespace(n_train=n, batch_size=20, sample_rate=0.05, steps=20)
    from orchestrator.sweep.specs import noise_params

    out = _calibrate_cell(cfg, plan, cell, noise_params("gaussian", SEARCH.row(8.0)))
    sigma = out.params["sigma"]
    worst = RandomChoiceDpEvent(tuple(dp_sgd_event(Gaussian(sigma), q, t) for q, t in plans))
    assert RdpAccountant().compose(tuned_event(worst, 3, 1.0)).get_epsilon(1e-5) == pytest.approx(out.epsilon_tuned)
    assert out.epsilon_tuned <= 8.0
    for q, t in plans:  # every plan alone is within the per-run epsilon
        assert RdpAccountant().compose(dp_sgd_event(Gaussian(sigma), q, t)).get_epsilon(1e-5) <= out.epsilon_per_run
    specs, _ = trial_specs(cfg, SEARCH, calibrate_cells(cfg, plan, SEARCH, [cell]))
    assert [s.trainable for s in specs] == [r.trainable for r in cell.runs]

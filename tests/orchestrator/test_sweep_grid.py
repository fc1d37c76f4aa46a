"""The sweep's grid (fast, no Ray): per-mechanism learning-rate / clip grids, the non-private
reference, trial keys, the shared plan, the majority baseline and validation-only selection."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_cli
from test_sweep import sweep_dict, write_config

from noise_search.search_result import SearchResult
from orchestrator.selection import select
from orchestrator.sweep import majority_baseline, trial_key, trial_specs
from orchestrator.sweep.plan import _private_training
from orchestrator.sweep_config import SweepConfig
from trainers.data import Split, TextDataset

SEARCH = SearchResult.from_dict(
    {
        "results": [
            {
                "epsilon_target": e,
                "feasible": e > 1,
                "params": {"a1": 1, "a3": 0, "a4": 0, "G_k": 4, "G_theta": 1, "E_lambda": 1, "U_a": 0, "U_b": 1}
                if e > 1
                else None,
                "laplace": {"u": 0.3 * e},
                "gaussian": {"sigma": 5 / e},
            }
            for e in (1.0, 8.0)
        ]
    }
)


def grid_config(tmp_path, **overrides) -> SweepConfig:
    """A head-only sweep config; top-level keys of ``overrides`` replace whole sections."""
    d = sweep_dict(tmp_path)
    d.update(
        {
            "model": {"trainable": "head"},
            "privacy": {"epsilons": [1.0, 8.0], "mechanisms": ["gaussian", "laplace", "lmo"]},
            "training": {},
            "seeds": [0, 1],
            **overrides,
        }
    )
    return SweepConfig.from_dict(d)


def test_grids_non_private_and_infeasible_points(tmp_path) -> None:
    cfg = grid_config(
        tmp_path,
        grid={"gaussian": {"learning_rate": [0.03, 0.1], "clip": [0.3, 1.0]}, "none": {"learning_rate": [0.01]}},
        non_private=True,
    )
    specs, infeasible = trial_specs(cfg, SEARCH)
    by_mech: dict[str, list] = {}
    for s in specs:
        by_mech.setdefault(s.mechanism, []).append(s)
    assert len(by_mech["gaussian"]) == 2 * 2 * 2 * 2  # epsilons x lrs x clips x seeds
    assert len(by_mech["laplace"]) == 2 * 2 and len(by_mech["lmo"]) == 2  # lmo infeasible at epsilon 1
    assert [s.key for s in infeasible] == ["eps=1_lmo_seed=0", "eps=1_lmo_seed=1"]
    assert [s.key for s in by_mech["none"]] == ["none_seed=0", "none_seed=1"]
    assert all(s.epsilon is None and s.params is None and s.learning_rate == 0.01 for s in by_mech["none"])
    assert {s.key for s in by_mech["gaussian"]} >= {"eps=8_gaussian_seed=1_lr=0.1_clip=0.3"}
    assert all(s.learning_rate is None and s.clip is None for s in by_mech["laplace"])  # the recipe's
    assert len({s.key for s in specs + infeasible}) == len(specs) + len(infeasible)
    assert cfg.trial_count() == len(specs) + len(infeasible)


def test_trial_configs_of_grid_points_resolve_to_their_recipe(tmp_path) -> None:
    cfg = grid_config(tmp_path, grid={"laplace": {"clip": [0.5]}}, non_private=True)
    lap = cfg.trial_config(
        mechanism="laplace", epsilon=8.0, seed=1, learning_rate=None, params={"u0": 2.0}, name="x", clip=0.5
    )
    resolved = lap.resolve(60)
    assert resolved.privacy.clip == 0.5 and resolved.training.learning_rate == 0.2 and resolved.recipe.name == "head/l1"
    ref = cfg.trial_config(mechanism="none", epsilon=None, seed=0, learning_rate=None, params=None, name="r")
    assert ref.privacy.mechanism == "none" and ref.resolve(60).recipe.name == "head/none"


def test_keys_are_stable_for_existing_grids() -> None:
    assert trial_key("gaussian", 8.0, 0, 0.01, 1) == "eps=8_gaussian_seed=0"
    assert trial_key("gaussian", 8.0, 0, 0.01, 2) == "eps=8_gaussian_seed=0_lr=0.01"
    assert trial_key("none", None, 3, 0.1, 1, None, 1) == "none_seed=3"


def test_private_trials_share_one_plan(tmp_path) -> None:
    cfg = grid_config(tmp_path)
    assert _private_training(cfg, 8491) == {"batch_size": 2048, "epochs": 40.0, "steps": None}
    fixed = grid_config(tmp_path, training={"batch_size": 10, "epochs": 2})
    assert _private_training(fixed, 60) == {"batch_size": 10, "epochs": 2.0, "steps": None}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"grid": {"gaussian": {"learning_rate": []}}}, "grid.gaussian.learning_rate"),
        ({"grid": {"laplace": {"clip": [0.0]}}}, "grid.laplace.clip"),
        ({"grid": {"laplace": {"clip": [1.0, 1.0]}}}, "grid.laplace.clip"),
        ({"grid": {"none": {"learning_rate": [0.1]}}}, "grid.none: needs non_private"),
        ({"grid": {"none": {"clip": [0.1]}}, "non_private": True}, "grid.none.clip"),
        ({"grid": {"cauchy": {"clip": [0.1]}}}, "grid.cauchy"),
        ({"grid": {"gaussian": {"learning_rate": [0.1]}}, "learning_rates": [0.1, 0.2]}, "not both"),
        ({"privacy": {"mechanisms": ["gaussian"]}, "grid": {"laplace": {"clip": [1.0]}}}, "not in privacy.mechanisms"),
    ],
)
def test_bad_grids_exit_2_with_one_line(capsys, tmp_path, monkeypatch, overrides, needle) -> None:
    monkeypatch.chdir(tmp_path)
    r = run_cli(capsys, "sweep", "--config", write_config(tmp_path, **overrides), "--json")
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and needle in lines[0], r.err
    assert not (tmp_path / "store").exists() and not (tmp_path / "mlruns-lmodp").exists()


def test_majority_baseline_is_the_best_constant_prediction() -> None:
    ds = TextDataset(
        "t",
        Split(("a",) * 5, (0, 0, 0, 1, 1)),
        Split(("b",) * 4, (1, 1, 1, 0)),
        Split(("c",) * 2, (0, 1)),
        ("n", "p"),
        "",
        "",
    )
    assert majority_baseline(ds) == {"train_accuracy": 0.6, "val_accuracy": 0.75, "test_accuracy": 0.5}
    unlabelled = TextDataset("t", Split(("a",)), Split(()), Split(()), None, "", "")
    assert majority_baseline(unlabelled) is None


def row(mech, eps, lr, clip, seed, val, test):
    return {
        "mechanism": mech,
        "epsilon_target": eps,
        "learning_rate": lr,
        "clip": clip,
        "seed": seed,
        "val_accuracy": val,
        "accuracy": test,
        "epsilon": eps,
    }


def test_selection_uses_validation_only_and_reports_test_over_seeds() -> None:
    rows = [
        # lr 0.1 is best on test but worse on validation: it must not be chosen
        row("gaussian", 1.0, 0.1, 1.0, 0, 0.60, 0.90),
        row("gaussian", 1.0, 0.1, 1.0, 1, 0.62, 0.88),
        row("gaussian", 1.0, 0.03, 1.0, 0, 0.70, 0.71),
        row("gaussian", 1.0, 0.03, 1.0, 1, 0.72, 0.75),
        row("none", None, 0.01, None, 0, 0.8, 0.81),
        {**row("laplace", 1.0, 0.1, 1.0, 0, None, None), "accuracy": None},  # a failed trial
    ]
    chosen = {(s.mechanism, s.epsilon_target): s for s in select(rows)}
    g = chosen[("gaussian", 1.0)]
    assert (g.learning_rate, g.configurations, g.seeds) == (0.03, 2, 2)
    assert (g.test_mean, g.test_min, g.test_max) == pytest.approx((0.73, 0.71, 0.75))
    assert chosen[("none", None)].test_mean == 0.81 and ("laplace", 1.0) not in chosen
    assert [s.mechanism for s in select(rows)] == ["gaussian", "none"]


def test_example_sweeps_and_the_demo_default_validate() -> None:
    import yaml

    from orchestrator.commands.demo import default_config_text

    root = Path(__file__).resolve().parents[2]
    for name in ("sweep-tiny.yaml", "sweep-demo.yaml"):
        cfg = SweepConfig.from_yaml(root / "examples" / name)
        assert cfg.model.trainable == "head" and cfg.non_private
    smoke = SweepConfig.from_yaml(root / "examples" / "sweep-smoke.yaml")  # the docs' set-up check: one trial
    assert smoke.trial_count() == 1 and smoke.data == SweepConfig.from_yaml(root / "examples" / "sweep-tiny.yaml").data
    seeds = SweepConfig.from_yaml(root / "examples" / "sweep-laplace-vs-lmo.yaml")  # utility.md's seed check
    assert seeds.trial_count() == 2 * 3 and seeds.privacy.mechanisms == ("laplace", "lmo")
    assert seeds.statistics.seeds.looks() == (3, 5, 8, 12)
    demo = SweepConfig.from_dict(yaml.safe_load(default_config_text()))
    assert demo == SweepConfig.from_yaml(root / "examples" / "sweep-demo.yaml")
    assert demo.trial_count() == 3 * (3 * 3 + 1) and demo.data.max_train_examples is None
    # the configs that teach set seeds and statistics: at least 3 seeds per cell, Laplace vs LMO compared
    for cfg in (demo, seeds, SweepConfig.from_yaml(root / "examples" / "sweep-tiny.yaml")):
        assert len(cfg.seeds) >= 3 and cfg.statistics is not None and ("laplace", "lmo") in cfg.compared_pairs()


def test_lmo_accountant_reaches_the_lmo_trials_only(tmp_path) -> None:
    privacy = {"epsilons": [1.0, 8.0], "mechanisms": ["gaussian", "laplace", "lmo"], "accountant": "pld"}
    cfg = grid_config(tmp_path, privacy={**privacy, "lmo_accountant": "rdp-hidden-u"})
    params = SEARCH.rows[1].lmo.to_dict()
    params.pop("mechanism")
    lmo = cfg.trial_config(mechanism="lmo", epsilon=8.0, seed=0, learning_rate=None, params=params, name="x")
    lap = cfg.trial_config(mechanism="laplace", epsilon=8.0, seed=0, learning_rate=None, params={"u0": 2.0}, name="y")
    assert lmo.privacy.accountant == "rdp-hidden-u" and lap.privacy.accountant == "pld"
    assert (
        grid_config(tmp_path, privacy=privacy)
        .trial_config(mechanism="lmo", epsilon=8.0, seed=0, learning_rate=None, params=params, name="z")
        .privacy.accountant
        == "rdp"
    )


@pytest.mark.parametrize(
    ("privacy", "needle"),
    [
        ({"lmo_accountant": "pld"}, "privacy.lmo_accountant"),
        ({"lmo_accountant": "rdp-hidden-u", "accountant": "rdp-hidden-u"}, "privacy.accountant"),
    ],
)
def test_bad_lmo_accountant_exits_2_with_one_line(capsys, tmp_path, privacy, needle) -> None:
    base = sweep_dict(tmp_path)["privacy"]
    path = write_config(tmp_path, privacy={**base, **privacy})
    res = run_cli(capsys, "sweep", "--config", path)
    assert res.code == 2 and needle in res.err and len(res.err.strip().splitlines()) == 1

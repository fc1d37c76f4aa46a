"""Step plan, noise resolution (params, search result file, calibration) and the budget guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from noise_search.accountants import compute_epsilon
from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import LMO, Gaussian, Laplace
from trainers.budget import BudgetExceededError, BudgetGuard, make_step_plan, plan_noise, resolve_mechanism
from trainers.config import PrivacySettings

LMO_PARAMS = {"a1": 0.6, "a3": 0.2, "a4": 0.3, "G_k": 3.0, "G_theta": 1.0, "E_lambda": 2.0, "U_a": 0.2, "U_b": 1.2}


def search_result_file(path, *, feasible=True):
    """A fixture following the schema documented in noise_search.search_result."""
    data = {
        "settings": {
            "delta": 1e-5,
            "sample_rate": 0.01,
            "steps": 100,
            "objective": "mean-abs",
            "gamma": None,
            "space": "paper",
            "strategy": "grid",
        },
        "results": [
            {
                "epsilon_target": 2.0,
                "feasible": feasible,
                "epsilon": 1.95,
                "order": 12.0,
                "objective": 1.4,
                "params": (
                    {**LMO_PARAMS, "components": ["gamma", "exponential", "uniform"], "variant": "per_coordinate"}
                    if feasible
                    else None
                ),
                "laplace": {"u": 0.9, "epsilon": 1.99, "order": 11.0, "objective": 1.1},
                "gaussian": {"sigma": 1.7, "epsilon": 1.98, "order": 10.0, "objective": 1.3, "accountant": "rdp"},
            },
        ],
        "evaluated": 10,
        "seconds": 0.1,
    }
    path.write_text(json.dumps(data))
    return path


def test_delta_of_at_least_one_over_n_is_refused_unless_allowed(caplog):
    plan = make_step_plan(50, 10, epochs=1)
    big = PrivacySettings(mechanism="gaussian", epsilon=2.0, delta=0.05, params={"sigma": 5.0})
    with pytest.raises(ParameterError, match=r"^privacy\.delta: 0\.05 is >= 1/N = 0\.02 for N = 50"):
        plan_noise(big, plan)
    with pytest.raises(ParameterError, match=r"^privacy\.delta: 0\.02 is >= 1/N"):  # exactly 1/N too
        plan_noise(big.model_copy(update={"delta": 0.02}), plan)
    with caplog.at_level("WARNING", logger="lmo_dp.privacy"):
        allowed = plan_noise(big.model_copy(update={"allow_large_delta": True}), plan)
    assert allowed.planned.delta == 0.05 and "above 1/(10 N)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmo_dp.privacy"):
        plan_noise(big.model_copy(update={"delta": 0.005}), plan)  # in (1/(10N), 1/N): a warning
    assert "privacy.delta = 0.005 is above 1/(10 N) = 0.002" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmo_dp.privacy"):
        plan_noise(big.model_copy(update={"delta": 1e-5}), plan)
    assert caplog.text == ""


def test_plan_sample_rate_and_steps():
    plan = make_step_plan(1000, 50, epochs=2.5)
    assert plan.sample_rate == 0.05 and plan.steps == 50
    assert make_step_plan(1000, 50, steps=7).steps == 7
    assert make_step_plan(3, 3, epochs=0.01).steps == 1


def test_batch_larger_than_the_data_is_refused():
    with pytest.raises(ParameterError, match=r"training\.batch_size: .*\(100\), got 101"):
        make_step_plan(100, 101)


def test_plan_over_budget_is_refused_with_both_numbers():
    settings = PrivacySettings(mechanism="gaussian", epsilon=1.0, delta=1e-5, params={"sigma": 0.6})
    plan = make_step_plan(1000, 100, epochs=3)
    planned = compute_epsilon(Gaussian(0.6), sample_rate=0.1, steps=30, delta=1e-5).epsilon
    assert planned > 1.0
    with pytest.raises(BudgetExceededError) as err:
        plan_noise(settings, plan)
    msg = str(err.value)
    assert isinstance(err.value, InputError)
    assert f"{planned:.6g}" in msg and "target 1" in msg and "T = 30" in msg


def test_plan_within_budget_reports_the_core_epsilon():
    settings = PrivacySettings(mechanism="laplace", epsilon=5.0, params={"u0": 0.5})
    plan = make_step_plan(2000, 40, epochs=1)
    pp = plan_noise(settings, plan)
    direct = compute_epsilon(Laplace(0.5), sample_rate=0.02, steps=50, delta=1e-5)
    assert pp.planned == direct and pp.planned.epsilon <= 5.0


@pytest.mark.parametrize("family", ["gaussian", "laplace"])
def test_calibrated_noise_meets_the_target_for_the_plan(family):
    settings = PrivacySettings(mechanism=family, epsilon=2.0, delta=1e-5)
    plan = make_step_plan(500, 25, epochs=2)
    mech, source = resolve_mechanism(settings, plan)
    assert source == "calibrated"
    eps = compute_epsilon(mech, sample_rate=plan.sample_rate, steps=plan.steps, delta=1e-5).epsilon
    assert 1.9 < eps <= 2.0


def test_lmo_from_a_search_result_file(tmp_path):
    path = search_result_file(tmp_path / "search.json")
    settings = PrivacySettings(mechanism="lmo", epsilon=2.0, search_result=str(path))
    mech, source = resolve_mechanism(settings, make_step_plan(10000, 100))
    assert isinstance(mech, LMO) and mech.a1 == 0.6 and mech.E_lambda == 2.0
    assert source == f"search_result:{path}"
    lap, _ = resolve_mechanism(
        PrivacySettings(mechanism="laplace", epsilon=2.0, search_result=str(path)), make_step_plan(100, 1)
    )
    assert lap == Laplace(0.9)
    with pytest.raises(InputError, match="no result for target 3"):
        resolve_mechanism(
            PrivacySettings(mechanism="lmo", epsilon=3.0, search_result=str(path)), make_step_plan(100, 1)
        )
    bad = search_result_file(tmp_path / "infeasible.json", feasible=False)
    with pytest.raises(InputError, match="infeasible"):
        resolve_mechanism(PrivacySettings(mechanism="lmo", epsilon=2.0, search_result=str(bad)), make_step_plan(100, 1))


def test_lmo_calibrate_rescales_to_the_target():
    settings = PrivacySettings(mechanism="lmo", epsilon=1.5, params=LMO_PARAMS, calibrate=True)
    plan = make_step_plan(1000, 20, epochs=1)
    mech, source = resolve_mechanism(settings, plan)
    assert source == "params+calibrated"
    eps = compute_epsilon(mech, sample_rate=plan.sample_rate, steps=plan.steps, delta=1e-5).epsilon
    assert 1.45 < eps <= 1.5


def test_guard_epsilon_after_every_step_equals_the_core_and_stops_before_exceeding():
    mech = Laplace(0.4)
    settings = PrivacySettings(mechanism="laplace", epsilon=1.0, delta=1e-6, params={"u0": 0.4}, on_budget="stop")
    plan = make_step_plan(1000, 50, epochs=10)  # 200 steps: far over budget
    pp = plan_noise(settings, plan)
    assert pp.planned.epsilon > 1.0
    guard = BudgetGuard(pp)
    taken = 0
    while taken < plan.steps and guard.allows_next_step():
        spent = guard.record_step()
        taken += 1
        assert spent == compute_epsilon(mech, sample_rate=0.05, steps=taken, delta=1e-6)
    # it stopped exactly before the first step whose epsilon would exceed the target
    assert 0 < taken < plan.steps
    assert compute_epsilon(mech, sample_rate=0.05, steps=taken, delta=1e-6).epsilon <= 1.0
    assert compute_epsilon(mech, sample_rate=0.05, steps=taken + 1, delta=1e-6).epsilon > 1.0
    assert guard.spent.epsilon <= 1.0 and guard.steps == taken


def test_guard_with_u_hidden_spends_less_than_rdp_and_stops_later():
    """A trial with ``privacy.accountant: rdp-hidden-u``: the plan, every step and the stop all use
    the hidden-u bound (docs/privacy.md, "RDP with u hidden")."""
    raw = json.loads(Path("reference/paper_params/optimized_epsilon_lmo_eps_1.0.json").read_text())
    paper = {k: v for k, v in LMO.from_dict(raw).to_dict().items() if k != "mechanism"}
    kw = dict(mechanism="lmo", epsilon=2.0, delta=1e-6, params=paper, on_budget="stop")
    plan = make_step_plan(1000, 50, epochs=10)  # 200 steps
    hidden = plan_noise(PrivacySettings(**kw, accountant="rdp-hidden-u"), plan)
    revealed = plan_noise(PrivacySettings(**kw), plan)
    assert hidden.accountant == "rdp-hidden-u" and hidden.planned.epsilon < 0.5 * revealed.planned.epsilon

    def steps_allowed(pp) -> int:
        guard, taken = BudgetGuard(pp), 0
        while taken < plan.steps and guard.allows_next_step():
            guard.record_step()
            taken += 1
        return taken

    with_hidden = steps_allowed(hidden)
    assert steps_allowed(revealed) < with_hidden
    expect = compute_epsilon(
        hidden.mechanism, sample_rate=0.05, steps=with_hidden, delta=1e-6, accountant="rdp-hidden-u"
    )
    assert expect.epsilon <= 2.0
    with pytest.raises(ValueError, match=r"privacy\.accountant: 'pld' cannot account the lmo mechanism"):
        PrivacySettings(**kw, accountant="pld")

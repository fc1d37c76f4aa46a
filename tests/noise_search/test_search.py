"""The search: validation, grid == brute force, optimize >= grid, every answer re-checked."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest

from noise_search.accountants import compute_epsilon
from noise_search.calibration import calibrate
from noise_search.errors import ParameterError, UnsupportedError
from noise_search.mechanisms import LMO, Gaussian, Laplace
from noise_search.search import SearchProblem, calibrate_gaussian_rdp, run_search
from noise_search.search.grid import grid_pick
from noise_search.search.rows import TIGHTER_ACCOUNTANT
from noise_search.search_result import SearchResult, SearchRow
from noise_search.spaces import PaperSpace
from orchestrator.serialize import jsonable

# A 324-point sub-grid of the paper grid with a spread of epsilons at these settings.
WEIGHTS = (0.1, 0.3, 0.9)
GAMMA = ((0.5, 1.0), (1.0, 2.0), (3.0, 2.0))  # (G_theta, G_k)
E_LAMBDA = (1.0, 5.0)
UNIFORM = ((1.0, 0.0), (2.0, 1.0))  # (U_b, U_a)
SUB = PaperSpace(weights=WEIGHTS, gamma=GAMMA, e_lambda=E_LAMBDA, uniform=UNIFORM)
Q, T, DELTA = 0.05, 100, 1e-6
TARGETS = (0.3, 1.0, 2.5, 5.0)  # 0.3 is below every candidate's epsilon (smallest ~0.56)


def _objective(mech: LMO, objective: str, gamma: float | None) -> float:
    """The objective through the LMO's own methods."""
    if objective == "mean-abs":
        return mech.mean_abs()
    if objective == "variance":
        return mech.variance()
    return mech.usefulness(gamma)


def _problem(**kw) -> SearchProblem:
    base = {"targets": TARGETS, "delta": DELTA, "sample_rate": Q, "steps": T, "space": SUB, "block_size": 50}
    return SearchProblem(**{**base, **kw})


def _brute_force(objective: str, gamma: float | None) -> dict[float, tuple[float, dict]]:
    """One LMO object per candidate, through the accountant and the LMO methods."""
    found: dict[float, tuple[float, dict]] = {}
    for a1, a3, a4, (gt, gk), el, (ub, ua) in itertools.product(WEIGHTS, WEIGHTS, WEIGHTS, GAMMA, E_LAMBDA, UNIFORM):
        mech = LMO(a1=a1, a3=a3, a4=a4, G_k=gk, G_theta=gt, E_lambda=el, U_a=ua, U_b=ub)
        eps = compute_epsilon(mech, sample_rate=Q, steps=T, delta=DELTA).epsilon
        value = _objective(mech, objective, gamma)
        score = -value if objective == "usefulness" else value
        for t in TARGETS:
            if eps <= t and (t not in found or score < found[t][0]):
                found[t] = (
                    score,
                    {"a1": a1, "a3": a3, "a4": a4, "G_k": gk, "G_theta": gt, "E_lambda": el, "U_a": ua, "U_b": ub},
                )
    return found


@pytest.fixture(scope="module")
def grid_outcome():
    return run_search(_problem())


@pytest.fixture(scope="module")
def optimize_outcome():
    return run_search(_problem(strategy="optimize", optimizer_generations=25, seed=3))


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"targets": ()}, "targets"),
        ({"targets": (1.0, 0.0)}, "targets"),
        ({"targets": (-1.0,)}, "targets"),
        ({"targets": (float("inf"),)}, "targets"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"steps": 0}, "steps"),
        ({"objective": "usefulness"}, "gamma"),
        ({"objective": "usefulness", "gamma": 0.0}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"objective": "median"}, "objective"),
        ({"space": "huge"}, "space"),
        ({"strategy": "anneal"}, "strategy"),
        ({"accountant": "gdp"}, "accountant"),
        ({"seed": -2}, "seed"),
    ],
)
def test_bad_problems_name_the_field(kw, field):
    with pytest.raises(ParameterError) as info:
        _problem(**kw)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_problem_normalises_targets_and_resolves_the_space():
    p = SearchProblem(targets=(3, 0.5, 3, 1), delta=1e-5, sample_rate=0.01, steps=10)
    assert p.targets == (0.5, 1.0, 3.0)
    assert isinstance(p.space, PaperSpace) and p.block_size == 8192 and p.n_blocks == 40
    w = SearchProblem(targets=(1,), delta=1e-5, sample_rate=0.01, steps=10, space="wide", candidates=5000, seed=4)
    assert w.space.size == 5000 and w.space.seed == 4 and w.n_blocks == 3
    assert w.settings()["space"] == "wide"


@pytest.mark.parametrize(("objective", "gamma"), [("mean-abs", None), ("usefulness", 0.6)])
def test_grid_equals_brute_force(objective, gamma, grid_outcome):
    outcome = grid_outcome if objective == "mean-abs" else run_search(_problem(objective=objective, gamma=gamma))
    brute = _brute_force(objective, gamma)
    assert set(brute) == {1.0, 2.5, 5.0}  # the sub-grid has a feasible set for these, none for 0.3
    assert outcome.evaluated == SUB.size == 324
    for row in rows(outcome):
        t = row["epsilon_target"]
        if t not in brute:
            assert row["feasible"] is False and row["params"] is None
            continue
        score, params = brute[t]
        assert row["feasible"] is True and row["source"] == "grid"
        assert {k: row["params"][k] for k in params} == params
        assert row["objective"] == pytest.approx(abs(score), rel=1e-12)


def rows(outcome) -> list[dict]:
    """The outcome's rows in their file / JSON form (the contract users and trainers read)."""
    return [r.to_dict() for r in outcome.rows]


def _recheck(row: dict) -> None:
    t = row["epsilon_target"]
    kw = {"sample_rate": Q, "steps": T, "delta": DELTA}
    if row["feasible"]:
        mech = LMO.from_dict(row["params"])
        spent = compute_epsilon(mech, **kw)
        assert spent.epsilon <= t
        assert spent.epsilon == pytest.approx(row["epsilon"], rel=1e-12) and spent.order == row["order"]
    assert compute_epsilon(Laplace(row["laplace"]["u"]), **kw).epsilon <= t
    assert (
        compute_epsilon(Gaussian(row["gaussian"]["sigma"]), **kw, accountant=row["gaussian"]["accountant"]).epsilon <= t
    )


@pytest.mark.parametrize("which", ["grid", "optimize"])
def test_every_returned_parameter_set_meets_its_target(which, grid_outcome, optimize_outcome):
    outcome = grid_outcome if which == "grid" else optimize_outcome
    for row in rows(outcome):
        _recheck(row)
    # the result file round-trips through the loader trainers use
    loaded = SearchResult.from_dict(json.loads(json.dumps(jsonable(outcome.to_dict()))))
    for t in (1.0, 2.5, 5.0):
        for family in ("lmo", "laplace", "gaussian"):
            mech = loaded.mechanism(family, t)
            assert compute_epsilon(mech, sample_rate=Q, steps=T, delta=DELTA).epsilon <= t


def test_optimize_is_never_worse_than_grid(grid_outcome, optimize_outcome):
    for g, o in zip(rows(grid_outcome), rows(optimize_outcome), strict=True):
        assert o["epsilon_target"] == g["epsilon_target"]
        if g["feasible"]:
            assert o["feasible"] and o["objective"] <= g["objective"]
        if o["source"] == "optimize":  # stays inside the space's continuous hull
            assert all(min(WEIGHTS) <= o["params"][k] <= max(WEIGHTS) for k in ("a1", "a3", "a4"))
    assert any(o["source"] == "optimize" and o["objective"] < g["objective"]
               for g, o in zip(rows(grid_outcome), rows(optimize_outcome), strict=True))  # fmt: skip
    assert optimize_outcome.evaluated > grid_outcome.evaluated


def test_optimize_is_deterministic_for_a_seed(optimize_outcome):
    again = run_search(_problem(strategy="optimize", optimizer_generations=25, seed=3))
    assert jsonable(rows(again)) == jsonable(rows(optimize_outcome))


def test_infeasible_targets_are_reported_with_baselines(grid_outcome):
    row = rows(grid_outcome)[0]
    assert row["epsilon_target"] == 0.3 and row["feasible"] is False
    assert row["params"] is None and row["epsilon"] is None and row["objective"] is None
    assert row["note"].startswith("infeasible") and f"{grid_outcome.grid.min_epsilon:.4g}" in row["note"]
    assert row["laplace"]["u"] > 0 and row["gaussian"]["sigma"] > 0
    _recheck(row)


def test_dominated_lmo_points_say_so(grid_outcome):
    for row in rows(grid_outcome)[1:]:
        lap = row["laplace"]["objective"]
        assert ("laplace" in row["dominated_by"]) == (lap <= row["objective"])
        # Jensen: the calibrated Laplace always beats the mixture under this bound
        assert "laplace" in row["dominated_by"]
        assert "dominated" in row["note"] and "docs/privacy.md section 6" in row["note"]
        assert TIGHTER_ACCOUNTANT in row["note"]  # what README.md says too (tests/test_doc_facts.py)
        assert row["mean_u"] == pytest.approx(LMO.from_dict(row["params"]).mean_u())


def test_fast_gaussian_calibration_matches_calibrate():
    mech, spent = calibrate_gaussian_rdp(1.0, sample_rate=Q, steps=T, delta=DELTA)
    assert spent.epsilon <= 1.0
    assert compute_epsilon(mech, sample_rate=Q, steps=T, delta=DELTA) == spent
    ref = calibrate("gaussian", epsilon=1.0, delta=DELTA, sample_rate=Q, steps=T)
    assert math.isclose(mech.sigma, ref.mechanism.sigma, rel_tol=3e-4)


@pytest.mark.slow  # ~20 PLD calls of ~0.5-1 s each
def test_baselines_with_pld_report_rdp_too_and_still_dominate_the_rdp_lmo():
    outcome = run_search(_problem(targets=(2.5,), accountant="pld"))
    row = rows(outcome)[0]
    kw = {"sample_rate": Q, "steps": T, "delta": DELTA, "accountant": "pld"}
    assert row["gaussian"]["accountant"] == "pld" and row["gaussian_rdp"]["accountant"] == "rdp"
    assert row["gaussian"]["sigma"] < row["gaussian_rdp"]["sigma"]
    assert compute_epsilon(Gaussian(row["gaussian"]["sigma"]), **kw).epsilon <= 2.5
    # Laplace under PLD (proven for L1 clipping in d dimensions): less noise than under RDP
    assert row["laplace"]["accountant"] == "pld" and row["laplace_rdp"]["accountant"] == "rdp"
    assert row["laplace"]["u"] > row["laplace_rdp"]["u"]
    assert compute_epsilon(Laplace(row["laplace"]["u"]), **kw).epsilon <= 2.5
    assert compute_epsilon(Laplace(row["laplace"]["u"] * 1.001), **kw).epsilon > 2.5
    assert row["laplace"]["objective"] < row["laplace_rdp"]["objective"] < row["objective"]
    assert "laplace" in row["dominated_by"] and "pld accountant" in row["note"]
    # credited with its epsilon lower bound, the LMO still loses to a Laplace proven there
    outlook = row["tight_outlook"]
    assert 0 < outlook["lmo_epsilon_lower_bound"] <= row["epsilon"] and outlook["lmo_could_win"] is False
    assert outlook["laplace_at_lower_bound"]["objective"] < row["objective"]
    assert "No accountant could make this LMO win" in row["note"]
    # the file round-trips with both entries
    again = SearchRow.from_dict(row, "row").to_dict()
    assert again["laplace_rdp"] == row["laplace_rdp"] and again["laplace"] == row["laplace"]
    assert again["tight_outlook"] == outlook


def test_a_point_the_tighter_accountant_cannot_evaluate_counts_as_missing_the_target():
    from noise_search.accountants import get_accountant
    from noise_search.search.baselines import _epsilon_or_inf

    kw = {"sample_rate": 0.5, "steps": 2, "delta": 1e-5}
    pld = get_accountant("pld")
    with pytest.raises(UnsupportedError):  # dp-accounting overflows on this Laplace
        pld.epsilon(Laplace(802.77), **kw)
    assert _epsilon_or_inf(pld, Laplace(802.77), kw) == math.inf
    assert _epsilon_or_inf(pld, Laplace(3.0), kw) == pld.epsilon(Laplace(3.0), **kw).epsilon < math.inf


def test_the_tighter_laplace_search_stays_within_the_u0_lmo_dp_accounts_for():
    from noise_search.accountants import get_accountant
    from noise_search.search.baselines import _tighter_laplace_u0

    # from u0 = 400 the bracket walk steps x4; it must stop at u0 = 1000, not construct Laplace(1600)
    kw = {"sample_rate": 1.0, "steps": 1, "delta": 1e-5}
    u0 = _tighter_laplace_u0(get_accountant("rdp"), 700.0, 400.0, kw)
    assert u0 == pytest.approx(700.0, rel=1e-3) and compute_epsilon(Laplace(u0), **kw).epsilon <= 700.0


def test_lmo_accountant_hidden_u_rescales_the_pick_to_the_target_and_keeps_the_rdp_pick():
    problem = _problem(targets=(2.5,), lmo_accountant="rdp-hidden-u", rerank=1)
    outcome = run_search(problem)
    (row,) = rows(outcome)
    assert row["lmo_accountant"] == "rdp-hidden-u" and row["source"] == "grid+hidden-u"
    rdp = row["lmo_rdp"]
    assert rdp["accountant"] == "rdp" and rdp["epsilon"] <= 2.5
    lmo = LMO.from_dict(row["params"])
    spent = compute_epsilon(lmo, sample_rate=Q, steps=T, delta=DELTA, accountant="rdp-hidden-u")
    assert spent.epsilon == row["epsilon"] and 2.5 * 0.99 < spent.epsilon <= 2.5
    # RDP alone would not allow this LMO: it is the RDP pick with more u (less noise)
    assert compute_epsilon(lmo, sample_rate=Q, steps=T, delta=DELTA).epsilon > 2.5
    factor = lmo.mean_u() / LMO.from_dict(rdp["params"]).mean_u()
    assert factor > 1.0 and lmo == LMO.from_dict(rdp["params"]).scaled(factor)
    assert row["objective"] < rdp["objective"] and "the grid's RDP pick is rescaled" in row["note"]
    # the file round-trips with both LMOs
    result = SearchResult.from_dict(jsonable(outcome.to_dict()))
    assert result.settings["lmo_accountant"] == "rdp-hidden-u" and result.settings["rerank"] == 1
    again = result.rows[0]
    assert again.lmo_accountant == "rdp-hidden-u" and again.lmo_rdp is not None
    assert again.to_dict() == outcome.rows[0].to_dict()


def test_rerank_pool_and_choice():
    """The candidates rescaled under hidden u: the pick first, then the next best RDP candidates,
    ``rerank`` in all; the best objective after rescaling wins (the first on ties)."""
    from noise_search.search.run import _best_rescaled, _rerank_pool

    problem = _problem(targets=(2.5,), rerank=3)
    grid = run_search(problem).grid
    pick = grid_pick(problem, grid, 2.5)
    pool = _rerank_pool(problem, grid, 2.5, pick)
    assert len(pool) == 3 and pool[0] is pick and len({p.mechanism for p in pool}) == 3
    assert [p.objective for p in pool] == sorted(p.objective for p in pool)  # mean-abs: best first
    assert all(p.spent.epsilon <= 2.5 for p in pool)
    worse, better = pool[1], pool[2]
    cheaper = dataclasses.replace(better, objective=pool[0].objective * 0.5)
    assert _best_rescaled(problem, [(pool[0], None), (worse, None), (cheaper, None)])[0] is cheaper
    assert _best_rescaled(problem, [(pool[0], None), (worse, None)])[0] is pool[0]
    assert _best_rescaled(problem, [(pool[0], "failed"), (worse, None)])[0] is worse
    assert _best_rescaled(problem, [(pool[0], "failed")]) == (pool[0], "failed")


def test_search_refuses_hidden_u_for_the_baselines_and_unknown_lmo_accountants():
    with pytest.raises(ParameterError, match="accountant: must be one of rdp, prv, pld"):
        _problem(accountant="rdp-hidden-u")
    with pytest.raises(ParameterError, match="lmo_accountant: must be one of rdp, rdp-hidden-u"):
        _problem(lmo_accountant="pld")
    with pytest.raises(ParameterError, match="rerank"):
        _problem(lmo_accountant="rdp-hidden-u", rerank=51)

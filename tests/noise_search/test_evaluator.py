"""The vectorised evaluator agrees with the accountant and the LMO methods, row by row."""

from __future__ import annotations

import math

import numpy as np
import pytest

from noise_search.accountants import compute_epsilon
from noise_search.errors import ParameterError
from noise_search.evaluator import (
    evaluate_block,
    factored_log_mgf,
    max_finite_order,
    objective_values,
    rdp_curves,
    to_score,
)
from noise_search.mechanisms import LMO
from noise_search.mgf import MixtureArrays, log_mgf
from noise_search.spaces import PaperSpace, WideSpace, lmo_from_row

SST2_Q = 2048 / 67349


def _objective(mech: LMO, objective: str, gamma: float | None) -> float:
    """The objective through the LMO's own methods."""
    if objective == "mean-abs":
        return mech.mean_abs()
    if objective == "variance":
        return mech.variance()
    return mech.usefulness(gamma)


def _sample(space, n: int, seed: int) -> MixtureArrays:
    return space.take(np.random.default_rng(seed).choice(space.size, n, replace=False))


@pytest.fixture(scope="module")
def mixed() -> MixtureArrays:
    """Paper and wide candidates together, plus domain edge cases."""
    edge = MixtureArrays.stack(
        a1=[0.1, 0.1, 0.0, 0.0, 1e-4, 0.3],
        a3=[0.1, 0.0, 0.5, 0.0, 0.0, 0.3],
        a4=[0.1, 0.0, 0.2, 1.0, 0.0, 0.0],
        G_k=[1.0, 3.0, 1.0, 1.0, 5.0, 2.0],
        G_theta=[0.5, 0.5, 1.0, 1.0, 1.0, 0.1],
        E_lambda=[5.0, 1.0, 5.0, 1.0, 1.0, 3.0],  # 0.5 / 5 * t < 1 up to t = 9; a3 t = 0.3 t < 3
        U_a=[0.0, 0.0, 0.5, 0.5, 0.0, 0.0],
        U_b=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    )
    return MixtureArrays.concat([_sample(PaperSpace(), 600, 1), _sample(WideSpace(size=30_000, seed=4), 600, 2), edge])


def test_factored_log_mgf_is_bitwise_log_mgf(mixed):
    t = np.concatenate([-np.geomspace(1e-6, 1e8, 40), [0.0], np.arange(1.0, 256.0), [0.5, 7.25]])
    assert np.array_equal(factored_log_mgf(mixed, t), log_mgf(mixed, t))
    small = mixed.take(slice(0, 5))
    assert np.array_equal(factored_log_mgf(small, t), log_mgf(small, t))


def test_max_finite_order_matches_the_mgf_domain(mixed):
    finite = np.isfinite(log_mgf(mixed, np.arange(1.0, 256.0)))
    # the domain is an interval: finite columns form a prefix
    assert np.all(np.diff(finite.astype(int), axis=1) <= 0)
    assert np.array_equal(max_finite_order(mixed), 1 + finite.sum(axis=1))
    k = max_finite_order(mixed)
    assert k[-6] == k[-5] == 20  # a1 G_theta = 0.05: t = 20 gives exactly 1, outside
    assert k[-4] == 10  # a3 / E_lambda = 0.1
    assert k[-3] == k[-2] == 256  # bounded u / a far-away Gamma limit
    assert k[-1] == 10  # the tighter of the Gamma (t < 33.3) and Exponential (t < 10) limits
    assert max_finite_order(mixed, 40).max() == 40


@pytest.mark.parametrize(("q", "steps", "delta"), [(SST2_Q, 197, 1e-10), (1.0, 1, 1e-10), (0.01, 1000, 1e-5)])
def test_epsilon_matches_the_accountant(mixed, q, steps, delta):
    eps, order = rdp_curves(mixed, q).epsilon(steps, delta)
    rows = np.random.default_rng(5).choice(len(mixed), 50, replace=False)
    for i in [*rows, *range(len(mixed) - 6, len(mixed))]:
        spent = compute_epsilon(lmo_from_row(mixed, int(i)), sample_rate=q, steps=steps, delta=delta)
        if math.isinf(spent.epsilon):
            assert math.isinf(eps[i]) and np.isnan(order[i])
        else:
            assert eps[i] == pytest.approx(spent.epsilon, rel=1e-12, abs=1e-15)
            assert order[i] == spent.order


def test_pure_dp_rows_follow_the_accountant():
    # Uniform only, unsampled, one release: pure DP (eps0 = a4 U_b) beats the RDP conversion.
    p = MixtureArrays.stack(a1=0.0, a3=0.0, a4=[1.0, 0.5], G_k=1.0, G_theta=1.0, E_lambda=1.0, U_a=0.5, U_b=1.0)
    eps, order = rdp_curves(p, 1.0).epsilon(1, 1e-10)
    for i in range(2):
        spent = compute_epsilon(lmo_from_row(p, i), sample_rate=1.0, steps=1, delta=1e-10)
        assert eps[i] == pytest.approx(spent.epsilon, rel=1e-12)
        assert order[i] == spent.order == math.inf
    assert eps[0] == pytest.approx(1.0)


def test_one_set_of_curves_serves_every_steps_value(mixed):
    ev = evaluate_block(mixed, sample_rate=SST2_Q, steps=(10, 197, 2000), delta=1e-8, objective="mean-abs")
    curves = rdp_curves(mixed, SST2_Q)
    for j, t in enumerate((10, 197, 2000)):
        eps, order = curves.epsilon(t, 1e-8)
        assert np.array_equal(ev.epsilon[j], eps)
        assert np.array_equal(ev.order[j], order, equal_nan=True)
    assert np.all(np.diff(ev.epsilon[:, np.isfinite(ev.epsilon[0])], axis=0) >= 0)  # more steps, more epsilon


@pytest.mark.parametrize(("objective", "gamma"), [("mean-abs", None), ("variance", None), ("usefulness", 0.7)])
def test_objectives_match_the_lmo_methods(mixed, objective, gamma):
    values = objective_values(mixed, objective, gamma)
    for i in np.random.default_rng(8).choice(len(mixed), 30, replace=False):
        mech = lmo_from_row(mixed, int(i))
        ref = _objective(mech, objective, gamma)
        assert values[i] == pytest.approx(ref, rel=1e-12)
    assert np.all(np.isfinite(values))
    assert np.array_equal(to_score(values, objective), -values if objective == "usefulness" else values)


def test_objective_only_where_asked_and_bad_objectives(mixed):
    ev = evaluate_block(mixed, sample_rate=SST2_Q, steps=197, delta=1e-10, objective="mean-abs", objective_below=3.0)
    computed = np.isfinite(ev.objective)
    assert np.array_equal(computed, ev.epsilon[0] <= 3.0)
    assert computed.any() and not computed.all()
    with pytest.raises(ParameterError, match="gamma"):
        objective_values(mixed, "usefulness")
    with pytest.raises(ParameterError, match="gamma"):
        objective_values(mixed, "usefulness", 0.0)
    with pytest.raises(ParameterError, match="objective"):
        objective_values(mixed, "median")


def test_empty_and_hopeless_blocks():
    empty = PaperSpace().block(0, 0)
    ev = evaluate_block(empty, sample_rate=0.1, steps=5, delta=1e-6, objective="variance")
    assert ev.epsilon.shape == (1, 0)
    # E_lambda = 0.1 with a3 >= 0.1: M(1) is infinite, so no order is finite
    p = MixtureArrays.stack(a1=0.1, a3=0.1, a4=0.1, G_k=2.0, G_theta=1.0, E_lambda=0.1, U_a=0.0, U_b=1.0)
    eps, order = rdp_curves(p, 0.5).epsilon(3, 1e-6)
    assert math.isinf(eps[0]) and np.isnan(order[0])

"""Private hyperparameter tuning: the law of the number of runs and the repeat-and-select RDP
bound (Papernot and Steinke 2022), checked against dp-accounting and independent scipy laws."""

from __future__ import annotations

import itertools
import logging
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.dp_event import RepeatAndSelectDpEvent
from scipy import stats

from noise_search.accountants import PldAccountant, PrvAccountant, RdpAccountant
from noise_search.calibration import calibrate
from noise_search.errors import ParameterError, UnsupportedError
from noise_search.events import RandomChoiceDpEvent, dp_sgd_event, tuned_event
from noise_search.mechanisms import LMO, Gaussian, Laplace
from noise_search.rdp import GAUSSIAN_ORDERS
from noise_search.tuning import POISSON, TuningDistribution, repeat_and_select_rdp

RUN = dp_sgd_event(Gaussian(1.0), 0.03, 500)
DELTA = 1e-5


def _dp_accounting(event, orders=None) -> float:
    logging.getLogger("absl").setLevel(logging.ERROR)
    acc = dp_accounting.rdp.RdpAccountant(None if orders is None else list(orders))
    acc.compose(event)
    return acc.get_epsilon(DELTA)


@pytest.mark.parametrize("mean,shape", [(10, POISSON), (10, 1.0), (10, 0.0), (10, 0.5), (3, 2.0), (50, 1.0)])
def test_gaussian_matches_dp_accounting_repeat_and_select(mean, shape):
    ours = RdpAccountant().compose(tuned_event(RUN, mean, shape)).get_epsilon(DELTA)
    # Same orders: the same theorem on the same curve; only the truncated negative binomial's
    # parameter differs (dp-accounting rounds gamma down by bisection, we solve it to 1e-14).
    assert ours == pytest.approx(_dp_accounting(RepeatAndSelectDpEvent(RUN, mean, shape), GAUSSIAN_ORDERS), rel=1e-8)
    # dp-accounting's default orders: within 1% (the order grid's effect).
    assert ours == pytest.approx(_dp_accounting(RepeatAndSelectDpEvent(RUN, mean, shape)), rel=1e-2)


def test_issue_reference_values():
    """The values quoted when the feature was asked for (sigma 1, q 0.03, T 500, delta 1e-5)."""
    acc = RdpAccountant()
    assert acc.compose(RUN).get_epsilon(DELTA) == pytest.approx(4.79, abs=0.005)
    assert RdpAccountant().compose(tuned_event(RUN, 10, POISSON)).get_epsilon(DELTA) == pytest.approx(9.64, abs=0.005)
    assert RdpAccountant().compose(tuned_event(RUN, 10, 1.0)).get_epsilon(DELTA) == pytest.approx(8.45, abs=0.005)
    assert RdpAccountant().compose(tuned_event(RUN, 10, 0.0)).get_epsilon(DELTA) == pytest.approx(7.45, abs=0.005)


@pytest.mark.parametrize(
    "mech",
    [
        Gaussian(1.0),
        Laplace(0.5),
        LMO.from_dict(
            {"a1": 0.5, "a3": 0.3, "a4": 0.2, "G_k": 2.0, "G_theta": 1.0, "E_lambda": 2.0, "U_a": 0.1, "U_b": 1.0}
        ),
    ],
)
@pytest.mark.parametrize("shape", [POISSON, 2.0, 1.0, 0.0, -0.5])
def test_tuned_is_at_least_one_run_and_grows_with_mean(mech, shape):
    run = dp_sgd_event(mech, 0.02, 200)
    one = RdpAccountant().compose(run).get_epsilon(DELTA)
    tuned = [RdpAccountant().compose(tuned_event(run, m, shape)).get_epsilon(DELTA) for m in (1.5, 3, 10, 100)]
    assert tuned[0] >= one
    assert all(a < b for a, b in itertools.pairwise(tuned)), tuned


def test_random_choice_is_the_pointwise_worst_run():
    short, long = dp_sgd_event(Gaussian(1.0), 0.03, 100), RUN
    choice = RandomChoiceDpEvent((short, long))
    orders = GAUSSIAN_ORDERS
    acc = RdpAccountant()
    np.testing.assert_array_equal(acc.event_curve(choice, orders), acc.event_curve(long, orders))
    assert acc.compose(tuned_event(choice, 10, 1.0)).get_epsilon(DELTA) == pytest.approx(
        RdpAccountant().compose(tuned_event(long, 10, 1.0)).get_epsilon(DELTA)
    )
    # mixed rates: neither curve dominates, the maximum is taken order by order
    hi_q = dp_sgd_event(Gaussian(1.0), 0.3, 20)
    both = acc.event_curve(RandomChoiceDpEvent((hi_q, long)), orders)
    np.testing.assert_array_equal(both, np.maximum(acc.event_curve(hi_q, orders), acc.event_curve(long, orders)))


def test_composition_with_plain_releases_and_spent_with():
    acc = RdpAccountant().compose(tuned_event(RUN, 5, 1.0))
    before = acc.get_epsilon(DELTA)
    after = acc.spent_with(RUN, DELTA).epsilon
    assert after > before and acc.get_epsilon(DELTA) == before
    assert RdpAccountant.fresh(acc).get_epsilon(DELTA) == 0.0


@pytest.mark.parametrize("mech", ["gaussian", "laplace"])
def test_calibrated_runs_meet_the_target_after_tuning(mech):
    cal = calibrate(mech, epsilon=3.0, delta=DELTA, sample_rate=0.02, steps=300, tuning=(8, 1.0))
    run = dp_sgd_event(cal.mechanism, 0.02, 300)
    tuned = RdpAccountant().compose(tuned_event(run, 8, 1.0)).get_epsilon(DELTA)
    assert tuned <= 3.0 and tuned == pytest.approx(3.0, rel=1e-3)
    assert RdpAccountant().compose(run).get_epsilon(DELTA) < tuned
    untuned = calibrate(mech, epsilon=3.0, delta=DELTA, sample_rate=0.02, steps=300)
    more_noise = (
        cal.mechanism.sigma > untuned.mechanism.sigma
        if mech == "gaussian"
        else (cal.mechanism.u0 < untuned.mechanism.u0)
    )
    assert more_noise


def test_pld_and_prv_refuse_tuning():
    for acc in (PldAccountant(), PrvAccountant()):
        with pytest.raises(UnsupportedError, match="does not support hyperparameter tuning"):
            acc.compose(tuned_event(RUN, 5, 1.0))
        assert not acc.supports(tuned_event(RUN, 5, 1.0))


@pytest.mark.parametrize(
    "mean,shape,field",
    [
        (0.0, 1.0, "mean"),
        (-3, POISSON, "mean"),
        (1.0, 1.0, "mean"),
        (math.nan, 1.0, "mean"),
        (2e6, 1.0, "mean"),
        (5, -1.0, "shape"),
        (5, -2.0, "shape"),
        (5, math.nan, "shape"),
        (5, True, "shape"),
    ],
)
def test_bad_tuning_input(mean, shape, field):
    with pytest.raises(ParameterError, match=f"^{field}: "):
        tuned_event(RUN, mean, shape)


# --- the law of K -------------------------------------------------------------------------------


def _reference_pmf(dist: TuningDistribution, k: np.ndarray) -> np.ndarray:
    """The same law from scipy (negative binomial conditioned on K >= 1, log-series, Poisson)."""
    if dist.shape == POISSON:
        return stats.poisson.pmf(k, dist.mean)
    if dist.shape == 0.0:
        return stats.logser.pmf(k, 1.0 - dist.gamma)
    p = stats.nbinom.pmf(k, dist.shape, dist.gamma)
    return np.where(k >= 1, p / (1.0 - stats.nbinom.pmf(0, dist.shape, dist.gamma)), 0.0)


@pytest.mark.parametrize("shape", [POISSON, 3.0, 1.0, 0.5, 0.0, -0.5])
def test_pmf_matches_scipy_and_has_the_mean(shape):
    dist = TuningDistribution.from_mean(6.0, shape)
    k = np.arange(0, 20_000)
    p = dist.pmf(k)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    assert (k * p).sum() == pytest.approx(6.0, rel=1e-7)
    if shape >= 0:
        np.testing.assert_allclose(p, _reference_pmf(dist, k), atol=1e-12)
    else:  # no scipy law: check the defining ratio P[k+1]/P[k] = (1-gamma)(k+eta)/(k+1)
        ratio = p[2:50] / p[1:49]
        np.testing.assert_allclose(ratio, (1 - dist.gamma) * (k[1:49] + shape) / (k[1:49] + 1), rtol=1e-10)


@pytest.mark.parametrize("shape", [POISSON, 1.0, 0.0, -0.5])
def test_sampler_follows_the_law(shape):
    """Chi-square goodness of fit of 4,000 seeded draws (cells with expected count >= 5)."""
    dist = TuningDistribution.from_mean(5.0, shape)
    rng = np.random.default_rng(1234)
    draws = np.array([dist.sample(rng) for _ in range(4000)])
    top = 40
    observed = np.bincount(np.minimum(draws, top), minlength=top + 1).astype(float)
    expected = dist.pmf(np.arange(top + 1)) * len(draws)
    expected[top] = len(draws) - expected[:top].sum()
    keep = expected >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    _, p_value = stats.chisquare(obs, exp)
    assert p_value > 1e-3
    assert draws.mean() == pytest.approx(5.0, rel=0.1)


def test_repeat_and_select_needs_orders_above_one():
    with pytest.raises(ValueError):
        repeat_and_select_rdp(np.ones(3), np.array([1.0, 2.0, 3.0]), TuningDistribution.from_mean(3, 1.0))

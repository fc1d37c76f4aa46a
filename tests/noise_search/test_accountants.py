"""Accountants checked against independent libraries (Opacus, dp-accounting)."""

from __future__ import annotations

import numpy as np
import pytest

from noise_search.accountants import (
    PldAccountant,
    PrvAccountant,
    RdpAccountant,
    accountants_for,
    compute_epsilon,
    get_accountant,
)
from noise_search.calibration import calibrate
from noise_search.errors import ParameterError, UnsupportedError
from noise_search.events import (
    ComposedDpEvent,
    GaussianDpEvent,
    LmoDpEvent,
    PoissonSampledDpEvent,
    SelfComposedDpEvent,
    dp_sgd_event,
    leaves,
    mechanism_event,
)
from noise_search.mechanisms import LMO, Gaussian, Laplace
from noise_search.rdp import DEFAULT_ORDERS, GAUSSIAN_ORDERS, epsilon_from_rdp

SST2_Q = 2048 / 67349
SST2_T = 197


def test_gaussian_rdp_is_dp_accountings_and_agrees_with_opacus_where_both_converge():
    import dp_accounting
    from opacus.accountants.analysis.rdp import compute_rdp

    acc = RdpAccountant()
    for sigma, q in ((0.8, 0.01), (2.93, SST2_Q), (8.6, SST2_Q), (1.1, 1.0)):
        ours = acc.curve(Gaussian(sigma), q)
        ref = dp_accounting.rdp.RdpAccountant(list(GAUSSIAN_ORDERS))
        event = GaussianDpEvent(sigma)
        ref.compose(PoissonSampledDpEvent(q, event) if q < 1 else event)
        # integer orders are summed at once here (dp-accounting's terms, one vectorised sum): equal
        # to float rounding; fractional orders are dp-accounting's own evaluation
        np.testing.assert_allclose(ours, ref.rdp, rtol=1e-12, atol=1e-16)
        integer = np.round(GAUSSIAN_ORDERS) == GAUSSIAN_ORDERS
        np.testing.assert_array_equal(ours[~integer], np.asarray(ref.rdp)[~integer])
        opacus = np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(GAUSSIAN_ORDERS)))
        np.testing.assert_allclose(ours[integer], opacus[integer], rtol=1e-9)  # two implementations, one bound
        # fractional orders: dp-accounting's series is never below Opacus's (at most more conservative)
        assert np.all(ours[~integer] >= opacus[~integer] * (1 - 1e-9))


def test_default_gaussian_orders_go_far_beyond_opacus_default():
    assert GAUSSIAN_ORDERS.max() == 256 and 1.1 in GAUSSIAN_ORDERS and 63 in GAUSSIAN_ORDERS
    spent = compute_epsilon(Gaussian(8.63), sample_rate=SST2_Q, steps=SST2_T, delta=1e-10)
    assert spent.order > 63  # Opacus's default orders would miss the optimum


def test_gaussian_calibration_at_small_epsilon():
    """Measured reference values: RDP 8.63, PRV 8.30, PLD 8.22 at eps = 0.3, delta = 1e-10, SST-2 setting."""
    kw = dict(epsilon=0.3, delta=1e-10, sample_rate=SST2_Q, steps=SST2_T)
    rdp = calibrate("gaussian", accountant="rdp", **kw)
    prv = calibrate("gaussian", accountant="prv", **kw)
    pld = calibrate("gaussian", accountant="pld", **kw)
    assert 8.5 < rdp.mechanism.sigma < 8.7
    for tight in (prv, pld):
        assert 8.0 < tight.mechanism.sigma < rdp.mechanism.sigma
    for cal in (rdp, prv, pld):
        assert cal.spent.epsilon <= 0.3


def test_prv_and_pld_are_tighter_than_rdp_for_gaussian():
    mech = Gaussian(2.0)
    kw = dict(sample_rate=SST2_Q, steps=SST2_T, delta=1e-5)
    rdp = compute_epsilon(mech, accountant="rdp", **kw).epsilon
    prv = compute_epsilon(mech, accountant="prv", **kw).epsilon
    pld = compute_epsilon(mech, accountant="pld", **kw).epsilon
    assert pld < rdp and prv < rdp
    assert prv == pytest.approx(pld, rel=0.03)


def optimistic_laplace_pld_epsilon(u0: float, q: float, steps: int, delta: float) -> float:
    """dp-accounting's PLD with *optimistic* rounding: a lower bound on the true epsilon."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    dist = pld.from_laplace_mechanism(
        1.0 / u0,
        sensitivity=1.0,
        pessimistic_estimate=False,
        value_discretization_interval=1e-4,
        sampling_prob=q,
        use_connect_dots=False,
    )
    return dist.self_compose(steps).get_epsilon_for_delta(delta)


def test_laplace_rdp_is_never_below_pld_and_within_20_percent():
    """PLD (dp-accounting) is tight. Checked over a grid of (u0, q, T, delta) with PLD epsilon
    in [0.2, 10]: the RDP conversion is never below the (pessimistic) PLD epsilon; the reported
    epsilon (RDP, or pure-DP composition where tighter) is never below the optimistic PLD
    epsilon -- a lower bound on the truth -- and within 20% of the pessimistic one."""
    acc = RdpAccountant()
    ratios = []
    for q in (1.0, 0.1, SST2_Q, 0.005):
        for steps in (1, 10, SST2_T, 1000):
            for u0 in (0.03, 0.1, 0.3, 1.0, 3.0):
                for delta in (1e-5, 1e-10):
                    kw = dict(sample_rate=q, steps=steps, delta=delta)
                    reported = compute_epsilon(Laplace(u0), accountant="rdp", **kw).epsilon
                    if not 0.2 <= reported <= 12.0:  # PLD <= reported, PLD >= reported / 1.2
                        continue
                    pld = compute_epsilon(Laplace(u0), accountant="pld", **kw).epsilon
                    if not 0.2 <= pld <= 10.0:
                        continue
                    rdp_only = epsilon_from_rdp(steps * acc.curve(Laplace(u0), q)[None], DEFAULT_ORDERS, delta)[0][0]
                    case = (q, steps, u0, delta, reported, rdp_only, pld)
                    assert rdp_only >= pld, case
                    assert reported >= optimistic_laplace_pld_epsilon(u0, q, steps, delta), case
                    assert reported <= 1.2 * pld, case
                    ratios.append(reported / pld)
    assert len(ratios) >= 60
    assert max(ratios) <= 1.2


def test_laplace_pld_matches_environment_measurements():
    """Measured reference values: Laplace scale b, SST-2 setting, delta=1e-10: b=1 -> 2.553, b=3 -> 0.798."""
    for b, expected in ((1.0, 2.553), (3.0, 0.798)):
        eps = compute_epsilon(Laplace(1 / b), sample_rate=SST2_Q, steps=SST2_T, delta=1e-10, accountant="pld")
        assert eps.epsilon == pytest.approx(expected, rel=2e-3)


def test_lmo_supports_rdp_only():
    mech = LMO(a1=0.1, a3=0.1, a4=0.1, G_k=1, G_theta=0.5, E_lambda=5, U_a=0, U_b=1)
    assert compute_epsilon(mech, sample_rate=0.1, steps=10, delta=1e-5).epsilon > 0
    for name in ("prv", "pld"):
        with pytest.raises(UnsupportedError, match="does not support the lmo"):
            compute_epsilon(mech, sample_rate=0.1, steps=10, delta=1e-5, accountant=name)
    with pytest.raises(UnsupportedError):
        compute_epsilon(Laplace(1.0), sample_rate=0.1, steps=10, delta=1e-5, accountant="prv")
    with pytest.raises(UnsupportedError, match="must be one of"):
        get_accountant("moments")


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
    ],
)
def test_accounting_inputs_are_validated(kw, field):
    args = {"sample_rate": 0.1, "steps": 10, "delta": 1e-5, **kw}
    with pytest.raises(ParameterError) as exc:
        compute_epsilon(Gaussian(1.0), **args)
    assert exc.value.field == field


def test_infinite_orders_are_skipped_not_clipped():
    # Gamma domain: a1 * G_theta * (k-1) < 1 -> only k - 1 < 5 is finite
    mech = LMO(a1=0.2, a3=0.0, a4=0.0, G_k=3.0, G_theta=1.0, E_lambda=1, U_a=0, U_b=1)
    curve = RdpAccountant().curve(mech, 1.0)
    assert np.all(np.isfinite(curve[DEFAULT_ORDERS < 6])) and np.all(np.isinf(curve[DEFAULT_ORDERS >= 6]))
    spent = compute_epsilon(mech, sample_rate=1.0, steps=1, delta=1e-10)
    assert spent.order < 6 and np.isfinite(spent.epsilon)
    # a mechanism with no finite order has an infinite epsilon
    never = LMO(a1=2.0, a3=0.0, a4=0.0, G_k=3.0, G_theta=1.0, E_lambda=1, U_a=0, U_b=1)
    spent = compute_epsilon(never, sample_rate=1.0, steps=1, delta=1e-10)
    assert spent.epsilon == np.inf and spent.order is None


def test_composition_adds_rdp():
    mech = Laplace(0.5)
    acc = RdpAccountant()
    curve = acc.curve(mech, 0.05)
    eps, _ = epsilon_from_rdp(37 * curve[None, :], DEFAULT_ORDERS, 1e-6)
    assert compute_epsilon(mech, sample_rate=0.05, steps=37, delta=1e-6).epsilon == pytest.approx(eps[0], rel=1e-15)


def test_an_accountant_composes_step_events_like_the_one_call_form():
    mech = Gaussian(1.2)
    acc = RdpAccountant()
    assert acc.get_epsilon(1e-5) == 0.0 and acc.releases == 0
    step = PoissonSampledDpEvent(0.02, mechanism_event(mech))
    for _ in range(25):
        acc.compose(step)
    direct = compute_epsilon(mech, sample_rate=0.02, steps=25, delta=1e-5)
    assert acc.releases == 25 and acc.spent(1e-5) == direct
    assert RdpAccountant().compose(step, 25).spent(1e-5) == direct
    assert RdpAccountant().compose(dp_sgd_event(mech, 0.02, 25)).spent(1e-5) == direct
    ahead = acc.spent_with(step, 1e-5)
    assert ahead == compute_epsilon(mech, sample_rate=0.02, steps=26, delta=1e-5) and acc.releases == 25


def test_mixed_runs_add_rdp_on_common_integer_orders():
    """A Gaussian phase then a Laplace phase at another rate: RDP adds order by order."""
    gauss, lap = Gaussian(1.5), Laplace(0.4)
    acc = RdpAccountant().compose(ComposedDpEvent([dp_sgd_event(gauss, 0.05, 30), dp_sgd_event(lap, 0.1, 20)]))
    total = 30 * RdpAccountant().curve(gauss, 0.05, DEFAULT_ORDERS) + 20 * RdpAccountant().curve(lap, 0.1)
    eps, order = epsilon_from_rdp(total[None, :], DEFAULT_ORDERS, 1e-5)
    spent = acc.spent(1e-5)
    assert spent.epsilon == pytest.approx(eps[0], rel=1e-12) and spent.order == order[0]
    # more than either phase alone, less than their epsilons added
    alone = [
        compute_epsilon(m, sample_rate=q, steps=t, delta=1e-5).epsilon
        for m, q, t in ((gauss, 0.05, 30), (lap, 0.1, 20))
    ]
    assert max(alone) < spent.epsilon < sum(alone)
    assert not PldAccountant().supports(
        dp_sgd_event(LMO(a1=1, a3=0, a4=0, G_k=4, G_theta=1, E_lambda=1, U_a=0, U_b=1), 0.1, 3)
    )


def test_events_flatten_to_mechanism_and_rate_counts():
    lmo = LMO(a1=1, a3=0, a4=0, G_k=4, G_theta=1, E_lambda=1, U_a=0, U_b=1)
    ev = ComposedDpEvent(
        [SelfComposedDpEvent(PoissonSampledDpEvent(0.1, LmoDpEvent(lmo)), 7), mechanism_event(Laplace(0.3))]
    )
    assert leaves(SelfComposedDpEvent(ev, 2)) == {(lmo, 0.1): 14, (Laplace(0.3), 1.0): 2}
    assert leaves(mechanism_event(Laplace(0.123456789))) == {(Laplace(0.123456789), 1.0): 1}  # u0 kept exactly
    with pytest.raises(UnsupportedError, match="cannot account"):
        leaves(PoissonSampledDpEvent(0.1, ev))
    assert accountants_for(lmo) == ["rdp", "rdp-hidden-u"]
    assert accountants_for(Gaussian(1.0)) == ["rdp", "prv", "pld", "rdp-hidden-u"]
    with pytest.raises(UnsupportedError, match="use one of: rdp, pld, rdp-hidden-u"):
        PrvAccountant().compose(mechanism_event(Laplace(1.0)))


def test_pld_accountant_is_an_upper_bound_on_a_tighter_grid():
    """A finer PLD discretisation never gives a larger epsilon than ours (pessimistic estimates)."""
    mech = Laplace(0.3)
    kw = dict(sample_rate=0.05, steps=50, delta=1e-6)
    coarse = PldAccountant(rel_discretization=1e-2).epsilon(mech, **kw).epsilon
    fine = PldAccountant(rel_discretization=1e-4).epsilon(mech, **kw).epsilon
    assert fine <= coarse * (1 + 1e-9)


def test_pure_dp_composition_is_used_where_it_is_tighter():
    """A single unsampled Laplace release is exactly u0-DP; RDP's conversion would add ~20%."""
    spent = compute_epsilon(Laplace(0.3), sample_rate=1.0, steps=1, delta=1e-10)
    assert spent.epsilon == pytest.approx(0.3, rel=1e-12) and spent.order == np.inf
    # bounded u (Uniform only): the mixture is (a4 * U_b)-DP per release
    bounded = LMO(a1=0, a3=0, a4=0.5, G_k=1, G_theta=1, E_lambda=1, U_a=0.2, U_b=0.6)
    assert compute_epsilon(bounded, sample_rate=1.0, steps=1, delta=1e-10).epsilon == pytest.approx(0.3)
    # where sampling and many steps make RDP tighter, RDP is reported
    spent = compute_epsilon(Laplace(0.3), sample_rate=SST2_Q, steps=SST2_T, delta=1e-10)
    assert np.isfinite(spent.order)
    assert spent.epsilon < SST2_T * np.log1p(SST2_Q * np.expm1(0.3))


def test_vectorised_integer_orders_equal_dp_accountings_gaussian_rdp():
    """The Gaussian curve's integer orders are evaluated here at once (the speed-up of
    calibration); the values and the epsilons they give equal dp-accounting's own evaluation."""
    import itertools

    from noise_search.accountants import _dp_accounting_gaussian_curve, gaussian_rdp_curve
    from noise_search.rdp import GAUSSIAN_ORDERS, epsilon_from_rdp

    for sigma, q in itertools.product([0.3, 0.7, 1.0, 2.5, 8.63, 30.0, 1e3], [1e-6, 1e-3, 0.03, 0.24, 0.5, 0.999]):
        ours = gaussian_rdp_curve(sigma, q)
        ref = _dp_accounting_gaussian_curve(sigma, q, GAUSSIAN_ORDERS)
        assert np.array_equal(np.isfinite(ours), np.isfinite(ref))
        finite = np.isfinite(ref)
        np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-10, atol=1e-15)
        for steps in (1, 197, 10_000):
            a = epsilon_from_rdp(steps * ours[None, :], GAUSSIAN_ORDERS, 1e-5)[0][0]
            b = epsilon_from_rdp(steps * ref[None, :], GAUSSIAN_ORDERS, 1e-5)[0][0]
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12)

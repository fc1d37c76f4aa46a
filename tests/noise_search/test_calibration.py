"""The generic monotone calibration routine and its use per mechanism family."""

from __future__ import annotations

import math

import pytest

from noise_search.accountants import compute_epsilon
from noise_search.calibration import calibrate, solve_monotone
from noise_search.errors import CalibrationError, ParameterError, UnsupportedError
from noise_search.mechanisms import LMO, Laplace


@pytest.mark.parametrize("increasing", [True, False])
@pytest.mark.parametrize("start", [1e-3, 1.0, 1e3])
def test_solve_monotone_finds_the_threshold_from_any_start(increasing, start):
    threshold = 7.3
    calls = []

    def eps(x: float) -> float:
        calls.append(x)
        return x if increasing else 1.0 / x

    target = threshold if increasing else 1.0 / threshold
    x, e = solve_monotone(eps, target, increasing=increasing, start=start, rel_tol=1e-6)
    assert e <= target
    assert x == pytest.approx(threshold, rel=2e-6)
    assert len(calls) < 60


def test_solve_monotone_step_function_and_infinities():
    # epsilon jumps from finite to inf: the answer is the last finite point below the target
    def eps(x: float) -> float:
        return math.inf if x > 2.0 else 0.1 * x

    x, e = solve_monotone(eps, 1.0, increasing=True, rel_tol=1e-8)
    assert e <= 1.0 and x == pytest.approx(2.0, rel=1e-7)


def test_solve_monotone_reports_unreachable_targets():
    with pytest.raises(CalibrationError, match="no parameter"):
        solve_monotone(lambda x: 5.0 + x, 1.0, increasing=True, lower=1e-6, upper=10.0)


@pytest.mark.parametrize("family", ["gaussian", "laplace"])
@pytest.mark.parametrize(("epsilon", "delta", "q", "steps"), [(1.0, 1e-5, 0.01, 1000), (3.0, 1e-10, 1.0, 1)])
def test_calibrated_parameters_meet_the_target_when_fed_back(family, epsilon, delta, q, steps):
    cal = calibrate(family, epsilon=epsilon, delta=delta, sample_rate=q, steps=steps)
    again = compute_epsilon(cal.mechanism, sample_rate=q, steps=steps, delta=delta)
    assert again.epsilon == cal.spent.epsilon <= epsilon
    assert again.epsilon >= epsilon * (1 - 1e-3)  # and not needlessly noisy


def test_lmo_scale_calibration():
    base = LMO(a1=0.1, a3=0.1, a4=0.1, G_k=1, G_theta=0.5, E_lambda=5, U_a=8, U_b=9)
    cal = calibrate(base, epsilon=1.0, delta=1e-10, sample_rate=2048 / 67349, steps=197)
    assert isinstance(cal.mechanism, LMO) and cal.spent.epsilon <= 1.0
    ratio = cal.mechanism.a1 / base.a1
    assert cal.mechanism.a3 / base.a3 == pytest.approx(ratio) and cal.mechanism.a4 / base.a4 == pytest.approx(ratio)
    with pytest.raises(UnsupportedError):
        calibrate(base, epsilon=1.0, delta=1e-10, sample_rate=0.1, steps=10, accountant="pld")


def test_calibration_validates_its_inputs():
    with pytest.raises(ParameterError, match=r"^epsilon:"):
        calibrate("laplace", epsilon=0.0, delta=1e-5, sample_rate=0.1, steps=10)
    with pytest.raises(ParameterError, match=r"^delta:"):
        calibrate("laplace", epsilon=1.0, delta=2.0, sample_rate=0.1, steps=10)
    with pytest.raises(UnsupportedError, match=r"^mechanism:"):
        calibrate("lmo", epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=10)


def test_laplace_calibration_matches_pure_dp_when_unsampled():
    cal = calibrate("laplace", epsilon=0.5, delta=1e-10, sample_rate=1.0, steps=1)
    assert isinstance(cal.mechanism, Laplace) and cal.mechanism.u0 == pytest.approx(0.5, rel=1e-3)

"""Laplace in d dimensions: the whole L1 shift on one coordinate dominates every split
(docs/privacy.md, "Laplace in d dimensions"). Each step of the proof is checked numerically: the
one-coordinate closed form against dp-accounting, the clipped-moment identity by quadrature, the
product's quadrature against Monte Carlo, the two-coordinate lemma on a grid that includes negative
epsilons, the induction at three coordinates, and the PLD accountant's epsilon against splits."""

from __future__ import annotations

import dp_accounting.pld.privacy_loss_distribution as pld_lib
import numpy as np
import pytest

from noise_search.accountants import compute_epsilon
from noise_search.laplace_dominance import clipped_moment, laplace_delta, product_delta
from noise_search.mechanisms import Laplace

EPS = np.linspace(-4.0, 4.0, 33)
SPLITS = [(0.5, 0.5), (0.25, 0.75), (0.05, 1.95), (1.0, 1.0), (3.0, 0.2), (0.01, 0.01)]


@pytest.mark.parametrize("shift", [0.3, 1.0, 2.5])
def test_one_coordinate_closed_form_lies_between_dp_accountings_bounds(shift: float) -> None:
    kw = {"parameter": 1.0, "sensitivity": shift, "value_discretization_interval": 1e-4}
    upper = pld_lib.from_laplace_mechanism(pessimistic_estimate=True, **kw)
    lower = pld_lib.from_laplace_mechanism(pessimistic_estimate=False, **kw)
    for eps in np.linspace(0.0, shift, 9):
        closed = float(laplace_delta(shift, eps))
        assert lower.get_delta_for_epsilon(eps) - 1e-9 <= closed <= upper.get_delta_for_epsilon(eps) + 1e-9


@pytest.mark.parametrize("shift", [0.2, 1.0, 3.0])
def test_clipped_moment_identity(shift: float) -> None:
    for a in (0.0, 0.1, 0.5 * shift, shift, 2.0 * shift + 1.0):
        assert clipped_moment(shift, a) == pytest.approx(np.exp(min(a, shift)), rel=1e-10)


@pytest.mark.parametrize("shifts", [(0.5, 0.5), (0.3, 1.2), (0.4, 0.3, 0.5)])
def test_product_quadrature_matches_monte_carlo(shifts: tuple[float, ...]) -> None:
    rng = np.random.default_rng(7)
    x = rng.laplace(size=(2_000_000, len(shifts)))
    loss = (np.abs(x - np.array(shifts)) - np.abs(x)).sum(axis=1)  # log p/q, x from P = Lap(0)^d
    for eps in (-0.5, 0.0, 0.4, 1.0):
        mc = np.clip(1.0 - np.exp(eps - loss), 0.0, None)
        assert product_delta(shifts, eps) == pytest.approx(mc.mean(), abs=5 * mc.std() / np.sqrt(mc.size) + 1e-4)


@pytest.mark.parametrize("split", SPLITS)
def test_two_coordinates_never_beat_one(split: tuple[float, float]) -> None:
    s = sum(split)
    two = np.array([product_delta(split, e) for e in EPS])
    one = laplace_delta(s, EPS)
    assert np.all(two <= one + 1e-10)
    # equal where eps <= -s (both 1 - e^eps) and above s (both 0); strictly smaller in between
    outside = np.abs(EPS) >= s
    assert np.allclose(two[outside], one[outside], atol=1e-10)
    assert np.all(two[~outside] < one[~outside])


def test_three_coordinates_never_beat_two_or_one() -> None:
    for eps in (-1.5, -0.5, 0.0, 0.3, 0.8):
        three = product_delta((0.3, 0.3, 0.4), eps)
        assert three <= product_delta((0.6, 0.4), eps) + 1e-10 <= float(laplace_delta(1.0, eps)) + 2e-10


def test_the_one_coordinate_curve_grows_with_the_shift() -> None:
    for small, large in [(0.2, 0.5), (0.5, 2.0), (1.0, 1.01)]:
        assert np.all(laplace_delta(small, EPS) <= laplace_delta(large, EPS) + 1e-15)


@pytest.mark.parametrize("u0", [0.5, 1.0, 2.0])
def test_pld_accountant_epsilon_bounds_every_split_of_one_release(u0: float) -> None:
    """One unsampled release of Laplace(scale 1/u0) with clip C = 1: the PLD accountant's
    (eps, delta) holds for the shift on one coordinate and for its splits over two and three."""
    delta = 1e-3
    eps = compute_epsilon(Laplace(u0), sample_rate=1.0, steps=1, delta=delta, accountant="pld").epsilon
    for split in [(1.0,), (0.5, 0.5), (0.2, 0.8), (0.3, 0.3, 0.4)]:
        assert product_delta([u0 * t for t in split], eps) <= delta + 1e-10

"""Per-coordinate LMO with u hidden: the largest privacy loss of a shift is concave in the shift,
so spreading an L1 shift over coordinates raises it (docs/privacy.md, "Tight accounting with u
hidden"). Checked against the closed form of a Gamma mixture, brute force over x, and on the
paper's published parameter files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from noise_search.hidden_u import log_density, max_loss, max_loss_split
from noise_search.mechanisms import LMO

ROOT = Path(__file__).resolve().parents[2]
GAMMA = {"a1": 1.0, "a3": 0.0, "a4": 0.0, "G_k": 3.0, "G_theta": 2.0, "E_lambda": 1.0, "U_a": 0.5, "U_b": 1.5}


def paper_mixtures() -> list[LMO]:
    files = sorted((ROOT / "reference" / "paper_params").glob("*.json"))
    return [LMO.from_dict(json.loads(p.read_text())) for p in files]


def test_density_of_a_gamma_mixture_is_its_closed_form() -> None:
    mech, x = LMO.from_dict(GAMMA), np.array([0.0, 0.1, 1.0, 7.5, -2.0])
    k, theta = 3.0, 2.0  # E[(u/2) e^{-u|x|}] = (k theta / 2) (1 + theta |x|)^-(k+1)
    closed = np.log(k * theta / 2) - (k + 1) * np.log1p(theta * np.abs(x))
    assert np.allclose(log_density(mech, x), closed, rtol=1e-12)
    assert np.allclose(max_loss(mech, [0.5, 1.0]), (k + 1) * np.log1p(theta * np.array([0.5, 1.0])), rtol=1e-12)


@pytest.mark.parametrize("mech", [LMO.from_dict(GAMMA), *paper_mixtures()], ids=lambda m: f"{m.to_dict()}"[:60])
def test_the_largest_loss_of_a_shift_is_at_x_equal_shift_and_concave(mech: LMO) -> None:
    x = np.linspace(-6.0, 7.0, 26001)
    for t in (0.25, 1.0):
        loss = log_density(mech, x - t) - log_density(mech, x)
        assert loss.max() <= max_loss(mech, t)[0] + 1e-12
        assert loss.max() == pytest.approx(max_loss(mech, t)[0], rel=1e-6)
    # concave with phi(0) = 0
    t = np.linspace(0.0, 2.0, 201)
    phi = max_loss(mech, t)
    assert phi[0] == pytest.approx(0.0, abs=1e-12) and np.all(np.diff(phi, 2) <= 1e-12)


@pytest.mark.parametrize("mech", [LMO.from_dict(GAMMA), *paper_mixtures()], ids=lambda m: f"{m.to_dict()}"[:60])
def test_spreading_an_l1_shift_over_coordinates_raises_the_largest_loss(mech: LMO) -> None:
    one = max_loss_split(mech, 1.0, 1)
    spread = [max_loss_split(mech, 1.0, m) for m in (2, 4, 16, 256)]
    assert one < spread[0] < spread[1] < spread[2] < spread[3]
    # the limit of many coordinates: phi'(0) = E[u^2] / E[u]  (f'(0) / f(0) = -E[u^2] / E[u])
    u = mech.sample_u(1_000_000, np.random.default_rng(0))
    assert max_loss_split(mech, 1.0, 1 << 16) == pytest.approx(float(np.mean(u**2) / np.mean(u)), rel=0.02)

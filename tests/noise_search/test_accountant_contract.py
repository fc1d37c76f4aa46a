"""The accountant contract, over every registered mechanism x every accountant.

For each pair where the accountant claims support (``supports_class``), on the mechanism's
``example()``: epsilon grows with the steps, with the sampling rate and as the noise falls;
composing a run twice spends what one run of twice the steps spends; and where a closed-form
lower bound on the true epsilon exists (one unsampled Laplace release; q = 1 Gaussian runs),
the bound is never under it. Where support is not claimed, the accountant refuses with an
:class:`UnsupportedError` and ``lmo-dp account`` exits 2 with one line naming the accountant.

The pairs come from the registry and ``ACCOUNTANT_CLASSES``: a new mechanism or accountant is
covered without writing a test. Slow: the numeric accountants (PRV, PLD) and LMO's hidden-u
moments take seconds per pair.
"""

from __future__ import annotations

import json
import math

import dp_accounting
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from noise_search.accountants import ACCOUNTANT_CLASSES, Accountant
from noise_search.errors import UnsupportedError
from noise_search.events import dp_sgd_event, mechanism_event
from noise_search.mechanisms import Mechanism, mechanisms
from orchestrator.cli import main

pytestmark = pytest.mark.slow

DELTA = 1e-5
Q, STEPS = 0.02, 40
PAIRS = [(m, a) for m in mechanisms().values() for a in ACCOUNTANT_CLASSES]
SUPPORTED = [(m, a) for m, a in PAIRS if a.supports_class(m)]
REFUSED = [(m, a) for m, a in PAIRS if not a.supports_class(m)]


def _id(pair: tuple[type[Mechanism], type[Accountant]]) -> str:
    return f"{pair[0].name}-{pair[1].name}"


def epsilon(acc: type[Accountant], mech: Mechanism, q: float, steps: int) -> float:
    return acc().compose(dp_sgd_event(mech, q, steps)).get_epsilon(DELTA)


def noisier(mech: Mechanism) -> Mechanism:
    """The same mechanism with more noise, along its calibration family."""
    family, parameter, value = mech.noise_family()
    return family(value / 2 if parameter.increasing else value * 2)


def laplace_exact_epsilon(scale: float, delta: float) -> float:
    """Exact epsilon(delta) of one Laplace release of scale ``scale`` at sensitivity 1:
    delta(eps) = 1 - exp((eps - 1/scale) / 2) below the pure-DP epsilon 1/scale."""
    return max(0.0, 1.0 / scale + 2.0 * math.log1p(-delta))


def gaussian_exact_epsilon(sigma: float, steps: int, delta: float) -> float:
    """Exact epsilon(delta) of ``steps`` unsampled Gaussian releases (noise multiplier ``sigma``):
    the Gaussian of mu = sqrt(steps)/sigma, delta(eps) = Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu)."""
    mu = math.sqrt(steps) / sigma

    def gap(eps: float) -> float:
        return norm.cdf(mu / 2 - eps / mu) - math.exp(eps + norm.logcdf(-mu / 2 - eps / mu)) - delta

    return 0.0 if gap(0.0) <= 0 else brentq(gap, 0.0, 1e3, xtol=1e-12)


def lower_bound(mech: Mechanism, steps: int) -> float | None:
    """A closed-form lower bound on the true epsilon of ``steps`` unsampled releases, read from
    the release's event (so a plug-in whose release is a Laplace or Gaussian event is covered)."""
    event = mechanism_event(mech)
    if isinstance(event, dp_accounting.LaplaceDpEvent) and steps == 1:
        return laplace_exact_epsilon(event.noise_multiplier, DELTA)
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return gaussian_exact_epsilon(event.noise_multiplier, steps, DELTA)
    return None


def test_every_mechanism_has_an_accountant_and_the_pairs_cover_the_registry():
    assert {m for m, _ in PAIRS} == set(mechanisms().values())
    for mech in mechanisms().values():
        assert any(a.supports_class(mech) for a in ACCOUNTANT_CLASSES), mech.name


@pytest.mark.parametrize("pair", SUPPORTED, ids=_id)
def test_epsilon_is_monotone_in_steps_rate_and_noise(pair):
    cls, acc = pair
    mech = cls.example()
    base = epsilon(acc, mech, Q, STEPS)
    assert 0.0 < base < math.inf
    assert epsilon(acc, mech, Q, STEPS // 2) <= base <= epsilon(acc, mech, Q, STEPS * 2)
    assert epsilon(acc, mech, Q / 2, STEPS) <= base <= epsilon(acc, mech, min(1.0, Q * 2), STEPS)
    assert epsilon(acc, noisier(mech), Q, STEPS) <= base


@pytest.mark.parametrize("pair", SUPPORTED, ids=_id)
def test_composing_twice_equals_doubling_the_steps(pair):
    cls, acc = pair
    mech = cls.example()
    twice = acc().compose(dp_sgd_event(mech, Q, STEPS)).compose(dp_sgd_event(mech, Q, STEPS))
    assert twice.get_epsilon(DELTA) == pytest.approx(epsilon(acc, mech, Q, 2 * STEPS), rel=1e-9)


@pytest.mark.parametrize("pair", SUPPORTED, ids=_id)
def test_never_below_a_known_lower_bound(pair):
    cls, acc = pair
    mech = cls.example()
    for steps in (1, 10):
        floor = lower_bound(mech, steps)
        if floor is None:
            continue
        assert epsilon(acc, mech, 1.0, steps) >= floor * (1 - 1e-9), (steps, floor)


@pytest.mark.parametrize("pair", REFUSED, ids=_id)
def test_refusal_is_clean(pair, capsys, tmp_path):
    cls, acc = pair
    mech = cls.example()
    with pytest.raises(UnsupportedError, match=acc.name):
        acc().compose(dp_sgd_event(mech, Q, STEPS))
    params = tmp_path / "params.json"
    params.write_text(json.dumps(dict(cls.example_params)))
    args = ["--mechanism", cls.name, "--params", params, "--accountant", acc.name]
    code = main([str(a) for a in ("account", *args, "--sample-rate", Q, "--steps", STEPS, "--delta", DELTA, "--json")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and acc.name in err

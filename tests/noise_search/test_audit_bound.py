"""The one-run auditing bound (Steinke, Nasr & Jagielski 2023) against direct computations."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from noise_search.audit_bound import (
    MIN_GUESSES,
    audit_scores,
    count_correct,
    epsilon_lower_bound,
    guess_schedule,
    p_value,
)
from noise_search.errors import InputError, ParameterError


def exact_tail(r: int, v: int, eps: float) -> Fraction:
    """P[Binomial(r, e^eps/(1+e^eps)) >= v] in exact rational arithmetic (q rounded once)."""
    q = Fraction(1 / (1 + math.exp(-eps)))
    return sum((math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(v, r + 1)), Fraction(0))


def exact_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The (eps, delta) p-value by its definition, term by term (no cumulative sums)."""
    q = Fraction(1 / (1 + math.exp(-eps)))

    def pmf(j: int) -> Fraction:
        return math.comb(r, j) * q**j * (1 - q) ** (r - j)

    tail = exact_tail(r, v, eps)
    alpha = max((sum((pmf(j) for j in range(v - i, v)), Fraction(0)) / i for i in range(1, v + 1)), default=0)
    return min(float(tail + 2 * m * Fraction(delta) * alpha), 1.0)


@pytest.mark.parametrize(
    ("r", "v", "eps"),
    [(1, 1, 0.0), (5, 3, 0.7), (10, 10, 2.0), (20, 15, 1.3), (30, 0, 1.0), (40, 37, 3.5), (60, 31, 0.05)],
)
def test_pure_dp_p_value_is_the_binomial_tail(r: int, v: int, eps: float) -> None:
    got = p_value(eps, canaries=100, guesses=r, correct=v, delta=0.0)
    assert got == pytest.approx(float(exact_tail(r, v, eps)), rel=1e-10, abs=1e-300)


@pytest.mark.parametrize(
    ("m", "r", "v", "eps", "delta"),
    [
        (10, 6, 5, 0.5, 0.01),
        (50, 20, 16, 1.2, 1e-3),
        (100, 40, 35, 2.0, 1e-5),
        (200, 30, 30, 3.0, 1e-4),
        (8, 8, 6, 0.1, 0.2),
    ],
)
def test_approximate_dp_p_value_matches_definition(m: int, r: int, v: int, eps: float, delta: float) -> None:
    got = p_value(eps, canaries=m, guesses=r, correct=v, delta=delta)
    assert got == pytest.approx(exact_p_value(m, r, v, eps, delta), rel=1e-10, abs=1e-300)


def test_delta_term_only_adds() -> None:
    for eps in (0.0, 0.5, 2.0):
        pure = p_value(eps, canaries=100, guesses=50, correct=40)
        approx = p_value(eps, canaries=100, guesses=50, correct=40, delta=1e-4)
        assert approx > pure


@pytest.mark.parametrize(("r", "confidence"), [(1, 0.5), (10, 0.95), (100, 0.95), (1000, 0.99), (64, 0.8)])
def test_all_correct_has_closed_form(r: int, confidence: float) -> None:
    # v = r and delta = 0: P[B >= r] = q^r, so the bound solves q^r = 1 - confidence.
    q = (1 - confidence) ** (1 / r)
    expected = max(math.log(q / (1 - q)), 0.0)
    got = epsilon_lower_bound(canaries=max(r, 2), guesses=r, correct=r, delta=0.0, confidence=confidence)
    assert got == pytest.approx(expected, abs=2e-7)
    assert got <= expected + 1e-12  # rounded down


@pytest.mark.parametrize(
    ("r", "v", "confidence", "published"),
    [(100, 100, 0.95, 3.4791953936219215), (100, 100, 0.99, 3.023197554051876), (100, 60, 0.95, 0.05073561053723097),
     (35, 23, 0.95, 0.014548719860613346)],
)  # fmt: skip
def test_matches_independently_published_bounds(r: int, v: int, confidence: float, published: float) -> None:
    # Bounds published by an unrelated project that runs the same one-run audit (m = 500 canaries,
    # delta = 1e-5): huggingface.co/codedp-ase26/codedp-cpt-models, starcoder2-7b/{dp3,dp8}/audit_results.json
    # and melihcatal/codedp-cpt-models starcoder2-7b/base/audit_results.json. An independent check of the
    # delta > 0 term (the pure tail alone gives 3.4930 for the first case).
    got = epsilon_lower_bound(canaries=500, guesses=r, correct=v, delta=1e-5, confidence=confidence)
    assert got == pytest.approx(published, abs=2e-7)


@pytest.mark.parametrize(("m", "r", "v", "delta"), [(100, 50, 40, 0.0), (1000, 250, 230, 1e-5), (500, 100, 95, 1e-3)])
def test_bound_is_the_rejection_boundary(m: int, r: int, v: int, delta: float) -> None:
    lb = epsilon_lower_bound(canaries=m, guesses=r, correct=v, delta=delta, confidence=0.95)
    assert lb > 0
    # every eps up to the bound is rejected, and just above it is not
    for eps in np.linspace(0.0, lb, 25):
        assert p_value(float(eps), canaries=m, guesses=r, correct=v, delta=delta) <= 0.05
    assert p_value(lb + 1e-5, canaries=m, guesses=r, correct=v, delta=delta) > 0.05


def test_nothing_rejected_gives_zero() -> None:
    assert epsilon_lower_bound(canaries=100, guesses=50, correct=25) == 0.0
    assert epsilon_lower_bound(canaries=100, guesses=0, correct=0) == 0.0
    assert epsilon_lower_bound(canaries=100, guesses=50, correct=0) == 0.0


def test_p_value_monotone_in_epsilon_when_2m_delta_at_most_one() -> None:
    # the proof in the module docstring; checked on a grid for several (m, r, v)
    eps = np.linspace(0, 8, 400)
    for m, r, v, delta in [(1000, 100, 80, 5e-4), (100, 30, 29, 5e-3), (50, 50, 26, 0.01)]:
        assert 2 * m * delta <= 1
        p = [p_value(float(e), canaries=m, guesses=r, correct=v, delta=delta) for e in eps]
        assert np.all(np.diff(p) >= -1e-15)


def test_bound_monotone_in_its_inputs() -> None:
    def lb(**kw) -> float:
        args = {"canaries": 1000, "guesses": 200, "correct": 180, "delta": 1e-5, "confidence": 0.95} | kw
        return epsilon_lower_bound(**args)

    by_correct = [lb(correct=v) for v in range(100, 201, 10)]
    assert by_correct[0] == 0.0
    assert np.all(np.diff(by_correct) >= 0) and np.all(np.diff(by_correct[3:]) > 0)
    by_confidence = [lb(confidence=c) for c in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)]
    assert np.all(np.diff(by_confidence) < 0)
    by_delta = [lb(delta=d) for d in (0.0, 1e-6, 1e-5, 1e-4, 1e-3)]
    assert np.all(np.diff(by_delta) <= 0)
    assert by_delta[-1] < by_delta[0]
    # perfect guessing: more guesses prove more
    by_guesses = [lb(guesses=r, correct=r) for r in (10, 50, 100, 500, 1000)]
    assert np.all(np.diff(by_guesses) > 0)


def test_bound_is_valid_for_randomized_response() -> None:
    # eps0-DP randomized response on each inclusion bit, every canary guessed: the number of correct
    # guesses is exactly Binomial(m, e^eps0/(1+e^eps0)), the extreme case of the theorem, so the bound
    # may exceed eps0 in at most 5% of runs (a bound off by one in the tail would fail this).
    rng = np.random.default_rng(7)
    eps0, m, runs = 1.0, 200, 600
    keep = 1 / (1 + math.exp(-eps0))
    above = 0
    for _ in range(runs):
        inc = rng.random(m) < 0.5
        answer = np.where(rng.random(m) < keep, inc, ~inc)
        scores = answer + 1e-3 * rng.random(m)
        v = count_correct(scores, inc, int(answer.sum()), m - int(answer.sum()))
        above += epsilon_lower_bound(canaries=m, guesses=m, correct=v, confidence=0.95) > eps0
    rate = above / runs
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)
    assert rate > 0.005  # the theorem is tight here: some runs do come close to the 5%


def test_guess_schedule() -> None:
    assert guess_schedule(1000) == (1000, 500, 250, 125, 62, 31, 16)
    assert guess_schedule(10) == (10,)
    assert guess_schedule(40) == (40, 20)
    for m in (2, 17, 33, 100, 5000, 10**6):
        s = guess_schedule(m)
        assert s[0] == m and len(s) <= 7 and all(r >= MIN_GUESSES for r in s[1:])
        assert list(s) == sorted(set(s), reverse=True)


def test_count_correct() -> None:
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    inc = np.array([True, False, True, False, True, False])
    assert count_correct(scores, inc, 2, 2) == 1 + 1  # top {0,1}: 1 right; bottom {4,5}: 1 right
    assert count_correct(scores, inc, 1, 0) == 1
    assert count_correct(scores, inc, 0, 1) == 1
    assert count_correct(scores, inc, 3, 3) == 2 + 2


def test_audit_scores_perfect_separation_uses_bonferroni() -> None:
    rng = np.random.default_rng(3)
    inc = rng.random(400) < 0.5
    scores = inc * 100.0 + rng.random(400)
    res = audit_scores(scores, inc, delta=0.0, confidence=0.95)
    sched = guess_schedule(400)
    level = 1 - 0.05 / len(sched)
    assert [e.guesses for e in res.entries] == list(sched)
    n_in = int(inc.sum())
    for e in res.entries:
        assert e.positive + e.negative == e.guesses
        # perfect separation: every guess is right unless it must spill over into the other class
        assert e.correct == min(e.positive, n_in) + min(e.negative, 400 - n_in)
        assert e.epsilon_lower_bound == epsilon_lower_bound(
            canaries=400, guesses=e.guesses, correct=e.correct, confidence=level
        )
    assert res.epsilon_lower_bound == max(e.epsilon_lower_bound for e in res.entries)
    assert res.correct == res.guesses < 400
    # one fixed guess count needs no correction
    single = audit_scores(scores, inc, delta=0.0, confidence=0.95, schedule=[200])
    assert single.epsilon_lower_bound == pytest.approx(
        epsilon_lower_bound(canaries=400, guesses=200, correct=200, confidence=0.95)
    )


def test_audit_scores_uninformative_scores_give_small_bounds() -> None:
    rng = np.random.default_rng(11)
    above = 0
    for _ in range(20):
        inc = rng.random(500) < 0.5
        res = audit_scores(rng.normal(size=500), inc, delta=1e-5)
        above += res.epsilon_lower_bound > 0
    assert above <= 2  # eps = 0 holds here; the bound is positive with probability <= 5%


def test_audit_scores_rejects_bad_input() -> None:
    with pytest.raises(ParameterError, match=r"^canaries"):
        audit_scores([1.0], [True], delta=1e-5)
    with pytest.raises(InputError, match="equal length"):
        audit_scores([1.0, 2.0], [True], delta=1e-5)
    with pytest.raises(InputError, match="finite"):
        audit_scores([1.0, float("nan")], [True, False], delta=1e-5)
    with pytest.raises(ParameterError, match=r"^confidence"):
        audit_scores([1.0, 2.0], [True, False], delta=1e-5, confidence=1.0)
    with pytest.raises(ParameterError, match=r"^delta"):
        audit_scores([1.0, 2.0], [True, False], delta=-1e-5)
    with pytest.raises(ParameterError, match=r"^schedule"):
        audit_scores([1.0, 2.0], [True, False], delta=1e-5, schedule=[3])
    with pytest.raises(InputError, match="included"):
        audit_scores([1.0, 2.0], [2, 0], delta=1e-5)
    with pytest.raises(ParameterError, match=r"^correct"):
        p_value(1.0, canaries=10, guesses=3, correct=4)
    with pytest.raises(ParameterError, match=r"^guesses"):
        epsilon_lower_bound(canaries=10, guesses=11, correct=4)

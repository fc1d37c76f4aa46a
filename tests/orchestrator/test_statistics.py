"""The statistics of a sweep's page (orchestrator/statistics.py), checked against known laws.

Coverage is checked by simulation with the very functions the report uses: per-seed accuracies
of models evaluated on one shared test set (every seed sees the same sentences, so the test
set's sampling error is common to all seeds), seed-to-seed training noise on top.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.statistics import (
    CELL_WILSON,
    Cell,
    Plan,
    cell_interval,
    compare,
    holm,
    paired_t,
    seed_interval,
    t_bounds,
    wilson,
)


def shared_test_set(rng, mu: float, tau: float, n: int, k: int, sims: int) -> np.ndarray:
    """``(sims, k)`` accuracies: each simulated sweep draws ``n`` test items once; seed s's model
    has population accuracy ``q_s ~ N(mu, tau^2)`` and gets right the items easier than ``q_s``
    (so models agree on which items are easy: the test set's error is common to all seeds, the
    case a seeds-only interval misses)."""
    items = rng.random((sims, n))
    quality = rng.normal(mu, tau, (sims, k))
    return (items[:, None, :] < quality[:, :, None]).mean(axis=-1)


def independent_test_sets(rng, mu: float, tau: float, n: int, k: int, sims: int) -> np.ndarray:
    """``(sims, k)`` accuracies, each seed on its own binomial draw (no common error)."""
    quality = np.clip(rng.normal(mu, tau, (sims, k)), 0, 1)
    return rng.binomial(n, quality) / n


@pytest.mark.parametrize(
    ("mu", "tau", "n", "k"),
    [(0.75, 0.005, 1010, 3), (0.55, 0.04, 1010, 3), (0.6, 0.02, 300, 5), (0.75, 0.01, 1010, 12), (0.6, 0.0, 300, 3)],
    ids=["gaussian-like", "laplace-like", "small-test-set", "twelve-seeds", "no-seed-noise"],
)
def test_cell_intervals_cover_the_mean_accuracy_95_percent_by_simulation(rng, mu, tau, n, k) -> None:
    sims = 3000
    acc = shared_test_set(rng, mu, tau, n, k, sims)
    _, lo, hi = seed_interval(acc, n)
    coverage = np.mean((lo <= mu) & (mu <= hi))
    assert 0.935 <= coverage <= 0.985, coverage  # about 95%, never much below
    # the seeds alone miss the shared test-set error whenever training noise is small
    _, lo_seeds, hi_seeds = seed_interval(acc, None)
    if tau <= 0.02:
        assert np.mean((lo_seeds <= mu) & (mu <= hi_seeds)) < 0.9
    # seeds on independent test draws: the interval stays valid (conservative)
    _, lo, hi = seed_interval(independent_test_sets(rng, mu, tau, n, k, sims), n)
    assert np.mean((lo <= mu) & (mu <= hi)) >= 0.94
    # the report's per-cell function is this method, row by row
    one = cell_interval(list(acc[0]), n)
    _, lo0, hi0 = seed_interval(acc[:1], n)
    assert (one.lo, one.hi) == pytest.approx((lo0[0], hi0[0]))


def test_one_seed_gets_the_test_sets_wilson_interval_and_says_so(rng) -> None:
    n, p = 300, 0.6
    lo, hi = wilson(rng.binomial(n, p, 20000) / n, n)
    assert 0.94 <= np.mean((lo <= p) & (p <= hi)) <= 0.96
    one = cell_interval([0.6], n)
    assert one.method == CELL_WILSON and "seed-to-seed" not in one.method  # labelled as the test set only
    assert (one.lo, one.hi) == pytest.approx(tuple(float(x) for x in wilson(0.6, n)))
    assert one.lo < 0.6 < one.hi and one.hi - one.lo == pytest.approx(2 * 1.96 * math.sqrt(0.24 / n), rel=0.02)
    assert cell_interval([0.6], None).lo is None  # no test-set size, one seed: no interval


def test_paired_t_intervals_cover_the_mean_difference(rng) -> None:
    diffs = rng.normal(0.02, 0.03, (20000, 4))
    mean, se, p = paired_t(diffs)
    lo, hi = t_bounds(mean, se, 4, np.full(20000, 0.05))
    assert 0.94 <= np.mean((lo <= 0.02) & (hi >= 0.02)) <= 0.96
    assert np.all((p <= 0.05) == ((lo > 0) | (hi < 0)))  # the test and the interval agree


def holm_by_definition(p: list[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure written out: reject the smallest while p_(i) <= alpha/(m - i)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = [False] * len(p)
    for step, i in enumerate(order):
        if p[i] > alpha / (len(p) - step):
            break
        rejected[i] = True
    return rejected


def test_holm_rejects_exactly_the_step_down_hypotheses_and_levels_match(rng) -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == (
        pytest.approx([0.03, 0.06, 0.06, 0.02]),
        pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125]),
        [True, False, False, True],
    )
    for _ in range(300):
        m = int(rng.integers(1, 8))
        p = list(rng.choice([rng.random(), rng.random() * 0.02, 0.0], size=m))
        adjusted, levels, rejected = holm(p)
        assert rejected == holm_by_definition(p, 0.05)
        assert all((a <= 0.05) == r for a, r in zip(adjusted, rejected, strict=True))
        # an interval at 1 - level excludes the null exactly for the rejected hypotheses
        assert all((pi <= lv) == r for pi, lv, r in zip(p, levels, rejected, strict=True))


def cells(eps: float, **scores: list[float]) -> list[Cell]:
    return [Cell(eps, name, dict(enumerate(s)), dict(enumerate(s))) for name, s in scores.items()]


def test_a_verdict_is_never_decided_when_its_corrected_interval_contains_zero(rng) -> None:
    decided = within = 0
    for _ in range(100):
        k = int(rng.integers(2, 9))
        arms = {f"m{i}": list(rng.normal(0.6 + rng.choice([0, 0.02, 0.1]), 0.03, k)) for i in range(3)}
        found = cells(1.0, **arms) + cells(2.0, **{a: list(np.array(s) + 0.05) for a, s in arms.items()})
        looks = int(rng.choice([1, 4]))
        for c in compare(found, Plan(looks=looks, adaptive=frozenset(arms))):
            lo, hi = c.ci95
            if c.verdict == "within_noise":
                within += 1
                continue
            decided += 1
            assert not lo <= 0 <= hi and c.p_value <= 0.05
            assert (c.verdict == "a_better") == (lo > 0)
    assert decided > 25 and within > 25  # both kinds were exercised


def test_bonferroni_over_looks_and_holm_set_the_level_of_each_interval() -> None:
    found = cells(1.0, a=[0.70, 0.72, 0.71, 0.69], b=[0.60, 0.63, 0.61, 0.58], c=[0.60, 0.62, 0.62, 0.60])
    plain = {c.mechanisms: c for c in compare(found)}
    looked = {c.mechanisms: c for c in compare(found, Plan(looks=4, adaptive=frozenset("abc")))}
    for pair, c in plain.items():
        assert c.p_value_unadjusted == looked[pair].p_value_unadjusted
        assert looked[pair].p_value >= c.p_value
        lo, hi = c.ci95
        llo, lhi = looked[pair].ci95
        assert llo <= lo and hi <= lhi  # charged the looks: wider
    # the smallest p-value is Holm's first step: its interval is at 1 - 0.05/3, the next at 1 - 0.05/2
    first, second, _ = sorted(plain.values(), key=lambda c: c.p_value_unadjusted)
    assert first.level == pytest.approx(1 - 0.05 / 3) and first.verdict == "a_better"
    assert second.level == pytest.approx(1 - 0.05 / 2) and second.verdict == "a_better"
    assert plain[("b", "c")].verdict == "within_noise"
    # the configured orientation is kept; otherwise pairs read alphabetically
    assert {c.mechanisms for c in compare(found, Plan(pairs=(("c", "a"),)))} == {("a", "b"), ("c", "a"), ("b", "c")}


def test_identical_arms_and_differences_that_never_vary_are_within_noise_without_nan() -> None:
    same = [0.61, 0.58, 0.64, 0.6]
    (c,) = compare(cells(0.5, laplace=same, twin=list(same)))
    assert c.verdict == "within_noise" and c.difference == 0.0 and c.ci95 == (0.0, 0.0)
    assert c.p_value == 1.0 and c.p_value_unadjusted == 1.0
    (c,) = compare(cells(0.5, a=[0.7, 0.6, 0.65], b=[0.6, 0.5, 0.55]))  # a exactly 0.1 ahead at every seed
    assert c.verdict == "within_noise" and c.difference == pytest.approx(0.1) and c.p_value is None
    assert "do not vary" in c.note and all(math.isfinite(x) for x in c.ci95)
    _, se, p = paired_t(np.zeros((2, 5)))
    assert list(p) == [1.0, 1.0] and list(se) == [0.0, 0.0]


def test_fewer_than_two_shared_seeds_cannot_be_decided() -> None:
    a = Cell(1.0, "a", {0: 0.9, 1: 0.91}, {})
    b = Cell(1.0, "b", {1: 0.5, 2: 0.52}, {})
    (c,) = compare([a, b])
    assert c.verdict == "within_noise" and c.seeds == 1 and c.ci95 is None and c.p_value is None
    assert c.difference == pytest.approx(0.41) and "one shared seed" in c.note
    (c,) = compare([a, Cell(1.0, "b", {5: 0.5}, {})])
    assert c.verdict == "within_noise" and c.difference is None and c.note == "no shared seeds"


def test_the_union_bound_over_looks_keeps_identical_arms_undecided(rng) -> None:
    """Identical arms, looked at after 3, 5, 8 and 12 seeds and stopped at the first decision, each
    look at 0.05 / 4: decided in at most 5% of sweeps (the rule the seeds-until-decided sweep and
    its test-score verdicts use). Looking at 0.05 each time would decide far more often."""
    sims, looks = 20000, (3, 5, 8, 12)
    diffs = rng.standard_t(5, (sims, looks[-1])) * 0.03  # heavy-tailed, mean 0
    ever, naive = np.zeros(sims, bool), np.zeros(sims, bool)
    for n in looks:
        _, _, p = paired_t(diffs[:, :n])
        ever |= p * len(looks) <= 0.05
        naive |= p <= 0.05
    assert ever.mean() <= 0.05 and naive.mean() > 0.08
    # compare() charges exactly this: a lone pair of adaptive arms is decided iff looks x p <= 0.05
    for _ in range(40):
        a, b = rng.normal(0.6, 0.03, 5), rng.normal(0.6, 0.03, 5) + rng.choice([0.0, 0.05])
        (c,) = compare(cells(1.0, a=list(a), b=list(b)), Plan(looks=4, adaptive=frozenset("ab")))
        assert (c.verdict != "within_noise") == (4 * c.p_value_unadjusted <= 0.05)


def test_a_cell_whose_interval_lies_below_the_majority_class_is_flagged() -> None:
    from orchestrator.statistics import analyse

    def rows(mech: str, scores: list[float]) -> list[dict]:
        return [
            {"mechanism": mech, "epsilon_target": 1.0, "learning_rate": 0.1, "clip": 1.0, "seed": s,
             "accuracy": a, "val_accuracy": a, "epsilon": 1.0}
            for s, a in enumerate(scores)
        ]  # fmt: skip

    # the case: Laplace at 0.427 on 300 test sentences against a majority class of 0.527
    out = analyse(rows("laplace", [0.427]) + rows("lmo", [0.51]), n_test=300, majority=0.527)
    flags = {c["mechanism"]: c["below_baseline"] for c in out["cells"]}
    assert flags == {"laplace": True, "lmo": False}  # lmo's interval reaches above 0.527
    assert {k: out["statistics"][k] for k in ("method", "confidence", "correction")} == {
        "method": "paired-t",
        "confidence": 0.95,
        "correction": "holm",
    }
    (c,) = out["comparisons"]
    assert c["verdict"] == "within_noise" and c["seeds"] == 1  # one seed decides nothing

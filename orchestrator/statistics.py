"""Uncertainty of a sweep's numbers: cell intervals, paired comparisons, multiplicity.

A *cell* is one (target epsilon, mechanism) of a sweep, or the non-private reference. Its
configuration is chosen on the validation split (:mod:`orchestrator.selection`); what is left is
one test score per seed. A *comparison* is two cells at the same target, compared seed by seed.
docs/statistics.md explains each choice; in short:

* **Cell interval** (:func:`cell_interval`), 95%: with ``k >= 2`` seeds, the mean plus or minus
  two half-widths added in quadrature, the seeds' t half-width (training randomness) and the
  test set's binomial one (the draw of the test sentences, which every seed shares); with one
  seed, the Wilson interval of the test set alone (seed-to-seed variation not included, and
  labelled so).
* **Comparison** (:func:`compare`): the per-seed differences ``a - b`` of the two cells' scores on
  their shared seeds, a paired t-test and t-interval (conditional on the test set, which both
  arms share). Fewer than two shared seeds, or differences that do not vary, cannot be decided.
* **Multiplicity**: Holm over every comparison of the page; a comparison whose seeds were added
  by a sequential rule (:mod:`orchestrator.sweep.sequential`) has its p-value multiplied by the
  number of planned looks first (Bonferroni over looks: valid at whichever look it stopped).
  Each interval is at the level its Holm step used, so a verdict is decided exactly when its
  interval excludes 0 and its adjusted p-value is at most 0.05.

Mechanisms are opaque names here. Everything is numpy/scipy; the core functions take arrays so
simulations can check them at scale (tests/orchestrator/test_statistics.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

#: the confidence of every reported interval (the JSON keys say ``ci95``)
CONFIDENCE = 0.95
#: family-wise error rate of the page's verdicts
ALPHA = 1.0 - CONFIDENCE

VERDICTS = ("a_better", "b_better", "within_noise")

METHOD = "paired-t"
CORRECTION = "holm"
CELL_T = "t over seeds + binomial test set"
CELL_T_SEEDS = "t over seeds (test-set size unknown)"
CELL_WILSON = "one seed: Wilson interval of the test set only"


# --- intervals -------------------------------------------------------------------------------------


def wilson(p: np.ndarray | float, n: int, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval ``(lo, hi)`` of a proportion ``p`` in [0, 1] observed on ``n >= 1``
    trials (here: one model's accuracy on ``n`` test examples)."""
    p = np.asarray(p, dtype=float)
    z = stats.norm.ppf(0.5 + confidence / 2)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def seed_interval(
    scores: np.ndarray, n_test: int | None = None, confidence: float = CONFIDENCE, *, proportion: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, lo, hi)`` for each row of ``scores`` (shape ``(..., k)``, ``k >= 2`` seeds).

    Two half-widths added in quadrature: the seeds' t half-width ``t_{k-1} s / sqrt(k)`` (``s``
    the sample standard deviation over seeds: training randomness) and, when ``n_test`` is given
    and the scores are proportions, the test set's normal half-width ``z sqrt(m (1 - m) / n_test)``
    (``m`` the mean: the draw of the test sentences, which every seed shares, so averaging seeds
    does not shrink it). Proportions are clipped to [0, 1].
    """
    scores = np.asarray(scores, dtype=float)
    k = scores.shape[-1]
    if k < 2:
        raise ValueError("seed_interval needs at least 2 seeds per row")
    mean = scores.mean(axis=-1)
    seed_half = stats.t.ppf(0.5 + confidence / 2, k - 1) * scores.std(axis=-1, ddof=1) / math.sqrt(k)
    if n_test and proportion:
        test_half = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(mean * (1 - mean) / n_test)
    else:
        test_half = np.zeros_like(mean)
    half = np.sqrt(seed_half**2 + test_half**2)
    lo, hi = mean - half, mean + half
    if proportion:
        lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
    return mean, lo, hi


@dataclass(frozen=True)
class Interval:
    """A cell's mean test score and its interval (``lo``/``hi`` None: no interval possible)."""

    mean: float
    lo: float | None
    hi: float | None
    method: str | None


def cell_interval(scores: Sequence[float], n_test: int | None, *, proportion: bool = True) -> Interval:
    """The 95% interval of one cell from its per-seed test scores (module docstring)."""
    values = np.asarray(scores, dtype=float)
    mean = float(values.mean())
    if len(values) >= 2:
        _, lo, hi = seed_interval(values, n_test, proportion=proportion)
        method = CELL_T if (n_test and proportion) else CELL_T_SEEDS
        return Interval(mean, float(lo), float(hi), method)
    if proportion and n_test:
        lo, hi = wilson(mean, n_test)
        return Interval(mean, float(lo), float(hi), CELL_WILSON)
    return Interval(mean, None, None, None)


# --- paired comparisons -----------------------------------------------------------------------------


def paired_t(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, standard error, two-sided p-value)`` of the paired t-test of each row of ``diffs``
    (shape ``(..., n)``, ``n >= 2``) against a mean of 0. Rows whose differences do not vary get
    standard error 0 and p-value 1 when they are all 0, NaN otherwise (no estimate of the noise)."""
    diffs = np.asarray(diffs, dtype=float)
    n = diffs.shape[-1]
    if n < 2:
        raise ValueError("paired_t needs at least 2 paired seeds per row")
    mean = diffs.mean(axis=-1)
    se = diffs.std(axis=-1, ddof=1) / math.sqrt(n)
    se = np.where(se <= 1e-12 * np.maximum(1.0, np.abs(mean)), 0.0, se)  # exact ties, up to rounding
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(mean) / se
    p = 2 * stats.t.sf(t, n - 1)
    p = np.where(se > 0, p, np.where(mean == 0, 1.0, np.nan))
    return mean, se, p


def t_bounds(mean: np.ndarray, se: np.ndarray, n: int, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided ``1 - alpha`` t-interval ``mean -/+ t_{n-1} se`` (``alpha`` per row)."""
    half = stats.t.ppf(1 - np.asarray(alpha, dtype=float) / 2, n - 1) * se
    return mean - half, mean + half


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> tuple[list[float], list[float], list[bool]]:
    """Holm's step-down procedure over ``pvalues`` (each in [0, 1]).

    Returns ``(adjusted p-values, levels, rejected)``: ``adjusted[i] = max over the steps up to
    i's of (m - step) p``, capped at 1; ``rejected[i]`` iff ``adjusted[i] <= alpha``; ``levels[i]``
    the significance level of i's step -- ``alpha / (m - step)`` for a rejected hypothesis, and for
    the others that of the step where the procedure stopped -- so that each rejected p-value is
    at most its level and no other is (an interval at ``1 - level`` excludes the null exactly for
    the rejected ones).
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (pvalues[i], i))
    adjusted, levels, rejected = [1.0] * m, [alpha] * m, [False] * m
    running, stopped_at = 0.0, None
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * pvalues[i]))
        adjusted[i] = running
        rejected[i] = running <= alpha and stopped_at is None
        if not rejected[i] and stopped_at is None:
            stopped_at = step
        levels[i] = alpha / (m - (step if stopped_at is None else stopped_at))
    return adjusted, levels, rejected


# --- cells and comparisons of a sweep ------------------------------------------------------------------


@dataclass
class Cell:
    """One (target, mechanism) of a sweep: its chosen configuration's scores per seed."""

    epsilon_target: float | None  #: None: the non-private reference
    mechanism: str  #: ``none`` for the non-private reference
    test: dict[int, float]  #: seed -> test score
    val: dict[int, float]  #: seed -> validation score (seeds with one)
    learning_rate: float | None = None
    clip: float | None = None

    @property
    def seeds(self) -> int:
        return len(self.test)


def _seed_of(row: Mapping[str, Any], index: int) -> int:
    seed = row.get("seed")
    return int(seed) if seed is not None else index


def cells_from_rows(rows: list[Mapping[str, Any]]) -> tuple[list[Cell], str, bool]:
    """``(cells, metric, higher is better)`` from trial rows (those of :func:`orchestrator.selection.select`
    with a ``seed``), the configuration of each cell chosen on validation over its seeds."""
    from orchestrator.selection import headline_metric, select_groups

    metric, higher = headline_metric(rows)
    cells = []
    for sel, group in select_groups(rows):
        test = {_seed_of(r, i): float(r[metric]) for i, r in enumerate(group)}
        val = {
            _seed_of(r, i): float(r[f"val_{metric}"]) for i, r in enumerate(group) if r.get(f"val_{metric}") is not None
        }
        cells.append(Cell(sel.epsilon_target, sel.mechanism, test, val, sel.learning_rate, sel.clip))
    return cells, metric, higher


@dataclass(frozen=True)
class Plan:
    """What the page's comparisons are corrected for.

    ``looks``: the planned looks of a sequential sweep (1: a fixed set of seeds); ``adaptive``: the
    mechanisms whose cells could be given more seeds (a comparison of two of them is charged
    ``looks``); ``pairs``: the configured orientation of pairs (``a`` first), others alphabetical.
    """

    looks: int = 1
    adaptive: frozenset[str] = frozenset()
    pairs: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"looks": self.looks, "adaptive": sorted(self.adaptive), "pairs": [list(p) for p in self.pairs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Plan:
        """A plan back from :meth:`to_dict` (None: a sweep that recorded none -- no looks)."""
        if not data:
            return cls()
        pairs = tuple((str(a), str(b)) for a, b in data.get("pairs") or ())
        return cls(int(data.get("looks") or 1), frozenset(data.get("adaptive") or ()), pairs)

    def looks_of(self, a: str, b: str) -> int:
        return self.looks if a in self.adaptive and b in self.adaptive else 1

    def orient(self, a: str, b: str) -> tuple[str, str]:
        if (b, a) in self.pairs and (a, b) not in self.pairs:
            return b, a
        if (a, b) in self.pairs:
            return a, b
        return (a, b) if a <= b else (b, a)


@dataclass
class Comparison:
    """Two cells at one target: the contract's fields and how they were reached."""

    epsilon_target: float | None
    mechanisms: tuple[str, str]
    difference: float | None  #: mean of a - b over the shared seeds
    ci95: tuple[float, float] | None
    p_value: float | None  #: adjusted (Holm, and looks where seeds were added sequentially)
    verdict: str
    seeds: int  #: shared seeds
    p_value_unadjusted: float | None = None
    level: float | None = None  #: confidence of ``ci95`` (the level its Holm step used)
    looks: int = 1
    note: str | None = None
    se: float = field(default=0.0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("se")
        out["mechanisms"] = list(self.mechanisms)
        out["ci95"] = None if self.ci95 is None else list(self.ci95)
        return out


def compare(
    cells: list[Cell], plan: Plan | None = None, *, score: str = "test", higher: bool = True
) -> list[Comparison]:
    """Every pair of private cells at the same target, paired by seed on ``score`` (``test`` or
    ``val``), with Holm over all of them and each verdict from its corrected interval."""
    plan = plan or Plan()
    by_target: dict[float, list[Cell]] = {}
    for c in cells:
        if c.epsilon_target is not None:
            by_target.setdefault(c.epsilon_target, []).append(c)
    out: list[Comparison] = []
    for eps in sorted(by_target):
        group = sorted(by_target[eps], key=lambda c: c.mechanism)
        for i, first in enumerate(group):
            for second in group[i + 1 :]:
                a_name, b_name = plan.orient(first.mechanism, second.mechanism)
                a, b = (first, second) if a_name == first.mechanism else (second, first)
                out.append(_pair(eps, a, b, plan.looks_of(a_name, b_name), score))
    _correct(out, higher)
    return out


def _pair(eps: float, a: Cell, b: Cell, looks: int, score: str) -> Comparison:
    sa, sb = (a.test, b.test) if score == "test" else (a.val, b.val)
    shared = sorted(set(sa) & set(sb))
    names = (a.mechanism, b.mechanism)
    if not shared:
        return Comparison(eps, names, None, None, None, "within_noise", 0, looks=looks, note="no shared seeds")
    diffs = np.array([sa[s] - sb[s] for s in shared])
    if len(shared) < 2:
        note = "one shared seed: the seed-to-seed noise is unknown, so the comparison cannot be decided"
        return Comparison(eps, names, float(diffs[0]), None, None, "within_noise", 1, looks=looks, note=note)
    mean, se, p = paired_t(diffs)
    if np.isnan(p):
        note = "the per-seed differences do not vary: the seeds carry no estimate of the noise, so not decided"
        d = float(mean)
        return Comparison(eps, names, d, (d, d), None, "within_noise", len(shared), looks=looks, note=note)
    return Comparison(eps, names, float(mean), None, float(p), "within_noise", len(shared), float(p), looks=looks,
                      se=float(se))  # fmt: skip


def _correct(comparisons: list[Comparison], higher: bool) -> None:
    """Holm over every comparison with two or more shared seeds (looks-adjusted p-values; one whose
    differences do not vary counts as p = 1), their intervals at their step's level, and the
    verdicts (decided only if the interval excludes 0 and the adjusted p <= alpha)."""
    family = [c for c in comparisons if c.seeds >= 2]
    if not family:
        return
    raw = [1.0 if c.p_value_unadjusted is None else min(1.0, c.looks * c.p_value_unadjusted) for c in family]
    adjusted, levels, rejected = holm(raw)
    for c, p_adj, level, reject in zip(family, adjusted, levels, rejected, strict=True):
        if c.p_value_unadjusted is None:  # no variation: the interval stays the difference itself
            continue
        alpha = level / c.looks
        lo, hi = t_bounds(np.float64(c.difference), np.float64(c.se), c.seeds, np.float64(alpha))
        c.ci95 = (float(lo), float(hi))
        c.p_value = p_adj
        c.level = 1.0 - alpha
        if reject and lo > 0:
            c.verdict = "a_better" if higher else "b_better"
        elif reject and hi < 0:
            c.verdict = "b_better" if higher else "a_better"
        if c.seeds < 3 and c.verdict == "within_noise":
            c.note = c.note or "two shared seeds: a t-test with 1 degree of freedom rarely decides"


# --- the page's analysis ----------------------------------------------------------------------------------


def summarize_cells(
    cells: list[Cell],
    metric: str,
    *,
    n_test: int | None,
    majority: float | None,
    stopping: Mapping[tuple[str, float | None], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The contract's ``cells``: ``{epsilon_target, mechanism, seeds, test_mean, test_ci95, val_mean,
    below_baseline}`` plus ``interval`` (the method), ``learning_rate``, ``clip``, ``stopped``
    (why the cell has this many seeds) and ``test_sd`` (seed to seed)."""
    proportion = metric == "accuracy"
    out = []
    for c in cells:
        tests = [c.test[s] for s in sorted(c.test)]
        ci = cell_interval(tests, n_test, proportion=proportion)
        below = bool(proportion and majority is not None and ci.hi is not None and ci.hi < majority)
        stop = (stopping or {}).get((c.mechanism, c.epsilon_target)) or {}
        out.append(
            {
                "epsilon_target": c.epsilon_target,
                "mechanism": c.mechanism,
                "seeds": c.seeds,
                "test_mean": ci.mean,
                "test_ci95": None if ci.lo is None else [ci.lo, ci.hi],
                "val_mean": float(np.mean(list(c.val.values()))) if c.val else None,
                "below_baseline": below,
                "interval": ci.method,
                "test_sd": float(np.std(tests, ddof=1)) if len(tests) >= 2 else None,
                "learning_rate": c.learning_rate,
                "clip": c.clip,
                "stopped": stop.get("stopped", "fixed"),
            }
        )
    out.sort(key=lambda r: (r["epsilon_target"] is None, r["epsilon_target"] or 0.0, r["mechanism"]))
    return out


def statistics_block(plan: Plan, metric: str, n_test: int | None, comparisons: int) -> dict[str, Any]:
    """The contract's ``statistics``: ``{method, confidence, correction}`` plus what they mean here."""
    return {
        "method": METHOD,
        "confidence": CONFIDENCE,
        "correction": CORRECTION,
        "comparisons": comparisons,
        "looks": plan.looks,
        "metric": metric,
        "n_test": n_test,
        "cell_interval": f"{CELL_T}; {CELL_WILSON}",
        "paired_on": "test score of each cell's configuration chosen on validation, per shared seed",
    }


def analyse(
    rows: list[Mapping[str, Any]],
    *,
    n_test: int | None,
    majority: float | None,
    plan: Plan | None = None,
    stopping: Mapping[tuple[str, float | None], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """``{"cells", "comparisons", "statistics"}`` of a sweep's finished trial rows."""
    plan = plan or Plan()
    cells, metric, higher = cells_from_rows(rows)
    comparisons = compare(cells, plan, score="test", higher=higher)
    return {
        "cells": summarize_cells(cells, metric, n_test=n_test, majority=majority, stopping=stopping),
        "comparisons": [c.to_dict() for c in comparisons],
        "statistics": statistics_block(plan, metric, n_test, len(comparisons)),
    }


def verdict_text(c: Mapping[str, Any], unit: float = 100.0, suffix: str = " points") -> str:
    """One comparison in words: who is ahead (only when decided), the difference and its interval."""
    a, b = c["mechanisms"]
    if c["difference"] is None:
        return f"{a} vs {b}: no shared seeds"
    ci = c.get("ci95")
    span = "" if ci is None else f" [{unit * ci[0]:+.1f}, {unit * ci[1]:+.1f}]"
    diff = f"{unit * c['difference']:+.1f}{suffix}{span}"
    p = "" if c.get("p_value") is None else f", p = {c['p_value']:.2g}"
    if c["verdict"] == "a_better":
        return f"{a} ahead of {b}: {diff}{p}"
    if c["verdict"] == "b_better":
        return f"{b} ahead of {a}: {a} - {b} = {diff}{p}"
    return f"{a} vs {b}: within noise ({a} - {b} = {diff}{p})"

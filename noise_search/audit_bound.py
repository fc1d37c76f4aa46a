"""One-run privacy auditing: an empirical epsilon *lower* bound from canary guesses.

Method: Steinke, Nasr and Jagielski (2023), "Privacy Auditing with One (1) Training Run",
arXiv:2305.08846 (NeurIPS 2023). Implemented here from the paper's statement, in numpy/scipy.

Set-up (the paper's auditor). ``m`` canaries are each included in the input independently
with probability 1/2 (``S_i = +1`` in, ``-1`` out). After one run of the algorithm the
auditor scores every canary, guesses "in" (``T_i = +1``) for the ``k_+`` highest scores,
"out" (``T_i = -1``) for the ``k_-`` lowest and abstains on the rest. With
``r = k_+ + k_-`` guesses, of which ``v`` are correct (``v = #{i : T_i S_i = +1}``):

* **pure DP** (the paper's main theorem): if the algorithm is ``eps``-DP in each canary's
  inclusion, the number of correct guesses is stochastically dominated by
  ``Binomial(r, e^eps / (1 + e^eps))``, so ``P[V >= v] <= P[Binomial(r, q) >= v]`` with
  ``q = e^eps / (1 + e^eps)`` -- the accuracy of ``eps``-DP randomized response;
* **approximate DP** (the paper's ``(eps, delta)`` theorem, Theorem 5.2 of arXiv:2305.08846,
  in the numerical form the paper evaluates): the tail gains a ``delta`` term,

      p(eps) = min(1, beta + 2 m delta alpha),
      beta   = P[B >= v],
      alpha  = max_{1 <= i <= v} P[v - i <= B <= v - 1] / i,      B ~ Binomial(r, q).

``p(eps)`` is a p-value for the null hypothesis "the algorithm is ``(eps, delta)``-DP". The
lower bound at confidence ``c`` is the largest ``eps`` that is rejected at level ``1 - c``
together with every smaller ``eps``: ``eps_lb = inf{eps >= 0 : p(eps) > 1 - c}``. If the
algorithm is ``(eps*, delta)``-DP and ``eps_lb > eps*``, then ``p(eps*) <= 1 - c``, an event
of probability at most ``1 - c``; so ``eps_lb <= eps*`` with probability ``>= c``.

Which form is used: :func:`p_value` computes the exact binomial tail for ``delta = 0`` and the
``delta > 0`` form above otherwise (it reduces to the tail at ``delta = 0``). The ``delta > 0``
form is the one to compare with an accountant's ``(eps, delta)`` upper bound: that bound only
claims ``(eps, delta)``-DP, not ``eps``-DP, so the pure tail would test a stronger claim than
the one made. Numerically: ``q = expit(eps)``, ``beta`` by ``scipy.stats.binom.sf``, and the
windows ``P[v - i <= B <= v - 1]`` as cumulative sums of the pmf from ``v - 1`` downwards
(no subtraction of two CDFs close to 1).

Monotonicity (used for the root search): each term ``beta + (2 m delta / i) P[v-i <= B < v]``
has ``q``-derivative ``r [b(v-1) (1 - 2 m delta / i) + (2 m delta / i) b(v-i-1)]`` (``b`` the
``Binomial(r-1, q)`` pmf), which is ``>= 0`` for every ``i >= 1`` when ``2 m delta <= 1``. Then
``p`` is nondecreasing in ``eps`` and bisection finds ``eps_lb``. For ``2 m delta > 1`` the
first crossing is located by a dense scan first (:data:`SCAN_POINTS` points), then bisected.

Choosing the number of guesses. Picking ``r`` after seeing which ``r`` gives the largest bound
would invalidate the confidence. :func:`audit_scores` instead evaluates a **fixed schedule** of
guess counts that depends only on ``m`` (:func:`guess_schedule`: ``m, m/2, m/4, ...``, at least
:data:`MIN_GUESSES`) and tests each at level ``(1 - c) / K`` (Bonferroni over the ``K``
schedule entries); the maximum over the schedule is then a valid lower bound at confidence
``c`` by the union bound.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit
from scipy.stats import binom

from noise_search.accountants import check_accounting_inputs
from noise_search.errors import InputError, ParameterError, check_int, check_range

#: Smallest guess count :func:`guess_schedule` proposes (fewer guesses cannot give a useful bound).
MIN_GUESSES = 16
#: Most entries of the default schedule (each costs a Bonferroni factor).
MAX_SCHEDULE = 7
#: Grid points of the scan used when ``2 m delta > 1`` (``p`` may then be non-monotone).
SCAN_POINTS = 2049
#: Absolute precision of the returned lower bound (it is always rounded *down*).
EPS_TOL = 1e-7


def _check_counts(canaries: int, guesses: int, correct: int) -> tuple[int, int, int]:
    m = check_int("canaries", canaries, ge=1)
    r = check_int("guesses", guesses, ge=0)
    v = check_int("correct", correct, ge=0)
    if r > m:
        raise ParameterError("guesses", f"must be <= canaries ({m}), got {r}")
    if v > r:
        raise ParameterError("correct", f"must be <= guesses ({r}), got {v}")
    return m, r, v


def _check_delta(delta: float) -> float:
    return check_range("delta", delta, ge=0.0, lt=1.0)


def _check_confidence(confidence: float) -> float:
    return check_range("confidence", confidence, gt=0.0, lt=1.0)


def _p_value(eps: float, m: int, r: int, v: int, delta: float) -> float:
    """:func:`p_value` without input checks."""
    if v == 0:
        return 1.0
    q = float(expit(eps))
    tail = float(binom.sf(v - 1, r, q))  # P[B >= v]
    if delta == 0.0:
        return min(tail, 1.0)
    # windows[i-1] = P[v - i <= B <= v - 1] for i = 1..v
    windows = np.cumsum(binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(windows / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * alpha, 1.0)


def p_value(eps: float, *, canaries: int, guesses: int, correct: int, delta: float = 0.0) -> float:
    """p-value of the claim "(eps, delta)-DP" after ``correct`` of ``guesses`` guesses were right.

    ``canaries`` is ``m`` (all canaries, guessed or not), ``eps >= 0``, ``0 <= delta < 1``.
    Returns ``min(1, P[B >= v] + 2 m delta alpha)`` (module docstring); for ``delta = 0``
    exactly ``P[Binomial(r, e^eps/(1+e^eps)) >= v]``. In ``[0, 1]``.
    """
    m, r, v = _check_counts(canaries, guesses, correct)
    e = check_range("epsilon", eps, ge=0.0)
    return _p_value(e, m, r, v, _check_delta(delta))


def epsilon_lower_bound(
    *, canaries: int, guesses: int, correct: int, delta: float = 0.0, confidence: float = 0.95
) -> float:
    """Largest ``eps`` such that "(eps', delta)-DP" is rejected for every ``eps' <= eps``.

    Rejection is at significance ``1 - confidence`` (``confidence`` in (0, 1)). Returns 0.0
    when not even ``eps = 0`` is rejected. The value is rounded down to :data:`EPS_TOL`, so
    ``p_value(result) <= 1 - confidence`` always holds.
    """
    m, r, v = _check_counts(canaries, guesses, correct)
    d = _check_delta(delta)
    level = 1.0 - _check_confidence(confidence)

    def rejected(eps: float) -> bool:
        return _p_value(eps, m, r, v, d) <= level

    if not rejected(0.0):
        return 0.0
    hi = 1.0
    while rejected(hi):  # terminates: p -> 1 as eps -> inf (q -> 1 makes P[B >= v] -> 1)
        hi *= 2.0
    lo = 0.0
    if 2.0 * m * d > 1.0:  # p may be non-monotone: find the first crossing on a grid first
        grid = np.linspace(0.0, hi, SCAN_POINTS)
        for a, b in itertools.pairwise(grid):
            if not rejected(float(b)):
                lo, hi = float(a), float(b)
                break
    while hi - lo > EPS_TOL:
        mid = 0.5 * (lo + hi)
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return lo


def guess_schedule(canaries: int) -> tuple[int, ...]:
    """Default guess counts for ``m`` canaries: ``m, m/2, m/4, ...`` (rounded), each
    ``>= MIN_GUESSES`` (or just ``m`` when ``m`` is smaller), at most :data:`MAX_SCHEDULE`.

    Depends on ``m`` only, never on the scores, so testing every entry with a Bonferroni
    correction keeps the confidence (module docstring).
    """
    m = check_int("canaries", canaries, ge=1)
    out = [m]
    r = m / 2.0
    while len(out) < MAX_SCHEDULE and round(r) >= MIN_GUESSES:
        if round(r) != out[-1]:
            out.append(round(r))
        r /= 2.0
    return tuple(out)


@dataclass(frozen=True)
class GuessResult:
    """Outcome of one schedule entry: ``guesses = positive + negative``, ``correct`` of them right,
    and the lower bound this entry proves at the Bonferroni-corrected level."""

    guesses: int
    positive: int
    negative: int
    correct: int
    epsilon_lower_bound: float


@dataclass(frozen=True)
class OneRunAudit:
    """An empirical epsilon lower bound from one run.

    ``epsilon_lower_bound`` holds with probability ``>= confidence`` for an algorithm that is
    ``(eps, delta)``-DP in each canary; ``guesses``/``correct`` are those of the schedule
    entry that gave it (the largest guess count on ties); ``entries`` lists every entry.
    """

    epsilon_lower_bound: float
    guesses: int
    correct: int
    canaries: int
    delta: float
    confidence: float
    entries: tuple[GuessResult, ...]

    def to_dict(self) -> dict:
        return {
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "guesses": self.guesses,
            "correct": self.correct,
            "canaries": self.canaries,
            "delta": self.delta,
            "confidence": self.confidence,
            "schedule": [asdict(e) for e in self.entries],
        }


def count_correct(scores: np.ndarray, included: np.ndarray, positive: int, negative: int) -> int:
    """Correct guesses when the ``positive`` highest scores are guessed in and the ``negative``
    lowest guessed out (ties broken by canary index, i.e. by a stable sort)."""
    order = np.argsort(-scores, kind="stable")
    top = order[:positive]
    bottom = order[len(order) - negative :] if negative > 0 else order[:0]
    return int(np.count_nonzero(included[top]) + np.count_nonzero(~included[bottom]))


def audit_scores(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    schedule: Sequence[int] | None = None,
) -> OneRunAudit:
    """Epsilon lower bound from canary ``scores`` (higher = more likely included) and the
    true inclusion bits ``included`` (each drawn independently with probability 1/2).

    ``schedule`` lists guess counts ``r`` fixed before the scores are seen (default
    :func:`guess_schedule`); each guesses ``ceil(r/2)`` in (top scores) and ``floor(r/2)``
    out (bottom scores) and is tested at level ``(1 - confidence) / len(schedule)``.
    Scores must be finite; ``m = len(scores) >= 2``.
    """
    s = np.asarray(scores, dtype=float)
    inc = np.asarray(included)
    if s.ndim != 1 or inc.shape != s.shape:
        raise InputError(f"scores: need two 1-D arrays of equal length, got {s.shape} and {inc.shape}")
    if inc.dtype != bool:
        if not np.all(np.isin(inc, (0, 1))):
            raise InputError("included: must be booleans (or 0/1)")
        inc = inc.astype(bool)
    m = check_int("canaries", int(s.size), ge=2)
    if not np.all(np.isfinite(s)):
        raise InputError("scores: must all be finite")
    d = _check_delta(delta)
    c = _check_confidence(confidence)
    sched = guess_schedule(m) if schedule is None else tuple(schedule)
    if not sched:
        raise InputError("schedule: needs at least one guess count")
    for r in sched:
        check_int("schedule", r, ge=1)
        if r > m:
            raise ParameterError("schedule", f"guess count {r} exceeds the number of canaries {m}")
    corrected = 1.0 - (1.0 - c) / len(sched)  # Bonferroni over the schedule
    entries = []
    for r in sched:
        pos, neg = math.ceil(r / 2), r // 2
        v = count_correct(s, inc, pos, neg)
        lb = epsilon_lower_bound(canaries=m, guesses=r, correct=v, delta=d, confidence=corrected)
        entries.append(GuessResult(guesses=r, positive=pos, negative=neg, correct=v, epsilon_lower_bound=lb))
    best = max(entries, key=lambda e: (e.epsilon_lower_bound, e.guesses))
    return OneRunAudit(
        epsilon_lower_bound=best.epsilon_lower_bound,
        guesses=best.guesses,
        correct=best.correct,
        canaries=m,
        delta=d,
        confidence=c,
        entries=tuple(entries),
    )


#: Largest simulated dimension: one release is a vector of this many float64 (800 MB).
MAX_AUDIT_DIM = 10**8
#: Most canaries of one audit.
MAX_AUDIT_CANARIES = 10**6
#: Most elements of the dense canary directions an L2 (Gaussian) audit stores (canaries x dim).
MAX_DENSE_ELEMENTS = 1 << 28
#: Largest simulation seed (torch generators take 64-bit seeds).
MAX_AUDIT_SEED = 2**64 - 1


def check_audit_inputs(
    *,
    sample_rate: float,
    steps: int,
    delta: float,
    dim: int,
    canaries: int,
    confidence: float,
    clip_bound: float,
    norm: str | None = None,
    seed: int = 0,
) -> tuple[float, int, float, int, int, float, float]:
    """Validate the settings of a simulated audit before any work (and any memory is taken):
    returns ``(q, T, delta, N, M, confidence, C)`` with ``q`` in [1e-12, 1], ``T >= 1``,
    ``delta`` in (0, 1), ``N`` in [1, 1e8], ``M`` in [2, 1e6], ``confidence`` in (0, 1),
    ``C > 0``, ``seed`` in [0, 2**64 - 1]; for ``norm == "l2"`` also ``M * N <= 2**28`` (the dense
    canary directions)."""
    q, t, d = check_accounting_inputs(sample_rate, steps, delta)
    n = check_int("dim", dim, ge=1)
    if n > MAX_AUDIT_DIM:
        raise ParameterError("dim", f"must be an integer in [1, {MAX_AUDIT_DIM}], got {dim}")
    m = check_int("canaries", canaries, ge=2)
    if m > MAX_AUDIT_CANARIES:
        raise ParameterError("canaries", f"must be an integer in [2, {MAX_AUDIT_CANARIES}], got {canaries}")
    if norm == "l2" and m * n > MAX_DENSE_ELEMENTS:
        raise ParameterError(
            "canaries",
            f"{m} Gaussian canaries in dimension {n} need {4 * m * n / 2**30:.1f} GiB of directions; "
            f"keep canaries * dim <= {MAX_DENSE_ELEMENTS}",
        )
    c = _check_confidence(confidence)
    clip = check_range("clip_bound", clip_bound, gt=0.0)
    if check_int("seed", seed, ge=0) > MAX_AUDIT_SEED:
        raise ParameterError("seed", f"must be an integer in [0, 2**64 - 1], got {seed}")
    return q, t, d, n, m, c, clip

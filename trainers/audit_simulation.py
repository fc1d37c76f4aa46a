"""Mechanism-level privacy audit: simulate the DP-SGD release with canaries, bound epsilon from below.

What is simulated (one Poisson-sampled DP-SGD run reduced to what the canaries see):

* ``M`` canaries; canary ``i`` is included independently with probability 1/2.
* Each canary has a worst-case clipped contribution ``C d_i`` in the mechanism's norm:
  Gaussian (L2): ``d_i`` a uniformly random unit vector in ``R^N``; Laplace and LMO (L1): a
  signed one-hot vector ``+-e_j`` (coordinates distinct while ``M <= N``). The Gaussian
  directions are a Haar-random orthonormal set when ``M <= N`` and ``M^2 N <= MAX_QR_WORK``
  (each is still uniform on the sphere); otherwise independent, and canary ``j`` then leaks
  ``C n_j <d_j, d_i>`` (about ``1/sqrt(N)`` each) into canary ``i``'s score, which weakens the
  audit but never invalidates it.
* For ``T`` steps, every included canary joins the step's sum with probability ``q`` (Poisson
  sampling), and the step releases ``R_t = sum_{i sampled} C d_i + Z_t`` where ``Z_t`` is the
  full ``N``-dimensional noise of the configured mechanism, drawn by
  :func:`trainers.noise.sample_noise` -- the sampler training uses -- or by an
  injected ``noise_fn`` with the same signature (tests use deliberately broken ones).
  The other examples of a real run add a known sum, which an auditor can subtract: they are
  left out.
* Canary ``i`` is scored by projecting the released sums on its direction and summing over
  the steps: ``score_i = sum_t <R_t, d_i> = <sum_t R_t, d_i>``. The simulator therefore keeps
  only the running sum of the releases (noise drawn in chunks of whole steps, memory
  ``O(N)`` plus the canary directions) and the per-canary sample counts.
* The scores and inclusion bits go to :func:`noise_search.audit_bound.audit_scores` (one-run
  bound of Steinke, Nasr & Jagielski 2023, fixed guess schedule with Bonferroni correction).

All randomness (inclusion, directions, sampling, noise) comes from one ``torch.Generator``
seeded with ``seed``: the same settings and seed give the same result.

Cost: ``T * N`` noise draws plus ``O(M N)`` for the projections. Memory: ``O(N)`` for the sums
and, for Gaussian, ``4 M N`` bytes for the canary directions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from noise_search.accountants import compute_epsilon
from noise_search.audit_bound import MAX_DENSE_ELEMENTS, OneRunAudit, audit_scores, check_audit_inputs
from noise_search.errors import InputError, check_int
from noise_search.mechanisms import Mechanism
from trainers.progress import progress_bar

#: ``noise_fn(mech, shape, clip_bound, generator, *, dtype, device) -> Tensor``, like ``sample_noise``.
NoiseFn = Callable[..., torch.Tensor]

#: Noise values drawn per ``noise_fn`` call (whole steps; at least one step per call).
CHUNK_ELEMENTS = 1 << 21
#: Largest ``M * N`` for dense (Gaussian) canary directions: 4 bytes each.
#: Largest ``M * M * N`` for which Gaussian directions are orthonormalised (QR, about 2 s here).
MAX_QR_WORK = 2 * 10**10
#: Rows of the direction matrix handled at once when projecting in float64.
_PROJECT_ROWS = 256


@dataclass(frozen=True)
class Canaries:
    """Canary directions and inclusion bits.

    L2 canaries: ``directions`` is ``(M, N)`` float32 with unit rows. L1 canaries: ``coords``
    ``(M,)`` long and ``signs`` ``(M,)`` float64 in {-1, +1} (``d_i = signs[i] e_{coords[i]}``).
    """

    included: torch.Tensor
    dim: int
    directions: torch.Tensor | None = None
    coords: torch.Tensor | None = None
    signs: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return int(self.included.numel())

    def embed(self, weights: torch.Tensor) -> torch.Tensor:
        """``sum_i weights[i] d_i`` as an ``(N,)`` float64 vector."""
        w = weights.to(torch.float64)
        if self.directions is None:
            out = torch.zeros(self.dim, dtype=torch.float64)
            return out.index_add_(0, self.coords, w * self.signs)
        out = torch.zeros(self.dim, dtype=torch.float64)
        for start in range(0, self.count, _PROJECT_ROWS):
            rows = self.directions[start : start + _PROJECT_ROWS].to(torch.float64)
            out += w[start : start + _PROJECT_ROWS] @ rows
        return out

    def project(self, vector: torch.Tensor) -> torch.Tensor:
        """``<vector, d_i>`` for every canary, ``(M,)`` float64."""
        v = vector.to(torch.float64)
        if self.directions is None:
            return v[self.coords] * self.signs
        parts = [
            self.directions[start : start + _PROJECT_ROWS].to(torch.float64) @ v
            for start in range(0, self.count, _PROJECT_ROWS)
        ]
        return torch.cat(parts)


def draw_canaries(norm: str, canaries: int, dim: int, generator: torch.Generator) -> Canaries:
    """Inclusion bits (each 1/2) and worst-case directions for ``norm`` ``"l2"`` or ``"l1"``."""
    m = check_int("canaries", canaries, ge=2)
    n = check_int("dim", dim, ge=1)
    included = torch.rand(m, generator=generator, dtype=torch.float64) < 0.5
    if norm == "l2":
        if m * n > MAX_DENSE_ELEMENTS:
            raise InputError(
                f"canaries: {m} Gaussian canaries in dimension {n} need {4 * m * n / 2**30:.1f} GiB of directions; "
                f"keep canaries * dim <= {MAX_DENSE_ELEMENTS}"
            )
        g = torch.randn(n, m, generator=generator, dtype=torch.float64)
        if m <= n and m * m * n <= MAX_QR_WORK:
            # Haar-random orthonormal frame: Q of a Gaussian matrix, column signs fixed by R.
            qm, r = torch.linalg.qr(g)
            d = (qm * torch.sign(torch.diagonal(r))).T
        else:
            d = (g / torch.linalg.vector_norm(g, dim=0, keepdim=True)).T
        return Canaries(included=included, dim=n, directions=d.contiguous().to(torch.float32))
    if norm == "l1":
        reps = -(-m // n)  # each coordinate used at most ceil(M/N) times
        coords = torch.cat([torch.randperm(n, generator=generator) for _ in range(reps)])[:m]
        signs = torch.randint(0, 2, (m,), generator=generator).to(torch.float64).mul_(2).sub_(1)
        return Canaries(included=included, dim=n, coords=coords, signs=signs)
    raise InputError(f"norm: must be 'l1' or 'l2', got {norm!r}")


def _steps_per_call(mech: Mechanism, dim: int) -> int:
    """Whole steps drawn per noise call. A mechanism whose draw shares randomness across its
    coordinates (a shared-``u`` LMO: one ``u`` per call) is called once per step."""
    if not mech.independent_coordinates:
        return 1
    return max(1, CHUNK_ELEMENTS // dim)


def simulate_release(
    mech: Mechanism,
    canaries: Canaries,
    *,
    sample_rate: float,
    steps: int,
    clip_bound: float,
    generator: torch.Generator,
    noise_fn: NoiseFn | None = None,
    on_steps: Callable[[int], Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``steps`` Poisson-sampled releases; return ``(sum_t R_t, counts)``.

    ``sum_t R_t`` is ``(N,)`` float64; ``counts[i]`` is the number of steps that included
    canary ``i`` (0 for canaries left out of the input). ``on_steps(k)`` is told after every
    ``k`` steps drawn (progress).
    """
    if noise_fn is None:
        from trainers.noise import sample_noise as noise_fn
    n = canaries.dim
    per_call = _steps_per_call(mech, n)
    noise_sum = torch.zeros(n, dtype=torch.float64)
    counts = torch.zeros(canaries.count, dtype=torch.float64)
    inc = canaries.included.to(torch.float64)
    done = 0
    while done < steps:
        k = min(per_call, steps - done)
        sampled = torch.rand(k, canaries.count, generator=generator, dtype=torch.float64) < sample_rate
        counts += sampled.to(torch.float64).sum(0) * inc
        shape = (n,) if per_call == 1 else (k, n)
        z = noise_fn(mech, shape, clip_bound, generator, dtype=torch.float64)
        if tuple(z.shape) != shape:
            raise InputError(f"noise_fn: returned shape {tuple(z.shape)}, expected {shape}")
        noise_sum += z if per_call == 1 else z.sum(0)
        done += k
        if on_steps is not None:
            on_steps(k)
    release = noise_sum + canaries.embed(counts * clip_bound)
    return release, counts


@dataclass(frozen=True)
class AuditReport:
    """A mechanism-level audit: the empirical lower bound beside the accountant's upper bound."""

    mechanism: str
    epsilon_lower_bound: float
    epsilon: float
    delta: float
    confidence: float
    canaries: int
    correct: int
    guesses: int
    seconds: float
    accountant: str
    sample_rate: float
    steps: int
    dim: int
    clip_bound: float
    seed: int
    included: int
    audit: OneRunAudit = field(repr=False)

    def to_dict(self) -> dict:
        """The CLI's JSON fields plus the settings and the per-guess-count schedule."""
        return {
            "mechanism": self.mechanism,
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "confidence": self.confidence,
            "canaries": self.canaries,
            "correct": self.correct,
            "guesses": self.guesses,
            "seconds": self.seconds,
            "accountant": self.accountant,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "dim": self.dim,
            "clip_bound": self.clip_bound,
            "seed": self.seed,
            "included": self.included,
            "schedule": self.audit.to_dict()["schedule"],
        }


def run_audit(
    mech: Mechanism,
    *,
    sample_rate: float,
    steps: int,
    delta: float,
    dim: int,
    canaries: int,
    confidence: float = 0.95,
    seed: int = 0,
    clip_bound: float = 1.0,
    accountant: str = "rdp",
    noise_fn: NoiseFn | None = None,
    schedule: Sequence[int] | None = None,
) -> AuditReport:
    """Audit ``mech`` at sample rate ``q`` in (0, 1], ``steps >= 1``, ``delta`` in (0, 1),
    ``dim >= 1`` noise coordinates, ``canaries >= 2``, ``confidence`` in (0, 1), clipping bound
    ``clip_bound > 0`` (in the mechanism's norm).

    The upper bound ``epsilon`` is the ``accountant``'s for ``mech`` at the same ``q``, ``T``,
    ``delta``; ``noise_fn`` replaces the noise sampler (default: ``sample_noise``), which is
    how a broken sampler is audited against the claim of the correct one.
    """
    q, t, d, n, m, c, clip = check_audit_inputs(
        sample_rate=sample_rate,
        steps=steps,
        delta=delta,
        dim=dim,
        canaries=canaries,
        confidence=confidence,
        clip_bound=clip_bound,
    )
    seed = check_int("seed", seed, ge=0)
    start = time.perf_counter()
    upper = compute_epsilon(mech, sample_rate=q, steps=t, delta=d, accountant=accountant)
    generator = torch.Generator().manual_seed(seed)
    cans = draw_canaries(mech.norm, m, n, generator)
    bar = progress_bar(t, f"audit {mech.name}: steps")
    try:
        release, _ = simulate_release(
            mech, cans, sample_rate=q, steps=t, clip_bound=clip, generator=generator, noise_fn=noise_fn,
            on_steps=bar.update,
        )  # fmt: skip
    finally:
        bar.close()
    scores = cans.project(release).numpy()
    included = cans.included.numpy()
    result = audit_scores(scores, included, delta=d, confidence=c, schedule=schedule)
    return AuditReport(
        mechanism=mech.name,
        epsilon_lower_bound=result.epsilon_lower_bound,
        epsilon=upper.epsilon,
        delta=d,
        confidence=c,
        canaries=m,
        correct=result.correct,
        guesses=result.guesses,
        seconds=time.perf_counter() - start,
        accountant=upper.accountant,
        sample_rate=q,
        steps=t,
        dim=n,
        clip_bound=clip,
        seed=seed,
        included=int(included.sum()),
        audit=result,
    )

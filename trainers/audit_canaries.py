"""Trial-level privacy audit: gradient canaries inside real training, an epsilon lower bound from one run.

Enabled by ``audit: {canaries: M, confidence: c}`` in a trial (or sweep) config; run by
:func:`trainers.engine.train`, which puts the result into the trial's metrics
(``epsilon_lower_bound`` beside the accountant's ``epsilon_spent``).

**Protocol** (white-box, one run; Steinke, Nasr and Jagielski 2023):

* ``M`` canaries over the flattened vector of the ``D`` trainable parameters (optimizer order),
  drawn by :func:`trainers.audit_simulation.draw_canaries` -- the mechanism-level audit's construction:
  each included independently with probability 1/2; Gaussian (L2 clipping): random unit
  directions ``d_i`` (orthonormal when cheap); Laplace/LMO (L1 clipping): distinct signed
  one-hots.
* At every noisy step each canary is sampled independently with probability ``q`` (the run's
  Poisson rate, exactly like a training example); every *included* canary that is sampled
  joins the step through the optimizer's ``extra_contributions`` hook as the vector ``C d_i``,
  which the optimizer clips in the mechanism's norm like a real example and adds to the clipped
  sum *before* the noise: the step releases ``R_t = sum_(sampled examples) clip(g) +
  sum_(sampled canaries) C d_i + Z_t``.
* **Score**: canary ``i`` scores ``<sum_t G_t, d_i>`` where ``G_t = R_t / (q N)`` is the
  privatized gradient the optimizer hands to SGD/Adam at step ``t`` (read from ``p.grad`` after
  each step). With plain SGD and no weight decay the parameter update is ``-lr sum_t G_t``, so
  this is the update projected on ``-d_i`` (the issue's "score from the parameter update");
  with Adam the update is a non-linear function of the ``G_t`` and scoring it would only
  weaken the audit, so the released gradients are scored directly. Reading them changes
  nothing in the mechanism: the hook and the observer only add canary rows before the noise
  and read ``p.grad`` after the step.
* The scores and the inclusion bits go to :func:`noise_search.audit_bound.audit_scores` at the
  configured confidence and the trial's ``delta`` (fixed guess schedule, Bonferroni).

**Why the bound is valid against the accountant's epsilon.** The accountant bounds the
run's ``(epsilon, delta)`` for adding or removing *one* example of *any* dataset, given that
each example's clipped contribution has norm at most ``C`` in the mechanism's norm, each
example is in a step's sum independently with probability ``q``, and the sum is divided by
the fixed, public ``q N``. A canary is such an example: clipped to ``C`` by the optimizer's own
clipping, Poisson-sampled at rate ``q`` by an independent draw every step. Training with the
included canaries is therefore the same mechanism on the dataset "training data + included
canaries", and including or excluding canary ``i`` (the other canaries' bits fixed) is an
add/remove neighbour pair: the run is ``(epsilon, delta)``-DP in each inclusion bit, which is
the premise of the one-run theorem. The guarantee covers the whole sequence of releases
``G_1, ..., G_T`` (adaptive composition), so any score computed from them -- or from the
parameters, which are post-processing -- keeps it; the directions and inclusion bits are drawn
before training from their own generator and never depend on the run. Hence
``epsilon_lower_bound <= epsilon`` with probability at least ``confidence`` whenever the
accountant is right, and a lower bound above the spent epsilon means the run is not as private
as claimed. The training examples' own gradients only add to the scores (less power, never an
invalid bound).

**Randomness**: one ``torch.Generator`` seeded with ``derive_seed(training.seed, SEED_AUDIT)``
draws the canaries (inclusion, directions) and then the per-step canary sampling; it is
independent of the model, Poisson-sampling and noise generators, so an audited run uses the
same data batches and noise as the same run without audit.

**Data parallel**: the hook is called on the noise-adding rank (rank 0) only, so the canaries
are added exactly once per step; every rank sees the same all-reduced ``G_t``, and rank 0 holds
the audit and reports its metrics.

**Cost**: per step about ``q M`` dense rows of ``D`` floats pass through the optimizer's
clipping; Gaussian canaries store ``M`` directions (``4 M D`` bytes). Both are bounded by
:data:`~noise_search.audit_bound.MAX_DENSE_ELEMENTS` (error naming ``audit.canaries`` before training).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from noise_search.audit_bound import MAX_DENSE_ELEMENTS, OneRunAudit, audit_scores
from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import Mechanism
from trainers.audit_simulation import Canaries, draw_canaries


@dataclass(frozen=True)
class TrialAuditResult:
    """The outcome of a trial's audit.

    ``scores[i]`` is canary ``i``'s score (float64), ``included[i]`` its inclusion bit and
    ``counts[i]`` the number of steps that added it (0 for canaries left out); ``steps`` the
    noisy steps observed, ``dim`` the number of trainable coordinates.
    """

    audit: OneRunAudit
    scores: np.ndarray
    included: np.ndarray
    counts: np.ndarray
    steps: int
    dim: int

    @property
    def epsilon_lower_bound(self) -> float:
        return self.audit.epsilon_lower_bound

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of the audit: ``epsilon_lower_bound`` and its inputs."""
        return {
            "epsilon_lower_bound": self.audit.epsilon_lower_bound,
            "audit_canaries": float(self.audit.canaries),
            "audit_included": float(np.count_nonzero(self.included)),
            "audit_guesses": float(self.audit.guesses),
            "audit_correct": float(self.audit.correct),
            "audit_confidence": self.audit.confidence,
        }


class TrialAudit:
    """Gradient canaries for one training run.

    Args:
        mechanism: the run's noise mechanism (its ``norm`` picks the canary kind).
        shapes: the trainable parameters' shapes, in optimizer order.
        clip_bound: ``C > 0``, the run's clipping bound.
        sample_rate: the run's Poisson rate ``q`` in (0, 1].
        canaries: ``M >= 2``.
        confidence: in (0, 1).
        generator: the audit's own seeded CPU ``torch.Generator``.
        device: where the canary rows and the running release sum live (the parameters' device).

    Use :meth:`contributions` as the optimizer's ``extra_contributions`` hook, :meth:`observe`
    after every noisy step, then :meth:`finish`.
    """

    def __init__(
        self,
        mechanism: Mechanism,
        shapes: Sequence[Sequence[int]],
        *,
        clip_bound: float,
        sample_rate: float,
        canaries: int,
        confidence: float,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
    ) -> None:
        self.shapes = [tuple(int(x) for x in s) for s in shapes]
        self.numels = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        dim = sum(self.numels)
        if dim < 1:
            raise ParameterError("audit", "the model has no trainable parameters to put canaries on")
        if sample_rate * canaries * dim > MAX_DENSE_ELEMENTS:
            raise ParameterError(
                "audit.canaries",
                f"{canaries} canaries at sample rate {sample_rate:.4g} over {dim} trainable parameters need about "
                f"{4 * sample_rate * canaries * dim / 2**30:.1f} GiB per step; keep canaries <= "
                f"{int(MAX_DENSE_ELEMENTS / (sample_rate * dim))} for this model",
            )
        try:
            self.canaries: Canaries = draw_canaries(mechanism.norm, canaries, dim, generator)
        except InputError as exc:
            raise InputError(f"audit.{exc}") from None
        self.clip_bound = float(clip_bound)
        self.sample_rate = float(sample_rate)
        self.confidence = float(confidence)
        self.generator = generator
        self.device = torch.device(device)
        self.dim = dim
        self.counts = torch.zeros(canaries, dtype=torch.int64)
        self._included = self.canaries.included
        self._directions = None
        if self.canaries.directions is not None:
            self._directions = self.canaries.directions.to(self.device)
        self._release_sum: torch.Tensor | None = None
        self.calls = 0
        self.steps = 0

    def _rows(self, idx: torch.Tensor) -> torch.Tensor:
        """``C d_i`` for the canaries ``idx``: ``(k, D)`` float32 on :attr:`device`."""
        if self._directions is not None:
            return self._directions[idx.to(self.device)] * self.clip_bound
        rows = torch.zeros((len(idx), self.dim), dtype=torch.float32, device=self.device)
        coords = self.canaries.coords[idx].to(self.device)
        signs = self.canaries.signs[idx].to(device=self.device, dtype=torch.float32)
        rows[torch.arange(len(idx), device=self.device), coords] = signs * self.clip_bound
        return rows

    def contributions(self, step: int) -> list[torch.Tensor] | None:
        """The ``extra_contributions`` hook: this step's sampled included canaries, one
        ``(k, *p.shape)`` tensor per parameter, or None when no canary is sampled."""
        if step != self.calls:
            raise RuntimeError(f"audit hook called for step {step}, expected step {self.calls}")
        self.calls += 1
        draw = torch.rand(self.canaries.count, generator=self.generator, dtype=torch.float64)
        picked = (draw < self.sample_rate) & self._included
        idx = torch.nonzero(picked).flatten()
        if idx.numel() == 0:
            return None
        self.counts[idx] += 1
        rows = self._rows(idx)
        k = len(idx)
        chunks = rows.split(self.numels, dim=1)
        return [chunk.reshape(k, *shape) for chunk, shape in zip(chunks, self.shapes, strict=True)]

    def observe(self, grads: Sequence[torch.Tensor]) -> None:
        """Add one step's privatized gradients (``p.grad`` after the step, optimizer order)."""
        flat = torch.cat([g.detach().reshape(-1).to(device=self.device, dtype=torch.float64) for g in grads])
        if flat.numel() != self.dim:
            raise ValueError(f"observed {flat.numel()} gradient coordinates, expected {self.dim}")
        self._release_sum = flat if self._release_sum is None else self._release_sum + flat
        self.steps += 1

    def scores(self) -> np.ndarray:
        """``<sum_t G_t, d_i>`` for every canary (zeros before the first step), ``(M,)`` float64."""
        if self._release_sum is None:
            return np.zeros(self.canaries.count)
        return self.canaries.project(self._release_sum.cpu()).numpy()

    def finish(self, delta: float) -> TrialAuditResult:
        """Score the canaries and bound epsilon from below at ``delta`` (the trial's)."""
        if self.steps != self.calls:
            raise RuntimeError(f"audit: {self.calls} noisy steps added canaries but {self.steps} were observed")
        scores = self.scores()
        included = self._included.numpy().copy()
        result = audit_scores(scores, included, delta=delta, confidence=self.confidence)
        return TrialAuditResult(
            audit=result,
            scores=scores,
            included=included,
            counts=self.counts.numpy().copy(),
            steps=self.steps,
            dim=self.dim,
        )

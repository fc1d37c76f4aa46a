"""The DP optimizer: Opacus's ``DPOptimizer`` with clipping in the mechanism's norm and noise
from a :mod:`noise_search` mechanism.

One step releases ``S = sum_i clip(g_i) + Z`` (docs/privacy.md section 1) and the wrapped
optimizer then uses ``S / (q N)``. Opacus's step is ``pre_step -> clip_and_accumulate ->
add_noise -> scale_grad``; :class:`MechanismDPOptimizer` overrides only:

* :meth:`~MechanismDPOptimizer.clip_and_accumulate` -- Opacus hard-codes the L2 norm there;
  here the per-example norm is the mechanism's (``mechanism.norm``): L2 for Gaussian, L1 for
  Laplace and LMO, over *all* trainable parameters of an example. L1 needs materialised
  per-example gradients, so use Opacus's ``hooks`` (or ``functorch``) grad-sample mode,
  never ``ghost`` clipping (which only computes L2 norms). The clip factor is Opacus's,
  ``min(1, C / (norm + 1e-6))``, with ``C`` lowered by a relative ``1e-5`` so that the
  clipped vector's norm is ``<= C`` even after float rounding. Clipping, the clipped sum and
  the noise are computed in :func:`accumulation_dtype` (float32, or float64 for float64
  parameters), never in a 16-bit parameter dtype: a bf16 clipped example can otherwise exceed
  ``C`` by 0.4%. Only the noisy sum is cast to the parameter dtype (post-processing).
* :meth:`~MechanismDPOptimizer.add_noise` -- one draw of
  :func:`trainers.noise.sample_noise` for the whole step (all trainable
  coordinates flattened in parameter order), scaled by ``C``, from the explicit seeded
  ``torch.Generator`` passed in. For the LMO ``shared`` variant that means one ``u`` per step.

``scale_grad`` (division by the expected batch size ``q N``) is Opacus's. An empty Poisson
batch is a step like any other: set every ``p.grad_sample`` to a ``(0, *p.shape)`` zero
tensor and call ``step()``; the release is pure noise and is accounted.

**Data parallel.** :class:`DistributedMechanismDPOptimizer` combines Opacus's
``DistributedDPOptimizer`` with this class: each rank clips its own examples, only rank 0
adds noise, the gradients are summed over ranks (``all_reduce``) and divided by the world
size; with ``expected_batch_size = q N / world_size`` per rank the update is ``S / (q N)``
with the noise added exactly once.

**Extension point for the privacy audit** (``extra_contributions``): an optional callable
``extra_contributions(step) -> Sequence[Tensor] | None`` called once per noisy step on the
noise-adding rank, with ``step`` the 0-based index of the step. It returns ``None`` (nothing
this step) or one tensor per trainable parameter, in optimizer parameter order, shaped
``(k, *p.shape)``: ``k`` extra "examples" (canaries) for this step. Each of the ``k`` is
clipped to ``C`` in the mechanism's norm exactly like a real example and added to the clipped
sum *before* the noise, so a canary is indistinguishable from a sampled training example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from opacus.optimizers import DistributedDPOptimizer, DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch.optim import Optimizer

from noise_search.mechanisms import Mechanism
from trainers.noise import sample_noise

ExtraContributions = Callable[[int], Sequence[torch.Tensor] | None]
NORMS: tuple[str, ...] = ("l1", "l2")


def per_sample_norms(grad_samples: Sequence[torch.Tensor], norm: str) -> torch.Tensor:
    """Norm of each example's gradient over all parameters: ``(n,)`` float64.

    ``grad_samples`` holds one ``(n, *p.shape)`` tensor per parameter. Accumulated in float64
    so a long L1 sum over float32 coordinates is not underestimated.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    n = len(grad_samples[0])
    device = grad_samples[0].device
    order = 2 if norm == "l2" else 1
    parts = [
        torch.linalg.vector_norm(g.reshape(n, -1), ord=order, dim=-1, dtype=torch.float64).to(device)
        for g in grad_samples
    ]
    stacked = torch.stack(parts, dim=1)
    return stacked.norm(2, dim=1) if norm == "l2" else stacked.sum(dim=1)


#: Clip to ``C (1 - CLIP_MARGIN)``: after rounding the clipped float32 vector to its dtype its
#: norm is still ``<= C`` (Opacus's ``C / (norm + 1e-6)`` alone can land one ulp above C).
CLIP_MARGIN = 1e-5


def clip_factors(grad_samples: Sequence[torch.Tensor], clip_bound: float, norm: str) -> torch.Tensor:
    """Per-example factors ``min(1, C (1 - 1e-5) / (norm + 1e-6))``, ``(n,)`` float64.

    Opacus's formula with a relative margin of :data:`CLIP_MARGIN` against float rounding.
    """
    n = len(grad_samples[0])
    if n == 0:
        return torch.zeros((0,), dtype=torch.float64, device=grad_samples[0].device)
    bound = clip_bound * (1.0 - CLIP_MARGIN)
    return (bound / (per_sample_norms(grad_samples, norm) + 1e-6)).clamp(max=1.0)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Where clipping, the clipped sum and the noise are computed for parameters of ``dtype``:
    at least float32 (bf16 / fp16 parameters), float64 for float64 parameters."""
    return torch.promote_types(dtype, torch.float32)


class MechanismDPOptimizer(DPOptimizer):
    """``DPOptimizer`` whose clipping norm and noise come from ``mechanism``.

    Args:
        optimizer: the wrapped optimizer over the trainable parameters.
        mechanism: a :class:`~noise_search.mechanisms.Gaussian`, ``Laplace`` or ``LMO``.
        max_grad_norm: the clipping bound ``C > 0`` in the mechanism's norm.
        expected_batch_size: ``q N`` (per rank: ``q N / world_size``); the noisy sum is divided by it.
        generator: the seeded ``torch.Generator`` every noise draw comes from (on the
            parameters' device). Required: there is no global-RNG fallback.
        extra_contributions: the audit hook described in the module docstring.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        mechanism: Mechanism,
        max_grad_norm: float,
        expected_batch_size: float,
        generator: torch.Generator,
        extra_contributions: ExtraContributions | None = None,
        noise_multiplier: float = 0.0,
        loss_reduction: str = "mean",
        **kwargs,
    ) -> None:
        if generator is None:
            raise ValueError("generator: a seeded torch.Generator is required for the noise")
        if mechanism.norm not in NORMS:
            raise ValueError(f"mechanism norm must be one of {NORMS}, got {mechanism.norm!r}")
        kwargs.pop("secure_mode", None)
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier,  # unused: the noise comes from ``mechanism``
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction=loss_reduction,
            generator=generator,
            secure_mode=False,
        )
        self.mechanism = mechanism
        self.extra_contributions = extra_contributions
        #: number of noisy releases made by this optimizer (on the noise-adding rank)
        self.noise_steps = 0

    def clip_and_accumulate(self) -> None:
        """Clip each example in the mechanism's norm; add the clipped sum to ``p.summed_grad``."""
        grad_samples = self.grad_samples
        factors = clip_factors(grad_samples, self.max_grad_norm, self.mechanism.norm)
        for p, gs in zip(self.params, grad_samples, strict=True):
            _check_processed_flag(p.grad_sample)
            acc = accumulation_dtype(p.dtype)
            gs = gs.to(acc)
            grad = torch.einsum("i,i...", factors.to(gs.device).to(acc), gs)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)

    def _add_extra_contributions(self) -> None:
        if self.extra_contributions is None:
            return
        extra = self.extra_contributions(self.noise_steps)
        if extra is None:
            return
        params = self.params
        extra = list(extra)
        if len(extra) != len(params):
            raise ValueError(
                f"extra_contributions returned {len(extra)} tensors, expected {len(params)} (one per parameter)"
            )
        k = len(extra[0])
        for p, e in zip(params, extra, strict=True):
            if tuple(e.shape) != (k, *p.shape):
                raise ValueError(f"extra contribution of shape {tuple(e.shape)}, expected {(k, *p.shape)}")
        if k == 0:
            return
        factors = clip_factors(extra, self.max_grad_norm, self.mechanism.norm)
        for p, e in zip(params, extra, strict=True):
            e = e.to(device=p.summed_grad.device, dtype=p.summed_grad.dtype)
            p.summed_grad = p.summed_grad + torch.einsum("i,i...", factors.to(e.device, e.dtype), e)

    def add_noise(self) -> None:
        """``p.grad = p.summed_grad (+ canaries) + Z``, one mechanism draw for all coordinates."""
        params = self.params
        for p in params:
            _check_processed_flag(p.summed_grad)
        self._add_extra_contributions()
        total = sum(p.summed_grad.numel() for p in params)
        device = params[0].summed_grad.device
        dtype = params[0].summed_grad.dtype
        noise = sample_noise(
            self.mechanism, (total,), self.max_grad_norm, self.generator, dtype=torch.float32, device=device
        ).to(dtype)
        offset = 0
        for p in params:
            n = p.summed_grad.numel()
            z = noise[offset : offset + n].view_as(p.summed_grad).to(p.summed_grad.device, p.summed_grad.dtype)
            p.grad = (p.summed_grad + z).view_as(p).to(p.dtype)  # the release is in summed_grad's dtype
            offset += n
            _mark_as_processed(p.summed_grad)
        self.noise_steps += 1


class DistributedMechanismDPOptimizer(DistributedDPOptimizer, MechanismDPOptimizer):
    """Data-parallel version: Opacus's rank-0-only noise and gradient all-reduce, our clipping
    and noise (MRO: ``DistributedDPOptimizer.add_noise`` -> ``MechanismDPOptimizer.add_noise``
    on rank 0 only)."""

    def __init__(self, optimizer: Optimizer, **kwargs) -> None:
        kwargs.setdefault("noise_multiplier", 0.0)
        super().__init__(optimizer, **kwargs)


def make_dp_optimizer(
    optimizer: Optimizer,
    *,
    mechanism: Mechanism,
    max_grad_norm: float,
    expected_batch_size: float,
    generator: torch.Generator,
    extra_contributions: ExtraContributions | None = None,
    distributed: bool = False,
) -> MechanismDPOptimizer:
    """The right optimizer class for a single process or a ``torch.distributed`` group.

    ``expected_batch_size`` is the *total* ``q N``; it is divided by the world size here.
    """
    kwargs = {
        "mechanism": mechanism,
        "max_grad_norm": max_grad_norm,
        "generator": generator,
        "extra_contributions": extra_contributions,
    }
    if distributed:
        world = torch.distributed.get_world_size()
        return DistributedMechanismDPOptimizer(optimizer, expected_batch_size=expected_batch_size / world, **kwargs)
    return MechanismDPOptimizer(optimizer, expected_batch_size=expected_batch_size, **kwargs)

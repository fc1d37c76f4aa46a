"""Poisson-sampled batches through Opacus's sampler.

``opacus.data_loader.DPDataLoader`` is Opacus's ``UniformWithReplacementSampler`` (each
example joins a step's batch independently with probability ``q``) plus a collate function
that turns an empty selection into zero-length tensors. :func:`poisson_batches` yields the
sampler's index sets directly (the inputs of :mod:`trainers.inputs` gather the tensors, and an
empty set is a step like any other), with two differences DPDataLoader cannot express:

* an explicit number of steps ``T`` (DPDataLoader always yields ``int(1/q)`` per pass), so a
  run makes exactly the steps it accounted for;
* in a ``torch.distributed`` group, :class:`RankAlignedPoissonSampler`: Opacus's distributed
  sampler *skips* a rank's empty local batch, which would desynchronise the ranks' step
  counts (and the all-reduce); ours yields it, so every rank takes every step.

Distributed sampling: the examples are split over ranks (a fixed shuffle), each rank keeps
each of its examples with probability ``q``; the union over ranks is a Poisson sample of
rate ``q`` of the whole set, which is what the accountant assumes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from opacus.utils.uniform_sampler import DistributedUniformWithReplacementSampler, UniformWithReplacementSampler


class RankAlignedPoissonSampler(DistributedUniformWithReplacementSampler):
    """Opacus's distributed Poisson sampler, yielding empty local batches too."""

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.shuffle_seed + self.epoch)
            indices = torch.randperm(self.total_size, generator=g)
        else:
            indices = torch.arange(self.total_size)
        indices = indices[self.rank : self.total_size : self.num_replicas]
        for _ in range(self.num_batches):
            mask = torch.rand(self.num_samples, generator=self.generator) < self.sample_rate
            yield indices[mask.nonzero(as_tuple=False).reshape(-1)].tolist()


def poisson_batches(
    n: int,
    *,
    sample_rate: float,
    steps: int,
    generator: torch.Generator,
    distributed: bool = False,
) -> Iterator[torch.Tensor]:
    """``steps`` Poisson samples of rate ``sample_rate`` from ``0..n-1``: 1-D long index tensors
    (possibly empty; in a ``torch.distributed`` group, this rank's share)."""
    if distributed:
        sampler = RankAlignedPoissonSampler(total_size=n, sample_rate=sample_rate, steps=steps, generator=generator)
    else:
        sampler = UniformWithReplacementSampler(
            num_samples=n, sample_rate=sample_rate, steps=steps, generator=generator
        )
    for indices in sampler:
        yield torch.as_tensor(indices, dtype=torch.long)

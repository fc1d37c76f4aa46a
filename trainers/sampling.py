"""Poisson-sampled batches through Opacus's sampler and empty-batch collation.

``opacus.data_loader.DPDataLoader`` is Opacus's ``UniformWithReplacementSampler`` (each
example joins a step's batch independently with probability ``q``) plus a collate function
that turns an empty selection into zero-length tensors. :func:`poisson_loader` builds the
same composition with two differences DPDataLoader cannot express:

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
from opacus.data_loader import wrap_collate_with_empty
from opacus.utils.uniform_sampler import DistributedUniformWithReplacementSampler, UniformWithReplacementSampler
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate


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


def poisson_loader(
    dataset: Dataset,
    *,
    sample_rate: float,
    steps: int,
    generator: torch.Generator,
    distributed: bool = False,
) -> DataLoader:
    """``steps`` Poisson batches of rate ``sample_rate`` over a map-style ``dataset`` of tuples."""
    n = len(dataset)  # type: ignore[arg-type]
    if distributed:
        sampler = RankAlignedPoissonSampler(total_size=n, sample_rate=sample_rate, steps=steps, generator=generator)
    else:
        sampler = UniformWithReplacementSampler(
            num_samples=n, sample_rate=sample_rate, steps=steps, generator=generator
        )
    first = dataset[0]
    collate = wrap_collate_with_empty(
        collate_fn=default_collate,
        sample_empty_shapes=[(0, *getattr(x, "shape", ())) for x in first],
        dtypes=[getattr(x, "dtype", type(x)) for x in first],
    )
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)

"""The torch sampler of ``laplace-b``: the built-in Laplace's, at ``u0 = 1/b``.

lmo-dp imports this module (``LaplaceB.torch_sampler``) only when it trains, so the mechanism
itself never needs torch.
"""

from __future__ import annotations

import torch

from lmo_dp_laplace_b import LaplaceB
from trainers.noise import torch_noise


@torch_noise.register
def _laplace_b(
    mech: LaplaceB, size: tuple[int, ...], clip_bound: float, generator: torch.Generator, dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:  # fmt: skip
    return torch_noise(mech.as_laplace(), size, clip_bound, generator, dtype, device)

"""Torch samplers for the noise mechanisms, driven by an explicit ``torch.Generator``.

This is the one place lmo-dp draws training noise; the trainer and the privacy audit both
call :func:`sample_noise`. ``import noise_search`` does not import this module (and so not
torch); the mechanisms' ``sample_torch`` methods import it on first use.

``torch.distributions`` cannot take a generator, so the Gamma draw is our own vectorised
Marsaglia-Tsang sampler and the Laplace draw is an exponential with a random sign. The
Exponential component uses ``Tensor.exponential_(lambd=E_lambda)``, whose argument is a
**rate**, matching the accountant.
"""

from __future__ import annotations

import math

import torch

from noise_search.errors import check_range
from noise_search.mechanisms import LMO, Gaussian, Laplace, Mechanism


def _size(shape) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


def standard_gamma(shape, k: float, generator: torch.Generator, *, dtype, device) -> torch.Tensor:
    """``Gamma(k, scale=1)`` draws (Marsaglia & Tsang 2000), boosted for ``k < 1``."""
    size = _size(shape)
    boost = k < 1.0
    d = (k + 1.0 if boost else k) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = math.prod(size)
    out = torch.empty(n, dtype=torch.float64, device=device)
    filled = 0
    while filled < n:
        need = n - filled
        # acceptance is above 95% for every k >= 1: draw a little more than needed
        m = need + need // 16 + 16
        x = torch.randn(m, generator=generator, dtype=torch.float64, device=device)
        v = (1.0 + c * x) ** 3
        log_u = torch.log(torch.rand(m, generator=generator, dtype=torch.float64, device=device))
        ok = (v > 0) & (log_u < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        got = (d * v[ok])[:need]
        out[filled : filled + got.numel()] = got
        filled += got.numel()
    if boost:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        out = out * u.clamp_min(torch.finfo(torch.float64).tiny) ** (1.0 / k)
    return out.reshape(size).to(dtype)


def sample_u(mech: LMO, shape, generator: torch.Generator, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Draws of the LMO inverse scale ``u`` with the torch generator."""
    size = _size(shape)
    p = mech.arrays
    u = torch.zeros(size, dtype=dtype, device=device)
    if p.a1[0] > 0:
        g = standard_gamma(size, mech.G_k, generator, dtype=dtype, device=device)
        u += float(p.a1[0] * mech.G_theta) * g
    if p.a3[0] > 0:
        e = torch.empty(size, dtype=dtype, device=device).exponential_(mech.E_lambda, generator=generator)
        u += float(p.a3[0]) * e
    if p.a4[0] > 0:
        w = torch.empty(size, dtype=dtype, device=device).uniform_(mech.U_a, mech.U_b, generator=generator)
        u += float(p.a4[0]) * w
    return u


def standard_laplace(shape, generator: torch.Generator, *, dtype, device) -> torch.Tensor:
    """``Laplace(0, 1)`` draws: a unit exponential with a random sign."""
    size = _size(shape)
    mag = torch.empty(size, dtype=dtype, device=device).exponential_(1.0, generator=generator)
    sign = torch.randint(0, 2, size, generator=generator, device=device).to(dtype).mul_(2).sub_(1)
    return mag.mul_(sign)


def sample_noise(
    mech: Mechanism,
    shape,
    clip_bound: float,
    generator: torch.Generator,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Noise of ``shape`` for clipping bound ``clip_bound`` (in the mechanism's norm).

    ``generator`` must live on ``device`` (CPU by default). ``dtype`` defaults to float32.
    """
    c = check_range("clip_bound", clip_bound, gt=0.0)
    dtype = dtype or torch.float32
    device = torch.device(device) if device is not None else generator.device
    size = _size(shape)
    if isinstance(mech, Gaussian):
        return torch.randn(size, generator=generator, dtype=dtype, device=device).mul_(mech.sigma * c)
    if isinstance(mech, Laplace):
        return standard_laplace(size, generator, dtype=dtype, device=device).mul_(c / mech.u0)
    if isinstance(mech, LMO):
        # u is drawn in float64 even for float32 noise: 1/u of a small u must not round to inf.
        u_shape = size if mech.variant == "per_coordinate" else ()
        u = sample_u(mech, u_shape, generator, dtype=torch.float64, device=device)
        scale = (c / u).to(dtype)
        return standard_laplace(size, generator, dtype=dtype, device=device).mul_(scale)
    raise TypeError(f"not a noise mechanism: {type(mech).__name__}")

"""Torch samplers for the noise mechanisms, driven by an explicit ``torch.Generator``.

This is the one place lmo-dp draws training noise; the trainer and the privacy audit both
call :func:`sample_noise`. It lives in ``trainers`` because it needs torch; the mechanisms'
parameters and their numpy samplers are in :mod:`noise_search.mechanisms`. Each mechanism class
has its sampler, registered with :func:`torch_noise` (a ``functools.singledispatch``); a class
without one (a plug-in) is drawn by its numpy sampler from a stream seeded by the generator.

Per-coordinate LMO noise on a CPU generator is drawn by the exact ziggurat of
:mod:`noise_search.lmo_sampler` (one 64-bit word per coordinate, about 2x a Gaussian draw):
the torch generator draws one 63-bit seed for a numpy SFC64 stream per call, so the noise is
still a function of the generator's state alone. On other devices (and for the parts below)
the noise is built from the device generator's uniforms by exact constructions, all magnitudes
computed in float64 (so an exponential's tail is cut only at ``-log(2**-53) = 36.7`` scales,
with probability ~1e-16) and cast at the end:

* Laplace(0, 1): one uniform ``W``; ``V = W - 1/2``, magnitude ``-log(1 - 2|V|)`` (Exp(1)),
  sign of ``V``.
* Exponential(rate ``E_lambda``): ``-log(U) / E_lambda`` -- the accountant's rate.
* Gamma(k) for integer ``k <= 8``: ``-log`` of a product of ``k`` uniforms (a sum of ``k``
  Exp(1)); other shapes: our vectorised Marsaglia-Tsang sampler (``torch.distributions``
  takes no generator).

All uniforms of one per-coordinate LMO draw come from a single ``torch.rand`` call.
"""

from __future__ import annotations

import functools
import importlib
import math
import threading

import numpy as np
import torch

from noise_search.errors import check_range
from noise_search.lmo_sampler import sample_per_coordinate
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
        # float32 normal proposals (4x cheaper than float64 on CPU); the acceptance test and
        # everything after it are float64, so the accepted draws are exactly Gamma-distributed
        # given the proposals
        x = torch.randn(m, generator=generator, dtype=torch.float32, device=device).double()
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


_INTEGER_GAMMA_MAX = 8
_TINY = torch.finfo(torch.float64).tiny


def _integer_shape(k: float) -> int | None:
    return int(k) if float(k).is_integer() and 1 <= k <= _INTEGER_GAMMA_MAX else None


def _exp_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Exp(1) from uniforms on [0, 1), in place: ``-log(u)`` (``u = 0`` has probability 2**-53)."""
    return u.clamp_min_(_TINY).log_().neg_()


def _laplace_from_uniform(w: torch.Tensor) -> torch.Tensor:
    """Laplace(0, 1) from uniforms on [0, 1), in place (float64).

    ``v = w - 1/2``; ``1 - 2|v|`` is uniform on (0, 1] (exact in float64), its ``-log`` is Exp(1),
    and the sign of ``v`` is an independent fair sign.
    """
    v = w.sub_(0.5)
    mag = v.abs().mul_(-2.0).add_(1.0).clamp_min_(_TINY).log_().neg_()
    return mag.copysign_(v)


def _u_from_uniforms(mech: LMO, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The inverse scale ``u`` from the leading uniform rows of ``rows`` (float64, consumed)."""
    p = mech.arrays
    size = rows.shape[1:]
    u = torch.zeros(size, dtype=torch.float64, device=rows.device)
    i = 0
    if p.a1[0] > 0:
        k = _integer_shape(mech.G_k)
        if k is not None:
            prod = rows[i]
            for j in range(1, k):
                prod.mul_(rows[i + j])
            u.add_(_exp_from_uniform(prod), alpha=float(p.a1[0] * mech.G_theta))
            i += k
        else:
            g = standard_gamma(size, mech.G_k, generator, dtype=torch.float64, device=rows.device)
            u.add_(g, alpha=float(p.a1[0] * mech.G_theta))
    if p.a3[0] > 0:
        u.add_(_exp_from_uniform(rows[i]), alpha=float(p.a3[0] / mech.E_lambda))
        i += 1
    if p.a4[0] > 0:
        u.add_(rows[i].mul_(mech.U_b - mech.U_a).add_(mech.U_a), alpha=float(p.a4[0]))
        i += 1
    return u


def _u_rows(mech: LMO) -> int:
    """Uniform rows ``u`` takes (non-integer Gamma shapes draw their own on top)."""
    p = mech.arrays
    k = _integer_shape(mech.G_k)
    return (k or 0) * int(p.a1[0] > 0) + int(p.a3[0] > 0) + int(p.a4[0] > 0)


def uniform_rows(mech: LMO) -> int:
    """Float64 uniforms one per-coordinate LMO noise draw takes per coordinate (``u`` and the Laplace)."""
    return _u_rows(mech) + 1


def sample_u(mech: LMO, shape, generator: torch.Generator, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Draws of the LMO inverse scale ``u`` with the torch generator."""
    size = _size(shape)
    rows = torch.rand((_u_rows(mech), *size), generator=generator, dtype=torch.float64, device=device)
    return _u_from_uniforms(mech, rows, generator).to(dtype)


def standard_laplace(shape, generator: torch.Generator, *, dtype, device) -> torch.Tensor:
    """``Laplace(0, 1)`` draws."""
    w = torch.rand(_size(shape), generator=generator, dtype=torch.float64, device=device)
    return _laplace_from_uniform(w).to(dtype)


_STREAMS = threading.local()


def numpy_stream(generator: torch.Generator) -> np.random.Generator:
    """This thread's numpy SFC64 stream, its whole 256-bit state drawn from ``generator``.

    Advances ``generator`` by four 63-bit words; the stream is a function of the generator's
    state alone, and is valid until the next call in the same thread (it is reused: creating
    a seeded generator costs three times as much).
    """
    stream = getattr(_STREAMS, "stream", None)
    if stream is None:
        stream = _STREAMS.stream = np.random.Generator(np.random.SFC64(0))
    words = torch.empty(4, dtype=torch.int64).random_(generator=generator).numpy().view(np.uint64)
    stream.bit_generator.state = {"bit_generator": "SFC64", "state": {"state": words}, "has_uint32": 0, "uinteger": 0}
    return stream


def lmo_from_uniforms(mech: LMO, shape, clip_bound: float, generator: torch.Generator, *, device=None) -> torch.Tensor:
    """Per-coordinate LMO noise (float64) from the generator's uniforms: ``u``, then a Laplace."""
    size = _size(shape)
    rows = torch.rand((uniform_rows(mech), *size), generator=generator, dtype=torch.float64, device=device)
    u = _u_from_uniforms(mech, rows[:-1], generator)
    return _laplace_from_uniform(rows[-1]).mul_(clip_bound).div_(u)


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

    ``generator`` must live on ``device`` (CPU by default). ``dtype`` defaults to float32. The
    noise comes from the sampler registered for the mechanism's class (:func:`torch_noise`).
    """
    c = check_range("clip_bound", clip_bound, gt=0.0)
    dtype = dtype or torch.float32
    device = torch.device(device) if device is not None else generator.device
    return torch_noise(mech, _size(shape), c, generator, dtype, device)


@functools.singledispatch
def torch_noise(
    mech: Mechanism, size: tuple[int, ...], clip_bound: float, generator: torch.Generator, dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:  # fmt: skip
    """The torch sampler of a mechanism class: noise of ``size`` for ``clip_bound`` (checked > 0)
    from ``generator``, of ``dtype`` on ``device``.

    Register one for a class with ``@torch_noise.register`` (the built-ins below; a plug-in in the
    module its class names as :attr:`~noise_search.mechanisms.Mechanism.torch_sampler`, imported
    here the first time one is needed). A class with none is drawn by its own numpy sampler
    (:meth:`~noise_search.mechanisms.Mechanism.sample`) from a numpy stream whose state comes from
    ``generator`` (:func:`numpy_stream`): still a function of the generator's state alone.
    """
    if not isinstance(mech, Mechanism):
        raise TypeError(f"not a noise mechanism: {type(mech).__name__}")
    module = type(mech).torch_sampler
    if module is not None and module not in _IMPORTED:
        _IMPORTED.add(module)
        importlib.import_module(module)  # registers the class's sampler
        return torch_noise(mech, size, clip_bound, generator, dtype, device)
    stream = numpy_stream(generator if generator.device.type == "cpu" else _cpu_seed(generator))
    z = np.asarray(mech.sample(size, clip_bound, stream), dtype=np.float64)
    return torch.from_numpy(z).to(dtype=dtype, device=device)


#: torch-sampler modules of plug-in mechanisms imported so far
_IMPORTED: set[str] = set()


def _cpu_seed(generator: torch.Generator) -> torch.Generator:
    """A CPU generator seeded by one 63-bit draw of a device ``generator``."""
    seed = int(torch.empty(1, dtype=torch.int64, device=generator.device).random_(generator=generator).item())
    return torch.Generator().manual_seed(seed)


@torch_noise.register
def _gaussian(mech: Gaussian, size, clip_bound, generator, dtype, device) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.randn(size, generator=generator, dtype=dtype, device=device).mul_(mech.sigma * clip_bound)


@torch_noise.register
def _laplace(mech: Laplace, size, clip_bound, generator, dtype, device) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return standard_laplace(size, generator, dtype=torch.float64, device=device).mul_(clip_bound / mech.u0).to(dtype)


@torch_noise.register
def _lmo(mech: LMO, size, clip_bound, generator, dtype, device) -> torch.Tensor:  # type: ignore[no-untyped-def]
    c = clip_bound
    if mech.variant == "shared":
        u = sample_u(mech, (), generator, device=device)
        return standard_laplace(size, generator, dtype=torch.float64, device=device).mul_(c / u).to(dtype)
    if device.type == "cpu":
        direct = dtype in (torch.float32, torch.float64)
        z = torch.empty(math.prod(size), dtype=dtype if direct else torch.float32)
        sample_per_coordinate(mech.arrays, z.numel(), numpy_stream(generator), c, out=z.numpy())
        return z.reshape(size).to(dtype)
    return lmo_from_uniforms(mech, size, c, generator, device=device).to(dtype)

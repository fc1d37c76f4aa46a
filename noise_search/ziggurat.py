"""Exact ziggurat sampling of a symmetric law from the density of its magnitude.

For a noise coordinate ``Z`` whose magnitude ``|Z|`` has a density ``f`` on ``[0, inf)`` that
is decreasing and convex (every scale mixture of exponentials is: ``f(y) = E[u exp(-u y)]``),
Marsaglia and Tsang's ziggurat (2000) covers the region under ``f`` with ``LAYERS``
horizontal layers of equal area ``v``:

* layer 0 (the base) is the strip ``[0, r] x [0, f(r)]`` plus the tail beyond ``r``
  (mass ``P(|Z| > r)``); it is drawn as a rectangle of width ``x[0] = v / f(r)``;
* layer ``i >= 1`` is the rectangle ``[0, x[i]] x [y[i], y[i + 1]]``, with
  ``y[i + 1] = y[i] + v / x[i]`` (its area is ``v`` by definition) and ``x[i + 1]`` at least
  ``f^{-1}(y[i + 1])``, so the layers cover the region; the top layer reaches ``f(0)`` or above.

A draw picks a layer and a point ``x`` uniformly in its width. Below the layer's fast width
``fast[i] <= f^{-1}(y[i + 1])`` the whole layer height lies under ``f`` and ``x`` is accepted at
once (about 99% of draws). Otherwise: in the base, a draw of ``|Z|`` conditioned on
``|Z| > r`` (supplied by the caller, exactly); in another layer, a uniform height in the layer,
accepted when it lies under ``f(x)`` and otherwise discarded for a fresh attempt. Every
accepted value is therefore an exact draw of the law; no step approximates it.

The tables need ``f^{-1}``. ``f`` is evaluated once on a fine geometric grid: between two
grid points the chord lies above a convex ``f``, so inverting the chord gives a point
where ``f`` is at most the target height (a valid layer width), and the grid point to its
left, where ``f`` is at least the target, a valid fast width. Both carry a relative margin of
``1e-9`` against rounding in ``f``. The base's ``r`` is solved (bisection) so that the top
layer just reaches ``f(0)``.

Random bits: one 64-bit word per attempt. Bit 0 is the sign, bits 1-10 pick one of the 1,024
layers and bits 11-63 (53 bits) the position in the layer's width (numpy's own ziggurats use
the same layout with 256 layers; more layers make the slow path four times rarer).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

LAYERS = 1024
_POSITION_SHIFT = 11  # 64 - 53: the top 53 bits are the position
_POSITION_STEP = 2.0**-53
_SHIFT = np.uint64(_POSITION_SHIFT)
_INDEX_MASK = np.uint64(2 * LAYERS - 1)  # sign and layer bits
# Attempts per pass: 16,000 words (125 KiB) keep every temporary below glibc's default mmap
# threshold (128 KiB), so memory is reused instead of being page-faulted in afresh each call.
_CHUNK = 16_000
_SPARE_SIGMAS = 6.0
_SPARE_MIN = 16
assert 2 * LAYERS <= 2**_POSITION_SHIFT, "the sign and layer bits must sit below the position"
# Relative margins that keep rounding in f from turning a valid table into an invalid one.
_MARGIN = 1e-9
# Geometric grid for inverting f: spacing ratio and span below the scale 1 / f(0).
_GRID_RATIO = 2e-4
_GRID_BELOW = 1e-7

#: ``density(y)`` and ``tail_mass(y)`` for an array ``y >= 0``: ``f(y)`` and ``P(|Z| > y)``.
Density = Callable[[np.ndarray], np.ndarray]
#: ``tail(r, n, rng)``: ``n`` exact draws of ``|Z|`` conditioned on ``|Z| > r``.
TailSampler = Callable[[float, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class ZigguratTables:
    """Layer tables for one law (units of ``|Z|``; see the module docstring).

    ``x``: ``LAYERS`` widths (``x[0] = v / f(r)``, ``x[1] = r``, decreasing); ``fast``: the fast
    widths (``fast[0] = r``, ``fast[-1] = 0``); ``y``: ``LAYERS + 1`` heights (``y[0] = 0``,
    ``y[1] = f(r)``, ``y[-1] >= f(0)``); ``r``: where the tail starts; ``area``: ``v``.
    """

    x: np.ndarray
    fast: np.ndarray
    y: np.ndarray
    r: float
    area: float

    @property
    def fast_fraction(self) -> float:
        """Probability that one attempt is accepted without evaluating ``f`` (in ``(0, 1)``)."""
        return float(np.mean(self.fast / self.x))

    @property
    def acceptance(self) -> float:
        """Probability that one attempt yields a value, ``1 / (LAYERS v)`` (at most 1)."""
        return 1.0 / (LAYERS * self.area)

    def layer_areas(self) -> np.ndarray:
        """Area of every layer's rectangle (the base's includes the tail): all equal ``v``."""
        heights = np.diff(self.y)
        return np.concatenate([[self.x[0] * self.y[1]], self.x[1:] * heights[1:]])


@dataclass(frozen=True)
class _InverseGrid:
    """``f`` on a fine grid from 0 out to ``upper``: the inverse by chords."""

    points: list[float]
    values: list[float]  # f(points), decreasing
    negated: list[float]  # -values, increasing, for bisect

    @classmethod
    def build(cls, density: Density, upper: float) -> _InverseGrid:
        low = upper * _GRID_BELOW
        count = math.ceil(math.log(upper / low) / math.log1p(_GRID_RATIO)) + 1
        points = np.concatenate([[0.0], np.geomspace(low, upper, count)])
        values = np.asarray(density(points), float)
        if not (np.all(np.isfinite(values)) and np.all(np.diff(values) <= 0) and values[-1] > 0):
            raise ValueError("ziggurat: the density must be finite, positive and decreasing on the grid")
        return cls(points.tolist(), values.tolist(), (-values).tolist())

    def widths(self, height: float) -> tuple[float, float]:
        """``(fast, cover)`` with ``f(fast) >= height >= f(cover)``, for ``f(upper) < height < f(0)``."""
        j = bisect.bisect_left(self.negated, -height)
        x0, x1 = self.points[j - 1], self.points[j]
        f0, f1 = self.values[j - 1], self.values[j]
        chord = x0 + (f0 - height) / (f0 - f1) * (x1 - x0) if f0 > f1 else x1
        return x0 * (1.0 - _MARGIN), min(chord, x1) * (1.0 + _MARGIN)


def _layers(grid: _InverseGrid, r: float, f_r: float, tail_r: float) -> tuple[float, ZigguratTables | None]:
    """Build the layers from ``r`` up; return ``(y_top - f(0), tables)`` (``+inf`` if they close early)."""
    top = float(grid.values[0])
    area = r * f_r + tail_r
    x = [area / f_r, r]
    fast = [r]
    y = [0.0, f_r]
    for i in range(1, LAYERS):
        height = y[i] + area / x[i]
        y.append(height)
        if i == LAYERS - 1:
            fast.append(0.0)
            break
        if height >= top:
            return math.inf, None
        fast_i, cover = grid.widths(height)
        fast.append(fast_i)
        x.append(cover)
    tables = ZigguratTables(np.array(x), np.array(fast), np.array(y), r, area)
    return y[-1] - top, tables


def build_tables(density: Density, tail_mass: Density) -> ZigguratTables:
    """Ziggurat tables for a magnitude with decreasing convex ``density`` and ``tail_mass``.

    ``density(0)`` must be finite. Takes about 0.1 s; cache the result per law.
    """
    f0 = float(density(np.zeros(1))[0])
    if not (math.isfinite(f0) and f0 > 0):
        raise ValueError(f"ziggurat: the density at 0 must be finite and positive, got {f0!r}")

    def strip(y: float) -> float:  # base-strip area r f(r) + P(|Z| > r), decreasing in r
        return float(y * density(np.array([y]))[0] + tail_mass(np.array([y]))[0])

    # beyond `upper` the base strip holds less than half a layer's share: the layers cannot close
    upper = 1.0 / f0
    for _ in range(200):
        if strip(upper) <= 0.5 / LAYERS:
            break
        upper *= 2.0
    else:
        raise ValueError("ziggurat: y f(y) + P(|Z| > y) does not fall below 1 / (2 LAYERS) by 2^200 / f(0)")
    grid = _InverseGrid.build(density, upper)

    def closure(r: float) -> tuple[float, ZigguratTables | None]:
        return _layers(grid, r, float(density(np.array([r]))[0]), float(tail_mass(np.array([r]))[0]))

    lo, hi = upper / 2.0, upper  # closure(lo) >= 0 (layers reach f(0)), closure(hi) < 0
    while closure(lo)[0] < 0:
        hi, lo = lo, lo / 2.0
    if closure(hi)[0] >= 0:
        raise ValueError("ziggurat: could not bracket the tail start r")
    while hi - lo > 1e-14 * hi:
        mid = 0.5 * (lo + hi)
        if closure(mid)[0] >= 0:
            lo = mid
        else:
            hi = mid
    gap, tables = closure(lo)
    if tables is None or gap > 1e-6 * f0:
        raise ValueError(f"ziggurat: the layers did not close (top overshoots f(0) by {gap:g})")
    return tables


_LOCAL = threading.local()


def _workspace() -> tuple[np.ndarray, ...]:
    """This thread's chunk buffers, kept between calls so their pages are not faulted in again."""
    buffers = getattr(_LOCAL, "buffers", None)
    if buffers is None or buffers[0].size != _CHUNK:
        buffers = (
            np.empty(_CHUNK, np.intp),  # sign and layer index
            np.empty(_CHUNK, np.int64),  # position (< 2**53: int64 converts to float faster)
            np.empty(_CHUNK),  # gathered signed step
            np.empty(_CHUNK, np.int64),  # gathered fast limit
            np.empty(_CHUNK, bool),
        )
        _LOCAL.buffers = buffers
    return buffers


@dataclass(frozen=True)
class Ziggurat:
    """A ready sampler: the tables, ``f`` for the wedge tests and the exact tail sampler."""

    tables: ZigguratTables
    density: Density
    tail: TailSampler
    # derived lookup tables, indexed by the word's low bits (2 layer + sign) or by layer
    _signed_steps: np.ndarray = field(init=False, repr=False, compare=False)
    _fast_limits: np.ndarray = field(init=False, repr=False, compare=False)
    _steps: np.ndarray = field(init=False, repr=False, compare=False)
    _wedge_floor: np.ndarray = field(init=False, repr=False, compare=False)
    _wedge_height: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        t = self.tables
        steps = np.repeat(t.x * _POSITION_STEP, 2) * np.tile([1.0, -1.0], LAYERS)  # index = 2 layer + sign
        # accept at once iff position < fast[i] / x[i] * 2**53 (integers, exact comparison)
        limits = np.floor(t.fast / t.x * 2.0**53).astype(np.int64)
        object.__setattr__(self, "_signed_steps", steps)
        object.__setattr__(self, "_steps", t.x * _POSITION_STEP)
        object.__setattr__(self, "_wedge_floor", t.y[:-1])
        object.__setattr__(self, "_wedge_height", np.diff(t.y))
        object.__setattr__(self, "_fast_limits", np.repeat(limits, 2))

    def spare_attempts(self, n: int) -> int:
        """Extra attempts drawn with ``n``: they stand in for the ones the wedge test discards.

        The expected number of discards plus ``_SPARE_SIGMAS`` standard deviations and
        ``_SPARE_MIN``; running short is rarer than 1e-8 and then falls back to a fresh draw.
        """
        fails = n * (1.0 - self.tables.acceptance)
        return int(fails + _SPARE_SIGMAS * math.sqrt(fails) + _SPARE_MIN)

    def sample(self, n: int, rng: np.random.Generator, scale: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
        """``n`` independent draws of ``scale * Z`` (``scale > 0``), into ``out`` if given.

        ``out``: a 1-D float32 or float64 array of length ``n`` (default: a new float64 one);
        values are computed in float64 and rounded once on the way in.
        """
        out = np.empty(n) if out is None else out
        if out.shape != (n,) or out.dtype not in (np.float32, np.float64):
            raise ValueError(f"out: expected a float32 or float64 array of shape ({n},), got {out.dtype} {out.shape}")
        spare = self.spare_attempts(n)
        steps = self._signed_steps * scale
        slow_at: list[np.ndarray] = []
        slow_words: list[np.ndarray] = []
        spares = np.empty(spare)
        index_buf, position_buf, gathered, limit_buf, fast_buf = _workspace()
        for start in range(0, n + spare, _CHUNK):
            stop = min(start + _CHUNK, n + spare)
            m = stop - start
            words = rng.bit_generator.random_raw(m)
            index = index_buf[:m]
            position = position_buf[:m]
            np.bitwise_and(words, _INDEX_MASK, out=index.view(np.uint64))
            np.right_shift(words, _SHIFT, out=position.view(np.uint64))
            np.take(steps, index, out=gathered[:m], mode="clip")  # "clip": no bounds check to raise
            if stop <= n:
                np.multiply(position, gathered[:m], out=out[start:stop], casting="unsafe")
            else:
                values = position * gathered[:m]
                cut = max(n - start, 0)
                out[start:n] = values[:cut]
                spares[start + cut - n : stop - n] = values[cut:]
            np.take(self._fast_limits, index, out=limit_buf[:m], mode="clip")
            missed = np.flatnonzero(np.greater_equal(position, limit_buf[:m], out=fast_buf[:m]))
            if missed.size:
                slow_at.append(missed + start)
                slow_words.append(words[missed])
        if not slow_at:
            return out
        at = np.concatenate(slow_at)
        values, ok = self._resolve(np.concatenate(slow_words), rng)
        values *= scale
        in_out = at < n
        out[at[in_out & ok]] = values[in_out & ok]
        spares[at[~in_out & ok] - n] = values[~in_out & ok]
        # every main position the wedge discarded takes the next spare that succeeded
        discarded = at[in_out & ~ok]
        good = np.ones(spare, bool)
        good[at[~in_out & ~ok] - n] = False
        usable = spares[good]
        if usable.size >= discarded.size:
            out[discarded] = usable[: discarded.size]
        else:  # rarer than 1e-8: draw afresh
            out[discarded] = self.sample(discarded.size, rng, scale)
        return out

    def _resolve(self, words: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Attempts that missed the fast width: ``(values, succeeded)``; tail draws and wedge tests."""
        index = (words & _INDEX_MASK).astype(np.intp)
        layer = index >> 1
        x = (words >> _SHIFT) * self._steps[layer]
        base = layer == 0
        tails = int(np.count_nonzero(base))
        if tails:
            x[base] = self.tail(self.tables.r, tails, rng)
        # a uniform height in each layer; in the base the draw is a tail draw and always succeeds
        height = self._wedge_floor[layer] + rng.random(words.size) * self._wedge_height[layer]
        ok = height < self.density(x)
        ok |= base
        np.negative(x, out=x, where=(index & 1).astype(bool))
        return x, ok

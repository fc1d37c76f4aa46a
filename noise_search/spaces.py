"""Search spaces of LMO parameter sets, generated lazily in blocks of :class:`MixtureArrays`.

Two spaces:

* :class:`PaperSpace` (``paper``) -- the LMO-DP paper's grid, exactly: ``a1, a3, a4`` each in
  ``linspace(0.1, 1.8, 18)``; ``(G_theta, G_k)`` in ``{(1, 2), (2, 2), (3, 2), (5, 1), (9, 0.5),
  (7.5, 1), (0.5, 1)}``; ``E_lambda`` in ``{0.1, 0.5, 1, 5}``; ``(U_b, U_a)`` in ``{(1, 0), (2, 1)}``:
  ``18**3 * 7 * 4 * 2 = 326,592`` candidates, all three components present. Candidate ``i`` is
  the mixed-radix number ``(a1, a3, a4, gamma pair, E_lambda, uniform pair)`` with the last
  digit fastest. Every paper candidate is valid (``G_k + 1 + 1 > 2`` or ``U_a > 0``).
  Sub-grids (other value lists) are allowed for tests and quick looks.

* :class:`WideSpace` (``wide``) -- ``size`` candidates drawn from continuous, log-scaled ranges
  with a deterministic generator: candidate ``i`` depends only on ``(seed, i)``. Each
  candidate first draws which components are present, uniformly among the six patterns that
  can be valid (``{Gamma}``, ``{Uniform}``, ``{Gamma, Exponential}``, ``{Gamma, Uniform}``,
  ``{Exponential, Uniform}``, all three; an Exponential alone always has ``E[1/u**2] = inf``),
  then (log-uniform unless said otherwise):

  ============  =====================  =====================================================
  field         range                  note
  ============  =====================  =====================================================
  a1, a3, a4    [1e-3, 10]             weight of a present component (0 when absent)
  G_theta       [1e-3, 10]             Gamma scale
  G_k           [lo, 1e3]              Gamma shape; ``lo = 0.5``, raised to just above
                                       ``2 - (#Exponential) - (#Uniform starting at 0)``
                                       when needed so that ``E[1/u**2] < inf``
  E_lambda      [1e-2, 1e3]            Exponential rate
  U_a           0 with prob. 1/2,      forced > 0 when there is no Gamma (validity)
                else [1e-3, 10]
  U_b - U_a     [1e-3, 10]             Uniform width
  ============  =====================  =====================================================

  The ranges reach near-degenerate mixtures on purpose: single-component mixtures, a
  component with a weight 1e4 times smaller than another, a Gamma with shape up to 1e3
  (coefficient of variation ~3%), a Uniform of width 1e-3 far from 0 -- all close to a
  plain Laplace, which is where the search is expected to drift (docs/privacy.md section 6).
  Absent components get neutral values (``G_k = G_theta = E_lambda = 1``, ``U_a = 0``,
  ``U_b = 1``) and weight 0.

Both spaces construct only candidates that pass :class:`~noise_search.mechanisms.LMO`'s
validity rule (``zero_concentration > 2``): no filtering step, so a block has exactly
``stop - start`` rows. Neither space ever holds one Python object per candidate: a block is
built with array operations from its index range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from noise_search.errors import ParameterError, check_int
from noise_search.mechanisms import LMO
from noise_search.mgf import MixtureArrays

SPACES: tuple[str, ...] = ("paper", "wide")

PAPER_WEIGHTS: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.1, 1.8, 18))
#: ``(G_theta, G_k)`` pairs of the paper's grid.
PAPER_GAMMA: tuple[tuple[float, float], ...] = (
    (1.0, 2.0),
    (2.0, 2.0),
    (3.0, 2.0),
    (5.0, 1.0),
    (9.0, 0.5),
    (7.5, 1.0),
    (0.5, 1.0),
)
PAPER_E_LAMBDA: tuple[float, ...] = (0.1, 0.5, 1.0, 5.0)
#: ``(U_b, U_a)`` pairs of the paper's grid.
PAPER_UNIFORM: tuple[tuple[float, float], ...] = ((1.0, 0.0), (2.0, 1.0))

#: Default number of candidates drawn from the wide space. Wide candidates cost far more than
#: paper ones: ~40% have every order up to 256 finite, and the sampled-RDP sum is quadratic in
#: the order (about 1.5 ms per such candidate and core).
WIDE_DEFAULT_SIZE = 1 << 14
_WIDE_CHUNK = 4096
# Component patterns (gamma, exponential, uniform) that can be valid.
_WIDE_PATTERNS = np.array(
    [[1, 0, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]],
    dtype=bool,
)

_FIELDS = ("a1", "a3", "a4", "G_k", "G_theta", "E_lambda", "U_a", "U_b")


def lmo_from_row(p: MixtureArrays, i: int) -> LMO:
    """The :class:`LMO` of row ``i``; components with weight 0 are left out."""
    values = {f: float(getattr(p, f)[i]) for f in _FIELDS}
    comps = tuple(name for name, w in (("gamma", "a1"), ("exponential", "a3"), ("uniform", "a4")) if values[w] > 0.0)
    return LMO(**values, components=comps)


def lmo_params(mech: LMO) -> dict[str, Any]:
    """The LMO's parameters as the plain dict the result file stores (no ``mechanism`` key)."""
    return mech.params()


def _check_block(start: int, stop: int, size: int) -> None:
    if not 0 <= start <= stop <= size:
        raise ValueError(f"block [{start}, {stop}) outside [0, {size})")


@dataclass(frozen=True)
class PaperSpace:
    """The paper's grid (or a sub-grid with other value lists, for tests)."""

    weights: tuple[float, ...] = PAPER_WEIGHTS
    gamma: tuple[tuple[float, float], ...] = PAPER_GAMMA
    e_lambda: tuple[float, ...] = PAPER_E_LAMBDA
    uniform: tuple[tuple[float, float], ...] = PAPER_UNIFORM
    name: ClassVar[str] = "paper"
    _tables: dict[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, float)
        g = np.asarray(self.gamma, float).reshape(-1, 2)
        e = np.asarray(self.e_lambda, float)
        u = np.asarray(self.uniform, float).reshape(-1, 2)
        if min(w.size, g.shape[0], e.size, u.shape[0]) == 0:
            raise ParameterError("space", "every value list of a paper-style grid must be non-empty")
        if np.any(w <= 0) or np.any(g <= 0) or np.any(e <= 0) or np.any(u[:, 1] < 0) or np.any(u[:, 0] <= u[:, 1]):
            raise ParameterError(
                "space", "grid values out of range (weights, G_theta, G_k, E_lambda > 0; 0 <= U_a < U_b)"
            )
        # All three components are present with positive weights: the zero concentration is
        # G_k + 1 + (1 or inf) > 2 for every G_k > 0, so every candidate is valid.
        object.__setattr__(self, "_tables", {"w": w, "g": g, "e": e, "u": u})

    @property
    def shape(self) -> tuple[int, ...]:
        t = self._tables
        n = t["w"].size
        return (n, n, n, t["g"].shape[0], t["e"].size, t["u"].shape[0])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def block(self, start: int, stop: int) -> MixtureArrays:
        """Candidates ``start .. stop - 1`` as arrays."""
        _check_block(start, stop, self.size)
        return self.take(np.arange(start, stop))

    def take(self, index: np.ndarray) -> MixtureArrays:
        """Candidates at the given global indices (any order)."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.size):
            raise ValueError("candidate index out of range")
        full = np.unravel_index(index, self.shape)
        t = self._tables
        i1, i3, i4, ig, ie, iu = full
        return MixtureArrays.stack(
            a1=t["w"][i1],
            a3=t["w"][i3],
            a4=t["w"][i4],
            G_theta=t["g"][ig, 0],
            G_k=t["g"][ig, 1],
            E_lambda=t["e"][ie],
            U_b=t["u"][iu, 0],
            U_a=t["u"][iu, 1],
        )

    def family_key(self, index: np.ndarray) -> np.ndarray:
        """The discrete configuration (gamma pair, E_lambda, uniform pair) of each index."""
        n_disc = int(np.prod(self.shape[3:]))
        return np.asarray(index, dtype=np.int64) % n_disc

    def continuous_bounds(self) -> dict[str, tuple[float, float]]:
        """Fields the ``optimize`` strategy moves, with their ranges (the grid's hull)."""
        w = self._tables["w"]
        return {
            "a1": (float(w.min()), float(w.max())),
            "a3": (float(w.min()), float(w.max())),
            "a4": (float(w.min()), float(w.max())),
        }

    def describe(self) -> dict[str, Any]:
        is_paper = self == PaperSpace()
        return {
            "space": "paper" if is_paper else "paper-subgrid",
            "size": self.size,
            **(
                {}
                if is_paper
                else {
                    "weights": list(self.weights),
                    "gamma": [list(x) for x in self.gamma],
                    "e_lambda": list(self.e_lambda),
                    "uniform": [list(x) for x in self.uniform],
                }
            ),
        }


def _log_uniform(rng: np.random.Generator, lo: float | np.ndarray, hi: float | np.ndarray, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


@dataclass(frozen=True)
class WideSpace:
    """``size`` candidates drawn from continuous log-scaled ranges (module docstring)."""

    size: int = WIDE_DEFAULT_SIZE
    seed: int = 0
    name: ClassVar[str] = "wide"

    WEIGHT: ClassVar[tuple[float, float]] = (1e-3, 10.0)
    G_THETA: ClassVar[tuple[float, float]] = (1e-3, 10.0)
    G_K: ClassVar[tuple[float, float]] = (0.5, 1e3)
    E_LAMBDA: ClassVar[tuple[float, float]] = (1e-2, 1e3)
    U_A: ClassVar[tuple[float, float]] = (1e-3, 10.0)
    U_WIDTH: ClassVar[tuple[float, float]] = (1e-3, 10.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", check_int("candidates", self.size, ge=1))
        object.__setattr__(self, "seed", check_int("seed", self.seed, ge=0))

    def _chunk(self, c: int) -> MixtureArrays:
        """Chunk ``c`` (candidates ``c*4096 ..``): a fixed function of ``(seed, c)``."""
        n = _WIDE_CHUNK  # always a full chunk, so a candidate does not depend on the space's size
        rng = np.random.default_rng([self.seed, c])
        pattern = _WIDE_PATTERNS[rng.integers(0, len(_WIDE_PATTERNS), n)]
        has_g, has_e, has_u = pattern[:, 0], pattern[:, 1], pattern[:, 2]
        a1 = _log_uniform(rng, *self.WEIGHT, n)
        a3 = _log_uniform(rng, *self.WEIGHT, n)
        a4 = _log_uniform(rng, *self.WEIGHT, n)
        g_theta = _log_uniform(rng, *self.G_THETA, n)
        e_lambda = _log_uniform(rng, *self.E_LAMBDA, n)
        u_a = np.where(rng.random(n) < 0.5, 0.0, _log_uniform(rng, *self.U_A, n))
        u_a = np.where(has_u & ~has_g & (u_a == 0.0), _log_uniform(rng, *self.U_A, n), u_a)
        width = _log_uniform(rng, *self.U_WIDTH, n)
        # Gamma shape: above 2 - (other components' contributions to the zero concentration).
        others = has_e.astype(float) + (has_u & (u_a == 0.0)).astype(float)
        bounded_away = has_u & (u_a > 0.0)
        need = np.where(bounded_away, 0.0, 2.0 - others)
        g_lo = np.maximum(self.G_K[0], need * 1.001)
        g_k = _log_uniform(rng, g_lo, self.G_K[1], n)
        rows = MixtureArrays.stack(
            a1=np.where(has_g, a1, 0.0),
            a3=np.where(has_e, a3, 0.0),
            a4=np.where(has_u, a4, 0.0),
            G_k=np.where(has_g, g_k, 1.0),
            G_theta=np.where(has_g, g_theta, 1.0),
            E_lambda=np.where(has_e, e_lambda, 1.0),
            U_a=np.where(has_u, u_a, 0.0),
            U_b=np.where(has_u, u_a + width, 1.0),
        )
        return rows.take(slice(0, min(_WIDE_CHUNK, self.size - c * _WIDE_CHUNK)))

    def block(self, start: int, stop: int) -> MixtureArrays:
        _check_block(start, stop, self.size)
        if start == stop:
            return MixtureArrays.stack(**{f: np.zeros(0) for f in _FIELDS})
        first, last = start // _WIDE_CHUNK, (stop - 1) // _WIDE_CHUNK
        parts = MixtureArrays.concat([self._chunk(c) for c in range(first, last + 1)])
        return parts.take(slice(start - first * _WIDE_CHUNK, stop - first * _WIDE_CHUNK))

    def take(self, index: np.ndarray) -> MixtureArrays:
        """Candidates at the given global indices (any order); regenerates only their chunks."""
        index = np.asarray(index, dtype=np.int64).ravel()
        if index.size and (index.min() < 0 or index.max() >= self.size):
            raise ValueError("candidate index out of range")
        if index.size == 0:
            return MixtureArrays.stack(**{f: np.zeros(0) for f in _FIELDS})
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        chunk_of = ordered // _WIDE_CHUNK
        parts = [self._chunk(int(c)).take(ordered[chunk_of == c] - int(c) * _WIDE_CHUNK) for c in np.unique(chunk_of)]
        return MixtureArrays.concat(parts).take(np.argsort(order, kind="stable"))

    def family_key(self, index: np.ndarray) -> np.ndarray:
        """Component pattern (and whether the Uniform starts above 0) of each index, as an int."""
        p = self.take(index)
        return (
            (p.a1 > 0).astype(int)
            + 2 * (p.a3 > 0).astype(int)
            + 4 * (p.a4 > 0).astype(int)
            + 8 * (p.U_a > 0).astype(int)
        )

    def continuous_bounds(self) -> dict[str, tuple[float, float]]:
        """Fields the ``optimize`` strategy moves, with their ranges. ``G_theta``, ``E_lambda``
        and the Uniform's bounds are left where the start point has them: only the products
        ``a1 G_theta``, ``a3 / E_lambda`` and ``a4 (U_a, U_b)`` matter for ``u``, so moving
        the weights already reaches every distribution of the family."""
        return {"a1": self.WEIGHT, "a3": self.WEIGHT, "a4": self.WEIGHT, "G_k": self.G_K}

    def describe(self) -> dict[str, Any]:
        return {
            "space": "wide",
            "size": self.size,
            "seed": self.seed,
            "ranges": {
                "weights": list(self.WEIGHT),
                "G_theta": list(self.G_THETA),
                "G_k": list(self.G_K),
                "E_lambda": list(self.E_LAMBDA),
                "U_a": list(self.U_A),
                "U_width": list(self.U_WIDTH),
            },
        }


Space = PaperSpace | WideSpace


def make_space(name: str, *, size: int | None = None, seed: int = 0) -> Space:
    """``paper`` or ``wide`` (``size`` candidates, default :data:`WIDE_DEFAULT_SIZE`)."""
    if name == "paper":
        return PaperSpace()
    if name == "wide":
        return WideSpace(size=WIDE_DEFAULT_SIZE if size is None else size, seed=seed)
    raise ParameterError("space", f"must be one of {', '.join(SPACES)}, got {name!r}")

"""Per-coordinate LMO with u hidden: a one-coordinate shift vs the same L1 shift split over two
coordinates, by numerical hockey-stick divergence (docs/privacy.md, "No privacy-loss distribution
for LMO with u hidden"); and the same comparison for plain Laplace.

    python scripts/hidden_u_split.py

For each mixture: the largest privacy loss (pure-DP epsilon) of the shift on 1, 2 and many
coordinates, and delta(eps) = E_P[(1 - e^(eps - L))_+] of one release (no sampling) for the shift
(1) and the split (1/2, 1/2), add direction. The privacy loss L of each coordinate is tabulated on
a fine x grid (|x| <= 1e4), histogrammed in bins of 2e-4 and the split's convolved; this is a
numerical illustration, not a certified bound.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from noise_search.hidden_u import log_density, max_loss_split
from noise_search.mechanisms import LMO

ROOT = Path(__file__).resolve().parents[1]
GAMMA = {"a1": 1.0, "a3": 0.0, "a4": 0.0, "G_k": 3.0, "G_theta": 2.0, "E_lambda": 1.0, "U_a": 0.5, "U_b": 1.5}
WIDTH = 2e-4
EPSILONS = (0.5, 1.0, 2.0, 3.0, 4.0)


def loss_histogram(mech: LMO, shift: float, edges: np.ndarray) -> np.ndarray:
    """Probability of each loss bin under P = the noise shifted by ``shift``."""
    x = np.unique(np.concatenate([np.linspace(-1e4, -50, 200_001), np.linspace(-50, 50, 2_000_001),
                                  np.linspace(50, 1e4, 200_001)]))  # fmt: skip
    p = np.exp(log_density(mech, x - shift)) * np.gradient(x)
    loss = log_density(mech, x - shift) - log_density(mech, x)
    return np.histogram(loss, bins=edges, weights=p)[0]


def delta(hist: np.ndarray, centers: np.ndarray, eps: float) -> float:
    return float(np.sum(hist * np.clip(1.0 - np.exp(eps - centers), 0.0, None)))


def report(name: str, mech: LMO) -> None:
    edges = np.arange(-60.0, 60.0 + WIDTH, WIDTH)
    centers = (edges[:-1] + edges[1:]) / 2
    one = loss_histogram(mech, 1.0, edges)
    half = loss_histogram(mech, 0.5, edges)
    split = np.convolve(half, half)
    split_centers = np.arange(len(split)) * WIDTH + 2 * centers[0]
    pure = [max_loss_split(mech, 1.0, m) for m in (1, 2, 1 << 16)]
    print(f"\n{name}: largest loss, shift on 1 / 2 / 65536 coordinates: {pure[0]:.4f} / {pure[1]:.4f} / {pure[2]:.4f}")
    print(f"{'eps':>5} {'delta, 1 coordinate':>20} {'delta, split 1/2+1/2':>21} {'ratio':>7}")
    for eps in EPSILONS:
        a, b = delta(one, centers, eps), delta(split, split_centers, eps)
        print(f"{eps:>5g} {a:>20.4e} {b:>21.4e} {b / a if a > 0 else float('inf'):>7.3f}")


def laplace_check() -> None:
    """Plain Laplace (scale b): the largest excess of the split's delta over the single coordinate's."""
    x = np.linspace(-60.0, 60.0, 4_000_001)
    edges = np.arange(-10.0, 10.0 + 1e-4, 1e-4)
    centers = (edges[:-1] + edges[1:]) / 2

    def hist(shift: float, b: float) -> np.ndarray:
        p = np.exp(-np.abs(x - shift) / b) / (2 * b) * (x[1] - x[0])
        return np.histogram((np.abs(x) - np.abs(x - shift)) / b, bins=edges, weights=p)[0]

    print("\nplain Laplace: max over eps in [0, 1/b] of delta(split) - delta(1 coordinate)")
    for b in (0.5, 1.0, 2.0):
        one = hist(1.0, b)
        for part in (0.5, 0.25):
            split = np.convolve(hist(part, b), hist(1.0 - part, b))
            split_centers = np.arange(len(split)) * 1e-4 + 2 * centers[0]
            excess = max(delta(split, split_centers, e) - delta(one, centers, e) for e in np.linspace(0.0, 1.0 / b, 41))
            print(f"  b = {b:g}, split {part:g}/{1 - part:g}: {excess:.2e}")


def main() -> None:
    laplace_check()
    report("u ~ Gamma(k=3, theta=2)", LMO.from_dict(GAMMA))
    path = ROOT / "reference" / "paper_params" / "fig6_lmo_eps1.json"
    report(f"paper file {path.name}", LMO.from_dict(json.loads(path.read_text())))


if __name__ == "__main__":
    main()

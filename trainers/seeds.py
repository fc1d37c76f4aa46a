"""Seeds: one independent 32-bit seed per purpose (model, sampling, noise, audit) and rank,
derived from ``training.seed`` with ``numpy.random.SeedSequence``."""

from __future__ import annotations

import numpy as np

SEED_MODEL, SEED_SAMPLING, SEED_NOISE, SEED_AUDIT = 0, 1, 2, 3


def derive_seed(seed: int, purpose: int, rank: int = 0) -> int:
    """An independent 32-bit seed for one purpose (model, sampling, noise) and rank."""
    return int(np.random.SeedSequence([seed, purpose, rank]).generate_state(1)[0])

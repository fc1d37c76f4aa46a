"""Where lmo-dp keeps what set-up fetched: datasets and converted models.

The cache is ``$LMODP_CACHE_DIR`` when set, else ``data/cache/`` in the project checkout
(next to the ``trainers`` package; git-ignored). ``python -m trainers.fetch_data`` fills it
at set-up time; training only reads it and never downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LMODP_CACHE_DIR"


def cache_dir() -> Path:
    """The cache root (not created)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "data" / "cache"


def vader_dir() -> Path:
    """Folder holding the ``hutto_ICWSM_2014`` sentence files from the vaderSentiment sdist."""
    return cache_dir() / "vader" / "hutto_ICWSM_2014"


def downloads_dir() -> Path:
    """Folder holding downloaded distribution files kept as they are (the IMDB wheel)."""
    return cache_dir() / "downloads"


def models_dir() -> Path:
    """Folder holding models converted once from package files (SmolLM2 GGUF -> safetensors)."""
    return cache_dir() / "models"

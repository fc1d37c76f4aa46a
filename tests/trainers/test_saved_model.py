"""Saved trial models (:mod:`trainers.saved_model`): every trainable set, saved and rebuilt,
scores the test split exactly as the trial's own evaluation did.

A tiny real BERT (hidden 32) on real movie-review sentences keeps each case to about a second;
the MLflow round trip in a fresh process is in tests/orchestrator/test_saved_models.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainers.config import TrialConfig
from trainers.data import load_dataset
from trainers.engine import train
from trainers.saved_model import MANIFEST, load_saved, save_trained

CASES = {
    "head": {"trainable": "head"},
    "lora": {"trainable": "lora", "lora": {"rank": 2}},
    "full": {"trainable": "full"},
    "top-lora": {"trainable": "lora", "lora": {"rank": 2}, "top_layers": 1},
    "top-full": {"trainable": "full", "top_layers": 1},
}


@pytest.fixture(scope="module")
def movie_reviews():
    return load_dataset("movie-reviews")


def tiny_config(tiny_bert, cache, model: dict) -> TrialConfig:
    features = {"features": {"center": None, "cache_dir": str(cache)}} if model.get("trainable") == "head" else {}
    if model.get("top_layers"):
        features = {"features": {"center": None, "cache_dir": str(cache)}}
    return TrialConfig.from_dict({
        "model": {"path": str(tiny_bert), "max_length": 24, **model, **features},
        "data": {"name": "movie-reviews", "max_train_examples": 60, "max_eval_examples": 50},
        "privacy": {"mechanism": "gaussian", "epsilon": 8.0, "delta": 1e-5, "clip": 1.0},
        "training": {"batch_size": 10, "steps": 4, "learning_rate": 0.05, "seed": 1, "eval_batch_size": 16},
    })  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_saved_model_reproduces_the_trials_test_accuracy(
    kind, tiny_bert, shared_feature_cache, movie_reviews, tmp_path
):
    cfg = tiny_config(tiny_bert, shared_feature_cache, CASES[kind])
    result = train(cfg, dataset=movie_reviews)
    folder = tmp_path / "saved"
    manifest = save_trained(result, folder)
    assert json.loads((folder / MANIFEST).read_text()) == manifest
    assert manifest["labels"] == ["negative", "positive"]
    assert manifest["base_model"]["path"] == str(tiny_bert)
    if "lora" in kind:  # PEFT's own format
        assert (folder / "adapter" / "adapter_config.json").is_file()
        assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    if kind == "full":
        assert (folder / "weights" / "config.json").is_file()

    saved = load_saved(folder)
    test = movie_reviews.limit(60, 50).test
    probs = saved.predict_proba(test.texts)
    assert probs.shape == (len(test), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    accuracy = float(np.mean(probs.argmax(axis=1) == np.asarray(test.labels)))
    assert accuracy == result.metrics["test_accuracy"]

    # the rebuilt model's logits equal the trained one's on the same inputs
    trained = result.trained
    inputs = trained.inputs["test"]
    idx = torch.arange(len(inputs))
    trained.model.eval()
    with torch.no_grad():
        expected = torch.softmax(inputs.logits(trained.model, inputs.batch(idx, torch.device("cpu"))).double(), -1)
    np.testing.assert_allclose(probs, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert saved.predict(test.texts[:2])[0][0] in ("negative", "positive")


def test_a_folder_that_is_not_a_saved_model_is_refused(tmp_path):
    from noise_search.errors import InputError

    with pytest.raises(InputError, match="not an lmo-dp model folder"):
        load_saved(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "lmo-dp-model", "version": 99}))
    with pytest.raises(InputError, match="version 99"):
        load_saved(tmp_path)

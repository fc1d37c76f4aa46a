"""A tiny real BERT saved as a Hugging Face folder, for fast tests of model plumbing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def make_tiny_bert(folder: Path, *, seed: int = 0, layers: int = 2) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) saved as a Hugging Face folder, with the
    packaged MiniLM's tokenizer files: loads like any model folder, runs in milliseconds."""
    import torch
    from transformers import BertConfig, BertModel

    from trainers.models import default_classifier_path

    source = default_classifier_path()
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, folder / name)
    return folder


def head_config(model_path: Path, cache: Path, *, mechanism: str = "gaussian", epochs: int = 4) -> Any:
    """A head on ``model_path``'s cached features (in ``cache``) over 200 movie-review sentences
    (the ``reviews_200`` fixture): batch 20 (q = 0.1, an epoch is 10 steps), epsilon 8, seed 3."""
    from trainers.config import TrialConfig

    return TrialConfig.from_dict(
        {
            "model": {
                "path": str(model_path), "trainable": "head", "max_length": 32,
                "features": {"center": None, "cache_dir": str(cache)},
            },
            "data": {"max_train_examples": 200, "max_eval_examples": 40},
            "privacy": {"mechanism": mechanism, "epsilon": 8.0, "delta": 1e-5, "clip": 1.0},
            "training": {"batch_size": 20, "epochs": epochs, "learning_rate": 0.1, "seed": 3, "threads": 1},
        }
    )  # fmt: skip

"""A tiny real BERT saved as a Hugging Face folder, for fast tests of model plumbing."""

from __future__ import annotations

import shutil
from pathlib import Path


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

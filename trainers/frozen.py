"""The frozen part of a model: pooled features and hidden states, computed once per text.

A head-only trial trains a classifier on the pooled output of one encoder layer; a
``top_layers`` trial trains the top ``k`` layers on the hidden states entering them. Both
inputs depend only on the frozen weights and the text, so :mod:`trainers.trainable` computes
them here (in eval mode: no dropout; under ``no_grad``) and stores them in the feature cache.

Texts are tokenised exactly as for training (right padding, truncation to ``max_length``) and
run in batches of similar length, so padding costs little; padding never changes a real token's
output (the attention mask hides it), so the result does not depend on the batching beyond
float rounding.

Layers are numbered like ``output_hidden_states``: 0 is the embedding output, ``i`` the output
of the ``i``-th layer, ``num_layers`` the last; negative numbers count from the end (-1 = last).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noise_search.errors import ParameterError
from trainers.models import DTYPES, load_tokenizer
from trainers.progress import progress_bar

POOLINGS: tuple[str, ...] = ("mean", "cls", "last")


@dataclass(frozen=True)
class EncoderShape:
    """What a head needs to know about an encoder, read from its ``config.json`` alone."""

    model_type: str
    num_layers: int
    hidden_size: int
    initializer_range: float


def encoder_shape(folder: str | Path) -> EncoderShape:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    if not isinstance(layers, int) or not isinstance(hidden, int):
        raise ParameterError("model.path", f"{folder}: config.json gives no num_hidden_layers / hidden_size")
    return EncoderShape(
        str(getattr(config, "model_type", "unknown")), layers, hidden, float(getattr(config, "initializer_range", 0.02))
    )


def resolve_layer(layer: int, num_layers: int, field: str = "model.features.layer") -> int:
    """``layer`` as an index into the hidden states ``0..num_layers`` (negative counts from the end)."""
    index = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= index <= num_layers:
        raise ParameterError(
            field, f"must be in [{-num_layers - 1}, {num_layers}] for this model ({num_layers} layers), got {layer}"
        )
    return index


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(B, T, H)`` hidden states and ``(B, T)`` right-padded mask -> ``(B, H)``."""
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = (mask.sum(dim=1) - 1).clamp(min=0).long()
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ParameterError("model.features.pooling", f"must be one of {', '.join(POOLINGS)}, got {pooling!r}")


class FrozenEncoder:
    """A Hugging Face base model (no task head) in eval mode, with its tokenizer."""

    def __init__(self, folder: str | Path, *, dtype: str = "float32", device: torch.device | str = "cpu") -> None:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        self.folder = Path(folder)
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(self.folder)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # unused pretraining heads are reported as warnings
        try:
            self.model = AutoModel.from_pretrained(self.folder, dtype=DTYPES[dtype])
        except (OSError, ValueError) as exc:
            raise ParameterError("model.path", f"cannot load {self.folder} as an encoder: {exc}") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
        self.model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def tokenize(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)`` padded to ``max_length`` on the right, as training tokenises."""
        enc = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
        )
        return enc["input_ids"].long(), enc["attention_mask"].long()

    @torch.no_grad()
    def _batches(self, texts: Sequence[str], max_length: int, layer: int, batch_size: int, desc: str):
        """Yield ``(indices, hidden states of layer, mask)`` over length-sorted batches."""
        ids, mask = self.tokenize(texts, max_length)
        lengths = mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        bar = progress_bar(len(texts), desc)
        try:
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                width = max(1, int(lengths[idx].max()))
                b_ids, b_mask = ids[idx, :width].to(self.device), mask[idx, :width].to(self.device)
                kwargs: dict[str, Any] = {"input_ids": b_ids, "attention_mask": b_mask}
                if int(getattr(self.model.config, "type_vocab_size", 0) or 0) > 0:
                    kwargs["token_type_ids"] = torch.zeros_like(b_ids)
                out = self.model(**kwargs, output_hidden_states=True)
                yield idx, out.hidden_states[layer].float(), b_mask
                bar.update(len(idx))
        finally:
            bar.close()

    def pooled(
        self, texts: Sequence[str], *, max_length: int, layer: int, pooling: str, batch_size: int = 128
    ) -> np.ndarray:
        """``(N, H)`` float32 pooled outputs of hidden-state ``layer`` (absolute index)."""
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for idx, hidden, mask in self._batches(texts, max_length, layer, batch_size, "features"):
            out[idx.numpy()] = pool(hidden, mask, pooling).cpu().numpy()
        return out

    def hidden(
        self, texts: Sequence[str], *, max_length: int, layer: int, batch_size: int = 128
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(hidden, lengths)``: every real token's state at ``layer``, examples back to back in
        input order (``(sum of lengths, H)`` float32), and each example's token count."""
        ids_lengths = self.tokenize(texts, max_length)[1].sum(dim=1).numpy().astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(ids_lengths)])
        flat = np.zeros((int(offsets[-1]), self.model.config.hidden_size), dtype=np.float32)
        for idx, hidden, _mask in self._batches(texts, max_length, layer, batch_size, "hidden states"):
            h = hidden.cpu().numpy()
            for row, i in enumerate(idx.tolist()):
                n = int(ids_lengths[i])
                flat[offsets[i] : offsets[i] + n] = h[row, :n]
        return flat, ids_lengths

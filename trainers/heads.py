"""Trainable modules that read frozen activations: a classifier head, and top encoder layers.

* :class:`FeatureHead` -- ``normalise -> subtract the public centre -> normalise -> Linear``
  on pooled features (:class:`~trainers.config.FeatureSettings`). Only the ``Linear`` is
  trained; the centre is a buffer computed from public reference text.
* :class:`TopLayers` -- the top ``k`` layers of a BERT-style encoder (copied from the
  pretrained model; LoRA-adapted or fully trainable) on cached hidden states, then pooling and
  a :class:`FeatureHead`.

Both are plain ``nn.Module`` s, so Opacus computes per-example gradients of their trainable
parameters exactly as for a whole model, and the optimizer clips and noises them the same way.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from noise_search.errors import ParameterError
from trainers.frozen import pool


class FeatureHead(nn.Module):
    """A linear classifier on transformed pooled features.

    With two labels the head is logistic regression: one output ``z`` and logits ``(0, z)``
    (softmax of those is the sigmoid). A two-output layer would carry the same decision
    ``w_1 - w_0`` in twice the coordinates; under L1 clipping each example's gradient is then
    split over both rows and the noise on the difference of two independent draws is sqrt(2)
    times larger, while under L2 clipping nothing changes. So the binary head costs nothing and
    helps the L1 mechanisms.

    Args:
        hidden_size: feature dimension ``H``.
        num_labels: output classes (>= 2).
        normalize: L2-normalise each feature vector (before and after centring).
        center: ``(H,)`` public mean feature to subtract, or None.
        init_std: the classifier's weight init std (the model's ``initializer_range``); bias 0.
    """

    def __init__(
        self, hidden_size: int, num_labels: int, *, normalize: bool, center: torch.Tensor | None, init_std: float
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.num_labels = num_labels
        self.register_buffer("center", None if center is None else center.detach().float().clone())
        self.classifier = nn.Linear(hidden_size, 1 if num_labels == 2 else num_labels)
        nn.init.normal_(self.classifier.weight, std=init_std)
        nn.init.zeros_(self.classifier.bias)

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        x = features.float()
        if self.normalize:
            x = nn.functional.normalize(x, dim=-1)
        if self.center is not None:
            x = x - self.center
            if self.normalize:
                x = nn.functional.normalize(x, dim=-1)
        return x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.classifier(self.transform(features).to(self.classifier.weight.dtype))
        if self.num_labels == 2:
            return torch.cat([torch.zeros_like(z), z], dim=-1)
        return z


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The layer list of a BERT-style encoder (``model.encoder.layer``)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ParameterError("model.top_layers", f"supported for BERT-style encoders (bert, roberta, ...), not {kind}")
    return layers


class TopLayers(nn.Module):
    """Encoder layers ``first .. last`` (copies) applied to cached hidden states, then the head."""

    def __init__(self, layers: list[nn.Module], config: Any, pooling: str, head: FeatureHead) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for layer in layers)
        self.config = config
        self.pooling = pooling
        self.head = head

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        hidden = hidden.to(next(self.layers.parameters()).dtype)
        attn = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.layers:
            out = layer(hidden, attn)
            hidden = out[0] if isinstance(out, tuple) else out
        return self.head(pool(hidden, mask, self.pooling))


def add_lora(module: TopLayers, *, rank: int, alpha: float, dropout: float, targets: list[str]) -> nn.Module:
    """LoRA adapters on ``targets`` inside the top layers; the classifier stays trainable."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in module.layers.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ParameterError("model.lora.target_modules", f"{missing} not found in the top layers")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
    )
    wrapped = get_peft_model(module, config)
    for p in module.head.parameters():
        p.requires_grad_(True)
    return wrapped

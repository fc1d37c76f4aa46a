"""Tokenised tensors and the per-task training loss.

Texts are tokenised once, padded to ``max_length`` (right padding), and stored as a
``TensorDataset``; each batch is trimmed to its longest example before the forward pass.
Losses are means over the batch of **per-example** losses, which is what Opacus's
``loss_reduction="mean"`` assumes (it multiplies back by the batch size to get each
example's gradient). For the causal LM an example's loss is its mean token loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from trainers.data import Split
from trainers.models import model_inputs


def encode(split: Split, tokenizer: Any, *, max_length: int, task: str) -> TensorDataset:
    """``(input_ids, attention_mask[, labels])`` for ``split``."""
    enc = tokenizer(
        list(split.texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    ids = enc["input_ids"].long()
    mask = enc["attention_mask"].long()
    if task == "classification":
        if split.labels is None:
            raise ValueError("a classification split needs labels")
        return TensorDataset(ids, mask, torch.tensor(split.labels, dtype=torch.long))
    return TensorDataset(ids, mask)


def trim(batch: list[torch.Tensor] | tuple[torch.Tensor, ...], device: torch.device) -> list[torch.Tensor]:
    """Move to ``device`` and cut the padding columns no example of the batch uses."""
    ids, mask = batch[0], batch[1]
    length = max(1, int(mask.sum(dim=1).max())) if len(ids) else 1
    out = [ids[:, :length].to(device), mask[:, :length].to(device)]
    out.extend(t.to(device) for t in batch[2:])
    return out


def classification_logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model(**model_inputs(model, ids, mask)).logits.float()


def lm_token_losses(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token losses ``(B, T-1)`` and their mask (1 where the target is a real token)."""
    kwargs = model_inputs(model, ids, mask)
    kwargs["use_cache"] = False
    logits = model(**kwargs).logits.float()
    targets = ids[:, 1:]
    tmask = mask[:, 1:].to(logits.dtype)
    losses = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(tmask)
    return losses * tmask, tmask


def training_loss(model: torch.nn.Module, batch: list[torch.Tensor], task: str) -> torch.Tensor:
    """Mean over the batch of per-example losses."""
    if task == "classification":
        ids, mask, labels = batch
        return F.cross_entropy(classification_logits(model, ids, mask), labels)
    ids, mask = batch[0], batch[1]
    losses, tmask = lm_token_losses(model, ids, mask)
    per_example = losses.sum(dim=1) / tmask.sum(dim=1).clamp(min=1.0)
    return per_example.mean()

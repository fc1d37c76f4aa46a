"""What a model is fed, per split: token ids, cached pooled features, or cached hidden states.

Every kind answers the same four questions for the training loop and the evaluation:

* ``len(inputs)`` and ``lengths`` (token counts, to group examples of similar length into one
  forward pass, or None when every example has the same size);
* :meth:`ModelInputs.batch` -- the tensors of the examples ``idx`` on a device (token batches
  are trimmed to their longest example, hidden-state batches padded to it);
* :meth:`ModelInputs.loss` -- the mean over the batch of per-example losses (what Opacus's
  ``loss_reduction="mean"`` assumes);
* :meth:`ModelInputs.logits` -- classification logits (evaluation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.batches import classification_logits, lm_token_losses, training_loss, trim


class ModelInputs(ABC):
    """One split's inputs and labels."""

    labels: torch.Tensor | None

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    def lengths(self) -> torch.Tensor | None:
        """Per-example token counts, or None when all examples cost the same."""
        return None

    @abstractmethod
    def batch(self, idx: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        """The examples ``idx`` (1-D long tensor), last tensor the labels when labelled."""

    @abstractmethod
    def logits(self, model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor: ...

    def loss(self, model: nn.Module, batch: list[torch.Tensor], task: str) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch), batch[-1])

    def chunks(self, idx: torch.Tensor, size: int | None) -> list[torch.Tensor]:
        """``idx`` split into passes of at most ``size`` examples (similar lengths together)."""
        if size is None or len(idx) <= size:
            return [idx]
        lengths = self.lengths
        if lengths is not None:
            idx = idx[torch.argsort(lengths[idx], stable=True)]
        return list(torch.split(idx, size))


class TokenInputs(ModelInputs):
    """Token ids and attention masks padded to ``max_length`` (the whole model is trained)."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def batch(self, idx: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        parts = [self.ids[idx], self.mask[idx]]
        if self.labels is not None:
            parts.append(self.labels[idx])
        return trim(parts, device)

    def logits(self, model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        return classification_logits(model, batch[0], batch[1])

    def loss(self, model: nn.Module, batch: list[torch.Tensor], task: str) -> torch.Tensor:
        return training_loss(model, batch, task)

    def lm_losses(self, model: nn.Module, batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return lm_token_losses(model, batch[0], batch[1])


class FeatureInputs(ModelInputs):
    """Pooled features ``(N, H)`` of a frozen encoder (a head-only trial)."""

    def __init__(self, features: np.ndarray | torch.Tensor, labels: Sequence[int] | torch.Tensor) -> None:
        self.features = torch.as_tensor(np.asarray(features, dtype=np.float32))
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, idx: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        return [self.features[idx].to(device), self.labels[idx].to(device)]

    def logits(self, model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        return model(batch[0]).float()


class HiddenInputs(ModelInputs):
    """Cached hidden states entering the top layers: every real token's ``(H,)`` state,
    examples back to back (``flat``), with each example's token count."""

    def __init__(self, flat: np.ndarray, lengths: np.ndarray, labels: Sequence[int] | torch.Tensor) -> None:
        self.flat = torch.as_tensor(np.asarray(flat, dtype=np.float32))
        self._lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64))
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(self._lengths, 0)])
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def lengths(self) -> torch.Tensor:
        return self._lengths

    def batch(self, idx: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        lengths = self._lengths[idx]
        width = max(1, int(lengths.max())) if len(idx) else 1
        steps = torch.arange(width)
        mask = (steps.unsqueeze(0) < lengths.unsqueeze(1)).long()
        rows = (self.offsets[idx].unsqueeze(1) + steps.unsqueeze(0)).clamp(max=max(len(self.flat) - 1, 0))
        hidden = self.flat[rows] * mask.unsqueeze(-1)
        return [hidden.to(device), mask.to(device), self.labels[idx].to(device)]

    def logits(self, model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        return model(batch[0], batch[1]).float()

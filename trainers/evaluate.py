"""Evaluation on the validation and test splits.

* classification: ``accuracy`` (fraction of correct argmax predictions, in [0, 1]) and
  ``loss`` (mean cross-entropy, nats);
* causal LM: ``perplexity = exp(total next-token loss / number of target tokens)`` (>= 1)
  and ``loss`` (mean next-token loss, nats).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from trainers.batches import classification_logits, lm_token_losses, trim


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, dataset: TensorDataset, *, task: str, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Metrics of ``model`` on ``dataset`` (``{"accuracy", "loss"}`` or ``{"perplexity", "loss"}``)."""
    was_training = model.training
    model.eval()
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        if task == "classification":
            correct, total, loss_sum = 0, 0, 0.0
            for batch in loader:
                ids, mask, labels = trim(batch, device)
                logits = classification_logits(model, ids, mask)
                loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(dim=-1) == labels).sum())
                total += len(labels)
            return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}
        nll, tokens = 0.0, 0.0
        for batch in loader:
            ids, mask = trim(batch, device)
            losses, tmask = lm_token_losses(model, ids, mask)
            nll += float(losses.sum())
            tokens += float(tmask.sum())
        mean = nll / max(tokens, 1.0)
        return {"perplexity": math.exp(min(mean, 700.0)), "loss": mean}
    finally:
        model.train(was_training)

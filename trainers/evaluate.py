"""Evaluation on the validation and test splits.

* classification: ``accuracy`` (fraction of correct argmax predictions, in [0, 1]) and
  ``loss`` (mean cross-entropy, nats);
* causal LM: ``perplexity = exp(total next-token loss / number of target tokens)`` (>= 1)
  and ``loss`` (mean next-token loss, nats).

Examples are evaluated in batches of similar length (the order does not change the metrics).
"""

from __future__ import annotations

import math

import torch

from trainers.inputs import ModelInputs, TokenInputs


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, inputs: ModelInputs, *, task: str, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Metrics of ``model`` on ``inputs`` (``{"accuracy", "loss"}`` or ``{"perplexity", "loss"}``)."""
    was_training = model.training
    model.eval()
    try:
        n = len(inputs)
        order = torch.arange(n) if inputs.lengths is None else torch.argsort(inputs.lengths, stable=True)
        chunks = torch.split(order, batch_size)
        if task == "classification":
            correct, loss_sum = 0, 0.0
            for idx in chunks:
                batch = inputs.batch(idx, device)
                logits = inputs.logits(model, batch)
                labels = batch[-1]
                loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(dim=-1) == labels).sum())
            return {"accuracy": correct / max(n, 1), "loss": loss_sum / max(n, 1)}
        if not isinstance(inputs, TokenInputs):
            raise TypeError("a causal LM is evaluated on token inputs")
        nll, tokens = 0.0, 0.0
        for idx in chunks:
            losses, tmask = inputs.lm_losses(model, inputs.batch(idx, device))
            nll += float(losses.sum())
            tokens += float(tmask.sum())
        mean = nll / max(tokens, 1.0)
        return {"perplexity": math.exp(min(mean, 700.0)), "loss": mean}
    finally:
        model.train(was_training)

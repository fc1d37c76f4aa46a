"""What a trial reports: :class:`StepRecord` after every step, :class:`TrainResult` at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from noise_search.mechanisms import Mechanism
from trainers.audit_canaries import TrialAuditResult
from trainers.budget import NoisePlan
from trainers.config import TrialConfig


@dataclass(frozen=True)
class StepRecord:
    """What :func:`train` reports after each step."""

    step: int  #: steps done so far (1-based)
    loss: float | None  #: mean per-example loss of the batch; None for an empty batch
    epsilon: float | None  #: epsilon spent after this step; None for a non-private run
    batch_size: int  #: examples in this step's Poisson batch (all ranks)


StepCallback = Callable[[StepRecord], None]


@dataclass
class TrainResult:
    """The outcome of one trial."""

    config: TrialConfig
    mechanism: Mechanism | None
    noise_source: str | None
    privacy_plan: NoisePlan | None
    epsilon: float | None
    order: float | None
    steps: int
    planned_steps: int
    sample_rate: float
    stopped_early: bool
    stop_reason: str | None
    metrics: dict[str, float]
    dataset: dict[str, Any]
    model: dict[str, Any]
    history: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0
    #: with ``train(..., keep_update=True)``: final minus initial value of every trainable
    #: parameter (CPU float32), in optimizer order -- the order ``extra_contributions`` uses
    parameter_update: list[torch.Tensor] | None = field(default=None, repr=False)
    #: with ``config.audit`` (rank 0): the trial-level audit's scores, bits and bound
    audit: TrialAuditResult | None = field(default=None, repr=False)
    #: feature-cache use of a head / top-layers trial (``hits``, ``builds``, ``root``)
    cache: dict[str, Any] = field(default_factory=dict)
    #: steps restored from a checkpoint (0: the run started at step 0; see trainers.checkpoint)
    resumed_from: int = 0
    #: early stopping (a :class:`trainers.loop_hooks.RungHook` said stop): the last epoch trained; the
    #: metrics are then that epoch's validation scores only, and ``epsilon`` the whole plan's
    pruned_at_epoch: int | None = None
    #: the trained model and what it reads (a :class:`trainers.trainable.Trainable`; rank 0 and
    #: single-process runs), for :mod:`trainers.saved_model`
    trained: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """The ``lmo-dp train --json`` object (``mlflow_run_id`` is filled by the CLI)."""
        p = self.config.privacy
        t = self.config.training
        recipe = self.config.recipe
        return {
            "mechanism": p.mechanism,
            "epsilon_target": p.epsilon if self.mechanism is not None else None,
            "epsilon": self.epsilon,
            "delta": p.delta if self.mechanism is not None else None,
            "steps": self.steps,
            "sample_rate": self.sample_rate,
            "metrics": dict(self.metrics),
            "mlflow_run_id": None,
            "planned_steps": self.planned_steps,
            "planned_epsilon": None if self.privacy_plan is None else self.privacy_plan.planned.epsilon,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "accountant": p.accountant if self.mechanism is not None else None,
            "order": self.order,
            "clip": p.clip,
            "noise": None if self.mechanism is None else self.mechanism.to_dict(),
            "noise_source": self.noise_source,
            "dataset": self.dataset,
            "model": self.model,
            "seed": self.config.training.seed,
            "seconds": self.seconds,
            "trainable": self.config.model.trainable_kind,
            "training": {
                "learning_rate": t.learning_rate,
                "batch_size": t.batch_size,
                "epochs": t.epochs,
                "optimizer": t.optimizer,
                "physical_batch_size": t.physical_batch_size,
            },
            "recipe": None if recipe is None else recipe.to_dict(),
            "feature_cache": dict(self.cache) or None,
            "resumed_from_step": self.resumed_from,
            "pruned_at_epoch": self.pruned_at_epoch,
        }

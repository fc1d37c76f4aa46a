"""What every trial of one sweep shares: :class:`SweepContext`.

The driver builds it once per sweep; it travels to the Tune trials in their ``param_space`` as a
plain dict (:meth:`SweepContext.to_dict`, the Tune edge) and is read back there with
:meth:`SweepContext.from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from orchestrator.sweep_config import SweepConfig


@dataclass(frozen=True)
class SweepContext:
    """The sweep a trial belongs to and where it writes."""

    experiment: str  #: the MLflow experiment of the sweep
    parent_run_id: str  #: the sweep's parent MLflow run
    tracking_uri: str  #: the MLflow tracking URI the trials log to
    sweep: SweepConfig
    train_storage: str  #: folder of the data-parallel trials' Ray Train runs
    run_dir: str  #: the sweep's run folder (manifest, checkpoints)
    n_train: int  #: training examples of every trial (from the sweep's plan)
    #: trial key -> checkpoint folder of an earlier attempt (a resumed sweep); empty otherwise
    checkpoints: dict[str, str] | None = None

    def with_checkpoints(self, checkpoints: dict[str, str]) -> SweepContext:
        return replace(self, checkpoints=dict(checkpoints))

    def checkpoint_of(self, key: str) -> str | None:
        """The earlier attempt's checkpoint folder of trial ``key``, if there is one."""
        return (self.checkpoints or {}).get(key)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sweep": self.sweep.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepContext:
        return cls(**{**data, "sweep": SweepConfig.from_dict(data["sweep"])})

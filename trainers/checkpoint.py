"""Trial checkpoints that carry the privacy state, and resuming from them.

A checkpoint is one file, ``<directory>/checkpoint.pt`` (:data:`CHECKPOINT_FILE`), taken
between two steps of a single-process trial. It holds everything the loop of
:func:`trainers.loop.run_steps` needs to go on as if it had never stopped
(:class:`TrialState`):

* the trainable parameters and the base optimizer's ``state_dict`` (Adam moments, step counts);
* the steps done and their :class:`~trainers.results.StepRecord` history;
* the budget guard's state (:class:`~trainers.budget.BudgetState`: noisy step events composed,
  epsilon spent). On restore that many step events are composed into a fresh accountant and
  the epsilon it gives must equal the saved one, so no step is counted twice or skipped;
* the Poisson sampler's generator state (the sampler draws one ``torch.rand`` per step, lazily,
  so the state after ``k`` steps continues with step ``k + 1``), the noise generator's state,
  and the global torch RNG state (dropout; also the CUDA one on a GPU);
* the trial's identity (:func:`trial_identity`): the resolved config (without
  ``training.checkpoint_every``, ``name`` and ``experiment``), the data's SHA-256, the step plan,
  the noise and the device. A checkpoint of another identity is refused, naming the first
  field that differs.

Writes are atomic (a temporary file in the same folder, fsync, ``os.replace``): a reader sees
the previous checkpoint or the new one, never a torn file, even after ``kill -9``. Files are
read with ``torch.load(weights_only=True)``: a checkpoint is data, never code.

:class:`Checkpointing` says where and how often; :meth:`Checkpointing.open` checks a folder
against the trial's identity and returns the :class:`CheckpointSession` the loop saves through.
:func:`termination_watch` turns SIGTERM into a request the loop honours after the current step
(save, then :class:`TrainingInterrupted`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from noise_search.errors import InputError, LmoDpError, ParameterError, one_line
from noise_search.mechanisms import Mechanism
from trainers.budget import BudgetState, StepPlan
from trainers.config import TrialConfig
from trainers.results import StepRecord

CHECKPOINT_FILE = "checkpoint.pt"
#: version of the file layout; a file of another version is refused (delete it to start over)
FORMAT_VERSION = 1
#: config keys that cannot change what a trial computes, left out of its identity
NOT_IDENTITY: tuple[str, ...] = ("training.checkpoint_every", "training.save_model", "name", "experiment")


class TrainingInterrupted(LmoDpError):
    """Training stopped on SIGTERM after saving a checkpoint; rerun the trial to resume."""

    def __init__(self, path: Path, steps: int, planned_steps: int) -> None:
        self.path, self.steps, self.planned_steps = path, steps, planned_steps
        super().__init__(
            f"training interrupted by SIGTERM after step {steps} of {planned_steps}; checkpoint saved to {path}. "
            f"To resume, run the same trial with the same checkpoint folder "
            f"(lmo-dp train --config FILE --checkpoint-dir {path.parent})"
        )


def trial_identity(
    config: TrialConfig, *, dataset_sha256: str, plan: StepPlan, mechanism: Mechanism | None, device: torch.device
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: ``section.key -> value`` (JSON values).

    ``config`` is the *resolved* config (recipe values filled in). Keys: the flattened config
    minus :data:`NOT_IDENTITY`, ``data.sha256``, ``plan.sample_rate``, ``plan.steps``,
    ``noise.*`` (the run's mechanism: a calibration or a search-result file could change under
    an unchanged config) and ``run.device`` (the resolved device; generator states are device
    specific).
    """
    out = {k: v for k, v in config.flat().items() if k not in NOT_IDENTITY}
    out["data.sha256"] = dataset_sha256
    out["plan.sample_rate"] = plan.sample_rate
    out["plan.steps"] = plan.steps
    if mechanism is not None:
        out.update({f"noise.{k}": v for k, v in mechanism.to_dict().items()})
    out["run.device"] = str(device)
    return _canonical(out)


def check_checkpointable(config: TrialConfig, checkpoints: Checkpointing, *, distributed: bool = False) -> None:
    """Refuse, before any work, the set-ups checkpoints do not cover: a trial-level canary audit
    (``config.audit``: the canaries' running sums are not saved) and a ``torch.distributed``
    (data-parallel) trial (one process's state is not the group's)."""
    if config.audit is not None:
        raise ParameterError(
            "audit",
            "the trial-level canary audit cannot be checkpointed (the canaries' state is not saved): "
            f"remove the audit section or train without {checkpoints.field}",
        )
    if distributed:
        raise ParameterError(
            checkpoints.field,
            "checkpoints cover single-process trials only, not torch.distributed (data-parallel) ones",
        )


def _canonical(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The identity as JSON gives it back (tuples as lists), so saved and current compare equal."""
    return json.loads(json.dumps(dict(identity), sort_keys=True, allow_nan=False))


def fingerprint(identity: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of an identity's canonical JSON."""
    text = json.dumps(_canonical(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class TrialState:
    """A single-process trial between two steps (everything CPU tensors).

    Units: ``steps`` and ``planned_steps`` count optimizer steps (one Poisson batch each);
    ``noise_steps`` counts noisy releases made by the DP optimizer (equal to ``steps`` for a
    private run, 0 without privacy); generator states are the opaque byte tensors of
    ``torch.Generator.get_state``.
    """

    identity: dict[str, Any]  #: :func:`trial_identity` of the run that saved it
    steps: int  #: steps done, in [0, planned_steps]
    planned_steps: int  #: the plan's T
    finished: bool  #: the loop is over (T steps, or stopped by the budget guard): evaluate only
    stop_reason: str | None  #: why the budget guard stopped the loop early (None: it did not)
    history: list[StepRecord]  #: one record per step done
    parameters: list[torch.Tensor]  #: trainable parameters in optimizer order
    optimizer: dict[str, Any]  #: the base optimizer's ``state_dict`` (Adam moments, ...)
    sample_rng: torch.Tensor  #: the Poisson sampler's generator, after ``steps`` draws
    torch_rng: torch.Tensor  #: the global torch CPU RNG (dropout)
    noise_rng: torch.Tensor | None = None  #: the noise generator (None without privacy)
    cuda_rng: torch.Tensor | None = None  #: the global RNG of the run's CUDA device (None on CPU)
    budget: BudgetState | None = None  #: the budget guard (None without privacy)
    noise_steps: int = 0  #: noisy releases made (the ``extra_contributions`` step index)

    def to_payload(self) -> dict[str, Any]:
        """A plain dict of tensors and JSON-like values (what ``torch.save`` writes)."""
        return {
            "format": FORMAT_VERSION,
            "identity": json.dumps(self.identity, sort_keys=True),
            "fingerprint": fingerprint(self.identity),
            "steps": self.steps,
            "planned_steps": self.planned_steps,
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "history": [[r.step, r.loss, r.epsilon, r.batch_size] for r in self.history],
            "parameters": list(self.parameters),
            "optimizer": self.optimizer,
            "sample_rng": self.sample_rng,
            "torch_rng": self.torch_rng,
            "noise_rng": self.noise_rng,
            "cuda_rng": self.cuda_rng,
            "budget": None if self.budget is None else [self.budget.steps, self.budget.epsilon],
            "noise_steps": self.noise_steps,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TrialState:
        """The inverse of :meth:`to_payload`; raises ``KeyError``/``TypeError``/``ValueError`` on a damaged one."""
        if payload["format"] != FORMAT_VERSION:
            raise ValueError(f"format {payload['format']!r}, this version reads {FORMAT_VERSION}")
        identity = json.loads(payload["identity"])
        if fingerprint(identity) != payload["fingerprint"]:
            raise ValueError("its identity does not match its fingerprint")
        budget = payload["budget"]
        state = cls(
            identity=identity,
            steps=int(payload["steps"]),
            planned_steps=int(payload["planned_steps"]),
            finished=bool(payload["finished"]),
            stop_reason=payload["stop_reason"],
            history=[StepRecord(int(s), loss, eps, int(b)) for s, loss, eps, b in payload["history"]],
            parameters=list(payload["parameters"]),
            optimizer=payload["optimizer"],
            sample_rng=payload["sample_rng"],
            torch_rng=payload["torch_rng"],
            noise_rng=payload["noise_rng"],
            cuda_rng=payload["cuda_rng"],
            budget=None if budget is None else BudgetState(int(budget[0]), float(budget[1])),
            noise_steps=int(payload["noise_steps"]),
        )
        if not 0 <= state.steps <= state.planned_steps or len(state.history) != state.steps:
            raise ValueError(f"{state.steps} steps of {state.planned_steps} with {len(state.history)} records")
        return state


@dataclass(frozen=True)
class Checkpointing:
    """Where a trial keeps its checkpoint and how often it saves one.

    ``directory`` holds one file, :data:`CHECKPOINT_FILE` (created on the first save, with its
    parents). ``every``: steps between checkpoints (>= 1); None saves only on SIGTERM. A
    checkpoint is also saved when the loop ends (all steps, or a budget stop), so a rerun of a
    trial whose training finished goes straight to evaluation. ``on_save(directory, steps)``
    is called after each successful save (``steps`` = steps done); ``on_resume(path, state)``
    once a checkpoint has been found to match the trial, before anything is restored.
    ``field`` names the folder in errors (a CLI flag or a config key).
    """

    directory: Path
    every: int | None = None
    on_save: Callable[[Path, int], None] | None = None
    on_resume: Callable[[Path, TrialState], None] | None = None
    field: str = "--checkpoint-dir"

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory).expanduser())
        if self.every is not None and (isinstance(self.every, bool) or int(self.every) != self.every or self.every < 1):
            raise ParameterError("training.checkpoint_every", f"must be an integer >= 1 or null, got {self.every!r}")

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.directory / CHECKPOINT_FILE

    def due(self, step: int) -> bool:
        """Whether a periodic checkpoint is due after step ``step`` (1-based)."""
        return self.every is not None and step % self.every == 0

    def load(self, identity: Mapping[str, Any] | None = None) -> TrialState | None:
        """The saved state (None when there is no checkpoint yet).

        With ``identity``, a checkpoint of another trial raises a
        :class:`~noise_search.errors.ParameterError` naming :attr:`field` and the first key
        that differs. An unreadable or damaged file raises an
        :class:`~noise_search.errors.InputError`.
        """
        path = self.path
        if not path.exists():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            state = TrialState.from_payload(payload)
        except Exception as exc:  # torch.load, pickle and our own checks fail in many ways
            raise InputError(
                f"{self.field}: {path} is not a usable lmo-dp trial checkpoint ({one_line(exc)}); "
                "delete it to start the trial over"
            ) from exc
        if identity is not None:
            self._check_identity(state.identity, _canonical(identity))
        return state

    def _check_identity(self, saved: dict[str, Any], current: dict[str, Any]) -> None:
        if saved == current:
            return
        missing = object()
        differing = sorted(k for k in saved.keys() | current.keys() if saved.get(k, missing) != current.get(k, missing))
        key = differing[0]
        was, now = saved.get(key, "unset"), current.get(key, "unset")
        raise ParameterError(
            self.field,
            f"holds a checkpoint of a different trial config ({key}: {was!r} in the checkpoint, {now!r} now"
            f"{f'; {len(differing) - 1} more' if len(differing) > 1 else ''}); "
            f"use another folder, or delete {self.path} to start over",
        )

    def open(self, identity: Mapping[str, Any]) -> CheckpointSession:
        """This trial's session: the checkpoint to resume from (checked against ``identity``), if any.

        Temporary files left by a save that was killed half-way are removed (the folder
        belongs to one trial at a time).
        """
        canonical = _canonical(identity)
        if self.directory.is_dir():
            for stale in self.directory.glob(f".{CHECKPOINT_FILE}.*.tmp"):
                stale.unlink(missing_ok=True)
        state = self.load(canonical)
        if state is not None and self.on_resume is not None:
            self.on_resume(self.path, state)
        return CheckpointSession(self, canonical, state)

    def save(self, state: TrialState) -> Path:
        """Write ``state`` atomically to :attr:`path`, then call ``on_save``; returns the path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{CHECKPOINT_FILE}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state.to_payload(), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_folder(self.directory)
        if self.on_save is not None:
            self.on_save(self.directory, state.steps)
        return self.path


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (best effort: some file systems cannot open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class CheckpointSession:
    """One trial's checkpointing: the settings, its identity and the state it resumes from."""

    checkpointing: Checkpointing
    identity: dict[str, Any]
    resume: TrialState | None = None

    @property
    def resumed_steps(self) -> int:
        """Steps restored from the checkpoint (0 when the trial starts from scratch)."""
        return 0 if self.resume is None else self.resume.steps

    def save(self, state: TrialState) -> Path:
        """Save ``state`` under this trial's identity."""
        return self.checkpointing.save(dataclasses.replace(state, identity=self.identity))


@dataclass
class TerminationRequest:
    """Set when SIGTERM arrived while :func:`termination_watch` was active."""

    requested: bool = False
    installed: bool = field(default=False, repr=False)


@contextlib.contextmanager
def termination_watch(enabled: bool = True) -> Iterator[TerminationRequest]:
    """While active (and in the main thread), SIGTERM only sets ``requested``; the previous
    handler is restored on exit. Elsewhere (a worker thread, ``enabled`` false) nothing is
    installed and ``requested`` stays false."""
    request = TerminationRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return

    def _handler(_signum: int, _frame: Any) -> None:
        request.requested = True

    previous = signal.signal(signal.SIGTERM, _handler)
    request.installed = True
    try:
        yield request
    finally:
        # None: the previous handler was not set from Python; the default is the closest
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

"""What a resumed sweep finds already done, without Tune's saved state.

``lmo-dp sweep --resume`` never needs Ray Tune's own state files (a full disk or a killed driver
can leave them cut short). What is finished is read back from MLflow: every FINISHED child run of
the sweep's parent run, by its trial key (:data:`~orchestrator.tracking.TRIAL_KEY_TAG`). Those
trials are reported from their runs and not trained again; the rest go to a fresh Tune run.

Tune's files are still used where they help and can be read: a trial that was cut short with
``training.checkpoint_every`` restarts from the newest checkpoint an earlier attempt of the same
key left in the run folder (:func:`earlier_checkpoints`); one that cannot be read is skipped and
the trial starts over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.sweep.outcomes import TrialOutcome
from orchestrator.sweep.specs import TrialSpec
from orchestrator.tracking import PARENT_TAG, TRIAL_KEY_TAG, TRIAL_TAG, Tracker

#: the file a trial checkpoint folder holds (:mod:`trainers.checkpoint`)
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class Done:
    """A trial found finished in MLflow."""

    spec: TrialSpec
    outcome: TrialOutcome
    trial_id: str | None


def finished_runs(tracker: Tracker, experiment: str, parent_run_id: str) -> dict[str, Any]:
    """The FINISHED child runs of ``parent_run_id`` by trial key (the oldest of a key wins: it is
    the one every later attempt found and reported)."""
    out: dict[str, Any] = {}
    for run in tracker.find_runs(experiment, {PARENT_TAG: parent_run_id}, newest_first=False):
        key = run.data.tags.get(TRIAL_KEY_TAG)
        if key and run.info.status == "FINISHED" and key not in out:
            out[key] = run
    return out


def finished_trials(tracker: Tracker, experiment: str, parent_run_id: str, specs: list[TrialSpec]) -> list[Done]:
    """The trials of ``specs`` that a FINISHED run under the parent already holds."""
    runs = finished_runs(tracker, experiment, parent_run_id)
    return [
        Done(spec, TrialOutcome.from_run(runs[spec.key]), runs[spec.key].data.tags.get(TRIAL_TAG))
        for spec in specs
        if spec.key in runs
    ]


def earlier_checkpoints(run_dir: str, keys: set[str]) -> dict[str, str]:
    """For each trial key of ``keys``, the newest checkpoint folder (relative to ``run_dir``) that an
    earlier Tune run of this sweep saved for it, if any.

    Trial folders are named ``<Tune trial id>_<trial key>`` (the sweep's ``trial_dirname_creator``),
    Tune's trial ids ``<5 hex>_<5 digits>``; checkpoint folders ``checkpoint_<n>``. Newest by the
    modification time of their checkpoint file. Anything unreadable is skipped.
    """
    import pyarrow.fs as pafs

    from orchestrator.sweep.storage import _fs_and_path

    try:
        fs, base = _fs_and_path(run_dir)
        base = base.rstrip("/")
        trial_dirs = [
            info
            for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
            if info.type == pafs.FileType.Directory and info.base_name.count("_") >= 2
        ]
    except OSError:
        return {}
    newest: dict[str, tuple[float, str]] = {}
    for trial_dir in trial_dirs:
        key = trial_dir.base_name.split("_", 2)[2]
        if key not in keys:
            continue
        try:
            entries = fs.get_file_info(pafs.FileSelector(trial_dir.path, allow_not_found=True))
            for entry in entries:
                if entry.type != pafs.FileType.Directory or not entry.base_name.startswith("checkpoint_"):
                    continue
                file = fs.get_file_info(f"{entry.path}/{CHECKPOINT_FILE}")
                if file.type != pafs.FileType.File or not file.size:
                    continue
                stamp = file.mtime.timestamp() if file.mtime is not None else 0.0
                if key not in newest or stamp > newest[key][0]:
                    newest[key] = (stamp, entry.path[len(base) + 1 :])
        except OSError:
            continue
    return {key: rel for key, (_, rel) in newest.items()}


def close_abandoned_runs(tracker: Tracker, experiment: str, parent: Any) -> int | None:
    """Close a sweep whose driver is gone but whose runs still show RUNNING (it could not close them:
    the tracking store was full or did not answer when it failed).

    Only when the parent run is RUNNING, names its run folder (tag ``lmodp.run_dir``), that folder
    can be reached from here and no sweep holds its lock (:mod:`~orchestrator.sweep.lock`; the
    lock is held meanwhile, so a sweep starting now waits its turn): every RUNNING child run and
    the parent end FAILED. Returns how many runs were closed, None when the sweep was left alone.
    """
    from orchestrator.sweep import lock
    from orchestrator.sweep.trial import RUN_DIR_TAG

    run_dir = parent.data.tags.get(RUN_DIR_TAG)
    if parent.info.status != "RUNNING" or not run_dir:
        return None
    if "://" not in run_dir and not Path(run_dir).is_dir():
        return None  # another machine's folder: whether its sweep runs cannot be told from here
    try:
        held = lock.acquire(run_dir)
    except lock.SweepLocked:
        return None  # under way
    try:
        closed = tracker.fail_open_children(experiment, parent.info.run_id)
        tracker.end_run(parent.info.run_id, "FAILED")
    finally:
        held.release()
    return closed + 1

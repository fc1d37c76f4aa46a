"""Sweeps: the noise search for every target epsilon, then a Ray Tune grid of DP trials.

* :mod:`~orchestrator.sweep.plan` -- what every private trial shares (``q``, ``T``), the
  majority-class baseline, the feature cache;
* :mod:`~orchestrator.sweep.specs` -- the grid as :class:`TrialSpec` s;
* :mod:`~orchestrator.sweep.tuning` -- private hyperparameter selection: the runs each
  (target, mechanism) draws and the noise that makes the selected run meet the target;
* :mod:`~orchestrator.sweep.trial` -- one trial, as a Tune trainable with its MLflow child run;
* :mod:`~orchestrator.sweep.outcomes` -- :class:`TrialOutcome`, one shape from trainer to report;
* :mod:`~orchestrator.sweep.sequential` -- seeds until decided: the looks, replayed from the
  recorded validation scores;
* :mod:`~orchestrator.sweep.storage` -- the run folder and the manifest (atomic state files);
* :mod:`~orchestrator.sweep.lock` -- one sweep at a time per run folder;
* :mod:`~orchestrator.sweep.resume` -- finished trials read back from MLflow by key, an earlier
  attempt's checkpoint, the runs of a driver that is gone closed;
* :mod:`~orchestrator.sweep.health` -- a full disk or a lost tracking server ends the sweep in one line;
* :mod:`~orchestrator.sweep.pipeline` -- :func:`run_sweep`, the whole pipeline.
"""

from orchestrator.quiet import stdout_to_stderr
from orchestrator.sweep.outcomes import TrialOutcome
from orchestrator.sweep.pipeline import SweepError, run_sweep
from orchestrator.sweep.plan import SharedPlan, majority_baseline, plan_sweep
from orchestrator.sweep.preflight import check_tracking_reachable
from orchestrator.sweep.specs import TrialSpec, trial_key, trial_specs

__all__ = [
    "SharedPlan",
    "SweepError",
    "TrialOutcome",
    "TrialSpec",
    "check_tracking_reachable",
    "majority_baseline",
    "plan_sweep",
    "run_sweep",
    "stdout_to_stderr",
    "trial_key",
    "trial_specs",
]

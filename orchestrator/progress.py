"""Progress on the terminal for the orchestrator: the project's one rule and bar
(:mod:`trainers.progress`), and a line per finished trial of a sweep."""

from __future__ import annotations

import sys
from typing import Any

from trainers.progress import progress_bar, show_progress

__all__ = ["progress_bar", "show_progress", "trial_progress_callback"]


def trial_progress_callback(total: int) -> Any:
    """A Ray Tune callback printing one stderr line per finished or failed trial."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        def __init__(self) -> None:
            self.done = 0

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            res = trial.last_result or {}
            acc = next((res[k] for k in ("metric/accuracy", "metric/perplexity") if k in res), None)
            eps = res.get("epsilon_spent")
            extra = "" if acc is None else f" headline {acc:.4g}"
            extra += "" if eps is None else f", epsilon {eps:.4g}"
            key = trial.config["spec"]["key"]
            print(f"[{self.done}/{total}] {key}: {res.get('lmodp_status', 'done')}{extra}", file=sys.stderr, flush=True)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            print(f"[{self.done}/{total}] {trial.config['spec']['key']}: error", file=sys.stderr, flush=True)

    return TrialProgress()

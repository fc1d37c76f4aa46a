"""Progress for the orchestrator: the project's one rule and bar (:mod:`trainers.progress`), and
one plain stderr line per finished, retried or failed trial of a sweep -- on a terminal and in a
log file alike."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from noise_search.errors import one_line
from trainers.progress import progress_bar, show_progress

__all__ = ["describe_trial_error", "progress_bar", "show_progress", "trial_progress_callback"]


def describe_trial_error(exc: BaseException | None) -> str:
    """A failed trial's error in a few words: a dead worker, or the trial's own exception."""
    if exc is None:
        return "failed"
    try:
        from ray.exceptions import RayActorError, RayTaskError
    except ImportError:  # pragma: no cover - ray is a dependency
        RayActorError = RayTaskError = ()  # type: ignore[assignment,misc]
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else exc
    if isinstance(exc, RayActorError):
        return "its worker process died"
    text = f"{type(exc).__name__}: {one_line(exc)}"
    return text if len(text) <= 200 else text[:197] + "..."


def _trial_error(trial: Any) -> BaseException | None:
    """The error Tune recorded for ``trial`` in the driver's local trial folder (None: none readable)."""
    path = getattr(trial, "pickled_error_file", None)
    if not path:
        return None
    try:
        import cloudpickle

        with open(path, "rb") as f:
            return cloudpickle.load(f)
    except Exception:
        return None


def trial_progress_callback(total: int, max_retries: int = 0, problem: Callable[[], str | None] | None = None) -> Any:
    """A Ray Tune callback printing one stderr line per finished, retried or failed trial.

    ``problem()`` (optional) is asked when a trial fails: a reason the whole sweep cannot go on
    (:func:`orchestrator.sweep.health.sweep_problem`). Once it gives one, the callback's
    :attr:`stop_reason` holds it, its stopper (:meth:`stopper`) ends the Tune run and no more
    trial lines are printed.
    """
    from ray.tune import Callback
    from ray.tune.stopper import Stopper

    class TrialProgress(Callback):
        def __init__(self) -> None:
            self.done = 0
            self.stop_reason: str | None = None

        def _line(self, text: str) -> None:
            if self.stop_reason is None:
                print(text, file=sys.stderr, flush=True)

        def _check(self) -> None:
            if problem is not None and self.stop_reason is None:
                self.stop_reason = problem()

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            res = trial.last_result or {}
            acc = next((res[k] for k in ("metric/accuracy", "metric/perplexity") if k in res), None)
            eps = res.get("epsilon_spent")
            extra = "" if acc is None else f" headline {acc:.4g}"
            extra += "" if eps is None else f", epsilon {eps:.4g}"
            status = res.get("lmodp_status", "done")
            if res.get("error") and status != "finished":
                extra += f" ({res['error'][:200]})"
            self._line(f"[{self.done}/{total}] {trial.config['spec']['key']}: {status}{extra}")

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            self._check()
            attempt = trial.num_failures
            self._line(
                f"[retry] {trial.config['spec']['key']}: attempt {attempt} of {max_retries + 1} failed "
                f"({describe_trial_error(_trial_error(trial))}); retrying"
            )

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._check()
            self.done += 1
            why = describe_trial_error(_trial_error(trial))
            self._line(f"[{self.done}/{total}] {trial.config['spec']['key']}: error ({why})")

        def stopper(self) -> Stopper:
            progress = self

            class StopOnProblem(Stopper):
                def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
                    return progress.stop_reason is not None

                def stop_all(self) -> bool:
                    return progress.stop_reason is not None

            return StopOnProblem()

    return TrialProgress()

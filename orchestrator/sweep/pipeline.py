"""The sweep pipeline: plan, noise search, a Ray Tune grid of trials, the report.

:func:`run_sweep` checks everything it can before starting anything (the config, the storage,
the Ray address and resources, tracking for multi-node clusters), then:

1. **Plan** (:mod:`~orchestrator.sweep.plan`) -- ``q`` and ``T`` of every private trial, the
   majority-class baseline, the feature cache;
2. **Search** -- :mod:`orchestrator.search_runner` on Ray tasks, all targets at once, for that
   ``(q, T, delta)``; saved in the manifest, as ``search/`` artifacts of the parent run;
3. **Trials** -- a Ray Tune grid of :class:`~orchestrator.sweep.specs.TrialSpec` s
   (:mod:`~orchestrator.sweep.trial`); a failing trial is retried ``max_retries`` times and
   never stops the others; a target the search found no LMO parameters for is ``infeasible``;
4. **Report** -- :mod:`orchestrator.report`, written locally and logged to the parent run.

One sweep at a time: the driver holds the run folder's lock (:mod:`~orchestrator.sweep.lock`)
from before Ray starts to the end; a second sweep into the same experiment and storage is refused
(exit 2) naming the holder.

``resume=True`` reopens the same parent run and rebuilds what is finished from MLflow -- every
FINISHED child run, by its trial key (target, mechanism, seed, hyperparameters) -- whatever Tune's
own files say (:mod:`~orchestrator.sweep.resume`); only the other trials go to a fresh Tune run,
so nothing finished is trained twice. A trial also looks for its key under the parent run before
it trains (:func:`~orchestrator.sweep.trial.claim_run`).

Failures: whatever stops the sweep after its parent run exists (a full disk, a lost tracking
server, Ray) ends the parent and every open child run FAILED (KILLED on Ctrl-C) and marks the
manifest ``failed``, then raises :class:`SweepError` (exit 1) whose one line says what is true
afterwards: the runs ended FAILED, or -- when the tracking store cannot be written (a full disk,
a server that is gone) -- that they could not be closed and the next ``--resume`` or ``lmo-dp
report`` closes them. A failing trial whose cause is the whole sweep's (:mod:`~orchestrator.sweep.health`:
a full disk, a tracking server that does not answer) ends the sweep at once. A sweep whose trials
failed for good ends FAILED with the rest of its results and the CLI exits
:data:`EXIT_TRIALS_FAILED`.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from pathlib import Path
from typing import Any

from noise_search.errors import InputError, LmoDpError, one_line
from noise_search.search_result import SearchResult
from orchestrator.mlflow_view import runs_url, sweep_view, ui_command
from orchestrator.progress import trial_progress_callback
from orchestrator.provenance import CONFIG_HASH_TAG, config_sha256
from orchestrator.quiet import quiet_sweep_driver, quiet_sweep_libraries
from orchestrator.ray_session import check_address, connect
from orchestrator.selection import select, with_selection_bound, with_tuning
from orchestrator.sweep import lock, sequential
from orchestrator.sweep.context import SweepContext
from orchestrator.sweep.early_stopping import early_stopping_summary, selection_cells
from orchestrator.sweep.health import client_retry_window, server_problem, sweep_problem
from orchestrator.sweep.outcomes import TrialOutcome, selection_rows, trial_entry
from orchestrator.sweep.parent_run import log_early_stopping, log_parent_inputs, log_report, log_tuning, run_search
from orchestrator.sweep.plan import plan_sweep
from orchestrator.sweep.preflight import (
    check_local_resources,
    check_plan,
    check_resources,
    check_storage,
    check_tracking_reachable,
)
from orchestrator.sweep.resume import earlier_checkpoints, finished_trials
from orchestrator.sweep.specs import TrialSpec, trial_specs
from orchestrator.sweep.storage import MANIFEST, write_manifest
from orchestrator.sweep.trial import RUN_DIR_TAG, SWEEP_TAG, TrialFn
from orchestrator.sweep.tune_run import close_stopped_runs, make_tuner
from orchestrator.sweep.tuning import TunedCell, calibrate_cells, draw_cells, runs_statement, tuning_summary
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import KIND_TAG, Tracker, check_tracking, run_url, tracking_uri

#: ``lmo-dp sweep`` exits with this code when the sweep ran to the end but trials failed.
EXIT_TRIALS_FAILED = 3
#: trial statuses that count as failed (``infeasible``: the search found no noise; not a failure)
FAILED_STATUSES = ("error", "refused")


class SweepError(LmoDpError):
    """The sweep could not run (Ray, storage or tracking failed)."""


class _SweepStopped(LmoDpError):
    """A failing trial showed that the whole sweep cannot go on (a full disk, a lost server)."""


# --- the pipeline -----------------------------------------------------------------------------------


def run_sweep(
    cfg: SweepConfig,
    *,
    address: str | None = None,
    resume: bool = False,
    trial_fn: TrialFn | None = None,
) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the ``lmo-dp sweep --json`` object."""
    quiet_sweep_libraries()
    run_dir = f"{cfg.storage_uri().rstrip('/')}/{cfg.experiment}"
    check_local_resources(cfg, address)
    manifest = check_storage(cfg, run_dir, resume, address)
    if manifest is None:
        check_plan(cfg)
    check_tracking(tracking_uri())
    if address:
        check_address(address)
    if cfg.tuning is not None:
        print(f"sweep {cfg.experiment!r}: {runs_statement(cfg, draw_cells(cfg))}", file=sys.stderr, flush=True)
    quiet_sweep_driver()  # from here lmo-dp prints one line per trial, not Tune's or MLflow's logs
    held = lock.acquire(run_dir)  # exit 2 naming the sweep that holds it
    started = False
    try:
        manifest = check_storage(cfg, run_dir, resume, address)  # again: a sweep may have ended meanwhile
        session = connect(address)
        try:
            import ray

            alive = [n for n in ray.nodes() if n.get("Alive")]
            check_resources(cfg, [n.get("Resources", {}) for n in alive])  # before planning: never a Tune hang
            check_tracking_reachable(alive)
            started = True
            return _Run(cfg, run_dir, manifest, resume, trial_fn).execute()
        finally:
            session.close()
    finally:
        held.release(remove_empty=not started)


class _Run:
    """One execution of :func:`run_sweep` after the checks."""

    def __init__(
        self, cfg: SweepConfig, run_dir: str, manifest: dict[str, Any] | None, resume: bool, trial_fn: TrialFn | None
    ) -> None:
        self.cfg, self.run_dir, self.manifest, self.resume, self.trial_fn = cfg, run_dir, manifest, resume, trial_fn
        self.started = time.perf_counter()
        self.uri = tracking_uri()
        self.tracker = Tracker(self.uri)
        self.out_dir = (
            (Path.cwd() / "lmodp-out" / "reports" / cfg.experiment).resolve() if "://" in run_dir else Path(run_dir)
        )
        self.timings: dict[str, float] = {}
        #: keys of the trials a FINISHED MLflow run already held (read back, not run again)
        self.reused: set[str] = set()
        self.experiment_id = ""

    def execute(self) -> dict[str, Any]:
        """The sweep; on any failure its runs end FAILED (KILLED on Ctrl-C), never RUNNING -- or,
        when the tracking store cannot be written, the error line says they could not be closed."""
        self.parent_run_id: str | None = None
        self.live_manifest: dict[str, Any] | None = None
        try:
            return self._execute()
        except KeyboardInterrupt:
            self._abandon("KILLED", "interrupted")
            raise
        except BaseException as exc:
            if isinstance(exc, InputError) and self.parent_run_id is None:
                raise
            parent = self.parent_run_id
            problem = self._abandon("FAILED", "failed")
            cause = self._cause(exc)
            raise SweepError(
                f"sweep {self.cfg.experiment!r} failed: {cause}{self._end_state(parent, problem)}"
            ) from exc

    def _cause(self, exc: BaseException) -> str:
        """The failure in a few words: the whole sweep's problem (a full disk, a tracking server
        that does not answer) when there is one, else the exception."""
        if isinstance(exc, _SweepStopped):
            return str(exc)
        text = one_line(exc) if isinstance(exc, LmoDpError) else f"{type(exc).__name__}: {one_line(exc)}"
        text = text if len(text) <= 300 else text[:297] + "..."
        problem = sweep_problem(self.run_dir, self.uri)
        return text if problem is None else f"{problem} ({text})"

    @staticmethod
    def _end_state(parent: str | None, problem: str | None) -> str:
        """What is true of the sweep's runs now -- said only after it is."""
        if parent is None:
            return ""
        if problem is None:
            return (
                f"; parent run {parent} ended FAILED; finished trials are kept: fix the cause and rerun with --resume"
            )
        return (
            f"; parent run {parent} and its open trial runs could not be closed ({problem}): they show "
            "RUNNING until 'lmo-dp sweep --resume' or 'lmo-dp report' closes them; finished trials are kept"
        )

    def _abandon(self, run_status: str, manifest_status: str) -> str | None:
        """Best effort: every run of this sweep closed, the manifest marked. Each part may fail
        on its own (the cause may be a full disk or a lost server); the others still happen.
        Returns None when every run is closed, else why not (one line)."""
        problem = None
        if self.parent_run_id is not None and server_problem(self.uri) is not None:
            # each call below would wait out the client's retries (minutes) before failing
            problem = "the tracking server does not answer"
        if self.parent_run_id is not None and problem is None:
            try:
                self.tracker.fail_open_children(self.cfg.experiment, self.parent_run_id)
            except Exception as exc:
                problem = _short(exc)
            try:
                self.tracker.end_run(self.parent_run_id, run_status)
            except Exception as exc:
                problem = problem or _short(exc)
        self.parent_run_id = None
        if self.live_manifest is not None:
            # informative only: --resume reads what is finished from MLflow, not this status
            with contextlib.suppress(Exception):
                write_manifest(self.run_dir, {**self.live_manifest, "status": manifest_status})
        return problem

    def _execute(self) -> dict[str, Any]:
        manifest = self._open()
        search = SearchResult.from_dict(manifest["search"], source=f"{self.run_dir}/{MANIFEST}")
        tuned = manifest.get("tuning")
        cells = None if tuned is None else [TunedCell.from_dict(c) for c in tuned]
        specs, infeasible = trial_specs(self.cfg, search, cells)
        # the runs table lmo-dp's URL opens (kept up to date on every run of the sweep)
        self.experiment_id = self.tracker.set_view(self.cfg.experiment, sweep_view(self.cfg, [*specs, *infeasible]))
        ctx = SweepContext(
            experiment=self.cfg.experiment,
            parent_run_id=manifest["parent_run_id"],
            tracking_uri=self.uri,
            sweep=self.cfg,
            train_storage=f"{self.run_dir}/ray-train",
            run_dir=str(self.run_dir),
            n_train=int(manifest["plan"]["n_train"]),
        )
        stopping = None
        if self.cfg.early_stopping is not None:
            plan = manifest["plan"]
            stopping = selection_cells(self.cfg, specs, plan["sample_rate"], plan["steps"])
        results, trials_seconds = self._fit(specs, ctx, manifest)
        trials = [self._entry(spec, outcome, trial_id) for spec, outcome, trial_id in results]
        seeds = None
        if self.cfg.statistics is not None and self.cfg.statistics.seeds is not None:
            trials, seeds, looks_seconds = self._add_seeds(search, trials, ctx, manifest)
            trials_seconds += looks_seconds
        trials += [{**trial_entry(s, TrialOutcome("infeasible")), "reused": False} for s in infeasible]
        trials.sort(key=_entry_order)
        return self._finish(manifest, trials, trials_seconds, stopping, seeds)

    def _entry(self, spec: TrialSpec, outcome: TrialOutcome, trial_id: str | None) -> dict[str, Any]:
        return {**trial_entry(spec, outcome, trial_id), "reused": spec.key in self.reused}

    def _add_seeds(
        self, search: SearchResult, trials: list[dict[str, Any]], ctx: SweepContext, manifest: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
        """Seeds until decided (:mod:`~orchestrator.sweep.sequential`): each later look's trials are
        found finished in MLflow by key, or run as a Tune run of their own under the run folder."""
        seconds = 0.0

        def fit(specs: list[TrialSpec], look: int) -> list[dict[str, Any]]:
            nonlocal seconds
            results, spent = self._fit(specs, ctx, manifest, name=f"look-{look}-{time.strftime('%Y%m%d-%H%M%S')}")
            seconds += spent
            return [self._entry(spec, outcome, trial_id) for spec, outcome, trial_id in results]

        trials, summary = sequential.run_looks(self.cfg, search, trials, fit, verbose=True)
        return trials, summary, seconds

    # --- stages ---------------------------------------------------------------------------------
    def _open(self) -> dict[str, Any]:
        """A new sweep: plan, search, parent run, manifest. A resumed one: reopen its parent run."""
        cfg, tracker = self.cfg, self.tracker
        if self.manifest is not None:
            manifest = self.manifest
            self.parent_run_id = manifest["parent_run_id"]
            tracker.reopen_run(manifest["parent_run_id"])
            manifest["status"] = "running"
            self.live_manifest = manifest
            # informative only (a resume reads what is finished from MLflow): a full storage disk
            # does not stop the trials, whose results go to MLflow; the report then fails, naming it
            with contextlib.suppress(OSError):
                write_manifest(self.run_dir, manifest)
            return manifest
        t = time.perf_counter()
        plan = plan_sweep(cfg)
        self.timings["plan_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        outcome, result = run_search(cfg, plan)
        self.timings["search_seconds"] = time.perf_counter() - t
        parent_run_id = tracker.start_run(
            cfg.experiment,
            run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={
                KIND_TAG: "sweep", SWEEP_TAG: cfg.experiment, CONFIG_HASH_TAG: config_sha256(cfg.to_dict()),
                RUN_DIR_TAG: self.run_dir,
            },
        )  # fmt: skip
        self.parent_run_id = parent_run_id
        manifest = {
            "experiment": cfg.experiment,
            "parent_run_id": parent_run_id,
            "tracking_uri": self.uri,
            "run_dir": self.run_dir,
            "status": "running",
            "config": cfg.to_dict(),
            "plan": plan.to_dict(),
            "search": result,
        }
        if cfg.tuning is not None:
            t = time.perf_counter()
            search = SearchResult.from_dict(result, source="the sweep's noise search")
            cells = calibrate_cells(cfg, plan, search, draw_cells(cfg))
            manifest["tuning"] = [c.to_dict() for c in cells]
            self.timings["tuning_seconds"] = time.perf_counter() - t
        self.live_manifest = manifest
        write_manifest(self.run_dir, manifest)
        log_parent_inputs(tracker, parent_run_id, cfg, plan, outcome, result, self.out_dir)
        if cfg.tuning is not None:
            log_tuning(tracker, parent_run_id, cfg, manifest["tuning"])
        return manifest

    def _fit(
        self, specs: list[TrialSpec], ctx: SweepContext, manifest: dict[str, Any], name: str | None = None
    ) -> tuple[list[tuple[TrialSpec, TrialOutcome, str | None]], float]:
        """Every trial of ``specs``: (spec, outcome, Tune trial id), and the seconds it took.

        Trials that a FINISHED MLflow run under the parent already holds (a resumed sweep) are
        reported from that run; the others go to a fresh Tune run (``name``: one of its own under the
        run folder, for a later look of seeds until decided).
        """
        if not specs:
            return [], 0.0
        done = finished_trials(self.tracker, self.cfg.experiment, manifest["parent_run_id"], specs)
        results = [(d.spec, d.outcome, d.trial_id) for d in done]
        finished_keys = {d.spec.key for d in done}
        self.reused |= finished_keys
        todo = [s for s in specs if s.key not in finished_keys]
        if done:
            print(
                f"sweep {self.cfg.experiment!r}: {len(done)} of {len(specs)} trials already finished "
                f"(found in MLflow), {len(todo)} to run",
                file=sys.stderr,
                flush=True,
            )
        started = time.perf_counter()
        if todo:
            if self.resume:  # trials cut short may restart from an earlier attempt's checkpoint
                ctx = ctx.with_checkpoints(earlier_checkpoints(self.run_dir, {s.key for s in todo}))
            progress = trial_progress_callback(len(todo), self.cfg.max_retries, self._problem)
            grid = make_tuner(self.cfg, self.run_dir, todo, ctx, progress, name, self.trial_fn).fit()
            if progress.stop_reason is not None:
                raise _SweepStopped(progress.stop_reason)
            tuned = list(grid)
            reported = {r.config["spec"]["key"] for r in tuned if r.metrics or r.error is not None}
            if any(s.key not in reported for s in todo):
                # Tune's SIGINT handler stops the run, saves its state and returns: a trial that neither
                # reported nor failed never ran, so the sweep was interrupted
                print(
                    f"sweep {self.cfg.experiment!r} interrupted: finished trials are kept; rerun with --resume",
                    file=sys.stderr,
                )
                raise KeyboardInterrupt
            if self.cfg.early_stopping is not None:
                close_stopped_runs(self.tracker, tuned)
            results += [
                (TrialSpec.from_dict(r.config["spec"]), TrialOutcome.from_report(r.metrics, r.error),
                 (r.metrics or {}).get("trial_id"))
                for r in tuned
            ]  # fmt: skip
        # a trial whose worker died for good never closed its run
        self.tracker.fail_open_children(self.cfg.experiment, manifest["parent_run_id"])
        return results, time.perf_counter() - started

    def _problem(self) -> str | None:
        """A reason the whole sweep cannot go on (asked when a trial fails; a tracking server gets
        as long to come back as MLflow's client gives one request)."""
        return sweep_problem(self.run_dir, self.uri, patience=client_retry_window())

    def _finish(
        self,
        manifest: dict[str, Any],
        trials: list[dict[str, Any]],
        trials_seconds: float,
        stopping: list[dict[str, Any]] | None = None,
        seeds: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        from orchestrator.report_privacy import read_privacy

        tracker, parent_run_id = self.tracker, manifest["parent_run_id"]
        early = None
        if stopping is not None:
            early = early_stopping_summary(self.cfg, stopping, trials)
            log_early_stopping(tracker, parent_run_id, early)
        tracker.log_dict(parent_run_id, sequential.statistics_record(self.cfg, seeds), "statistics.json")
        report, verdicts = log_report(tracker, parent_run_id, self.cfg.experiment, self.out_dir / "report")
        failed = sum(t["status"] in FAILED_STATUSES for t in trials)
        tracker.log_metrics(
            parent_run_id,
            {"trials": len(trials), "trials_failed": failed, "seconds": time.perf_counter() - self.started},
        )
        chosen = select(selection_rows(trials))
        tuning = None
        if self.cfg.tuning is not None:
            tuning = tuning_summary(self.cfg, [TunedCell.from_dict(c) for c in manifest["tuning"]])
            chosen = with_tuning(chosen, tuning["cells"])
            tracker.set_tags(parent_run_id, {
                f"lmodp.tuning.selected.eps_{s.epsilon_target:g}.{s.mechanism}": s.mlflow_run_id
                for s in chosen if s.epsilon_target is not None and s.mlflow_run_id
            })  # fmt: skip
        if early is not None:
            chosen = with_selection_bound(chosen, early["cells"])
        selected = [s.to_dict() for s in chosen]
        models = _keep_models(tracker, self.experiment_id, parent_run_id, self.cfg, chosen, trials)
        tracker.log_dict(parent_run_id, {"trials": trials, "selected": selected, "models": models}, "trials.json")
        tracker.end_run(parent_run_id, "FINISHED" if failed == 0 else "FAILED")
        self.parent_run_id = None  # closed: nothing left to abandon
        manifest["status"] = "finished" if failed == 0 else "finished-with-errors"
        self.live_manifest = None
        write_manifest(self.run_dir, manifest)
        plan = manifest["plan"]
        return {
            "experiment": self.cfg.experiment,
            "parent_run_id": parent_run_id,
            "report": str(report),
            "report_host": socket.gethostname(),
            "report_artifact": f"runs:/{parent_run_id}/report/index.html",
            "parent_run_url": run_url(self.uri, self.experiment_id, parent_run_id),
            "runs_url": runs_url(self.uri, self.experiment_id),
            "ui_command": ui_command(self.uri),
            "run_dir": self.run_dir,
            "tracking_uri": self.uri,
            "trials": trials,
            "trials_failed": failed,
            "resumed": self.resume,
            "trials_run": sum(not t["reused"] and t["status"] != "infeasible" for t in trials),
            "trials_reused": sum(t["reused"] for t in trials),
            "selected": selected,
            "models": models,
            **({"tuning": tuning} if tuning is not None else {}),
            **({"early_stopping": early} if early is not None else {}),
            "cells": verdicts["cells"],
            "comparisons": verdicts["comparisons"],
            "statistics": verdicts["statistics"],
            "privacy": read_privacy(report.parent),
            "baselines": {"majority": plan.get("majority")},
            "plan": {k: plan.get(k) for k in ("n_train", "batch_size", "sample_rate", "steps", "training")},
            "seconds": time.perf_counter() - self.started,
            "trials_seconds": trials_seconds,
            **self.timings,
        }


def _keep_models(
    tracker: Tracker, experiment_id: str, parent_run_id: str, cfg: SweepConfig, chosen: list[Any], trials: list[Any]
) -> list[dict[str, Any]]:
    """``training.save_model``: tag each cell's model, delete those not kept
    (:func:`orchestrator.model_logging.keep_cell_models`); ``chosen`` carries the tuning and
    early-stopping figures of each cell's selection."""
    from orchestrator.model_logging import keep_cell_models
    from orchestrator.selection import select_groups

    by_cell = {(s.mechanism, s.epsilon_target): s for s in chosen}
    groups = [(by_cell.get((s.mechanism, s.epsilon_target), s), g) for s, g in select_groups(selection_rows(trials))]
    return keep_cell_models(tracker, experiment_id, parent_run_id, groups, trials, cfg.training.save_model)


def _short(exc: BaseException, limit: int = 150) -> str:
    """An error in at most ``limit`` characters: a database's own message rather than its SQL."""
    seen: BaseException | None = exc
    while seen is not None:  # SQLAlchemy keeps the database's error as .orig
        orig = getattr(seen, "orig", None)
        if isinstance(orig, BaseException):
            exc = orig
            break
        seen = seen.__cause__ or seen.__context__
    text = one_line(exc).split(" [SQL:", 1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _entry_order(t: dict[str, Any]) -> tuple[Any, ...]:
    """Trial entries by target (the reference last), mechanism, seed, learning rate, clip."""
    eps = t["epsilon_target"]
    return (
        eps is None, eps or 0.0, t["mechanism"], t.get("tuning_run") or 0, t["seed"], t["learning_rate"] or 0.0,
        t.get("clip") or 0.0,
    )  # fmt: skip

"""What lmo-dp tells a researcher about where to look (fast): the MLflow runs table's view and URL,
the sweep's output on a resume, the help texts that tell two addresses apart, the Ray token file.

The view itself, opened in a real browser on a real sweep, is checked in
``tests/orchestrator/test_mlflow_ui_browser.py`` (slow).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from orchestrator.mlflow_view import (
    LOCAL_UI,
    RUN_NAME_COLUMN,
    VIEW_TAG,
    browse_lines,
    run_name_width,
    runs_url,
    search_view,
    sweep_view,
    trials_view,
    ui_command,
    view_text,
)

ROUTE = "/#/experiments/7/runs?viewStateShareKey=lmodp&workflowType=machine_learning"


def test_the_url_opens_the_runs_table_with_lmodps_view_on_a_server_or_a_local_mlflow_ui() -> None:
    assert VIEW_TAG == "mlflow.sharedViewState.lmodp"
    assert runs_url("http://10.0.0.5:5000/", "7") == "http://10.0.0.5:5000" + ROUTE
    assert ui_command("https://mlflow.team.example") is None
    local = "sqlite:////home/a b/mlruns-lmodp/mlflow.db"
    assert runs_url(local, "7") == LOCAL_UI + ROUTE == "http://127.0.0.1:5000" + ROUTE
    assert ui_command(local) == "mlflow ui --backend-store-uri 'sqlite:////home/a b/mlruns-lmodp/mlflow.db' --port 5000"
    assert browse_lines("http://h:5000" + ROUTE, None) == [f"browse the runs: http://h:5000{ROUTE}"]
    assert browse_lines(LOCAL_UI + ROUTE, "mlflow ui X") == [
        "browse the runs: mlflow ui X",
        f"  then open {LOCAL_UI}{ROUTE}",
    ]


def test_the_trials_view_shows_the_dp_columns_flat_by_target() -> None:
    view = trials_view(varied=["training.learning_rate"], run_names=["eps=8_gaussian_seed=0_lr=0.03", "x"])
    assert view["searchFilter"] == "tags.`lmodp.kind` = 'trial'"
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`epsilon_target`", True)
    assert view["selectedColumns"] == [
        "params.`privacy.epsilon`", "params.`privacy.mechanism`", "params.`training.seed`",
        "params.`training.learning_rate`", "metrics.`epsilon_spent`", "metrics.`val_accuracy`",
        "metrics.`test_accuracy`",
    ]  # fmt: skip
    assert view["columnOrder"] == [RUN_NAME_COLUMN, *view["selectedColumns"]]
    assert view["columnWidths"] == {RUN_NAME_COLUMN: 233}  # 29 characters
    lm = trials_view(task="causal-lm", audit=True)["selectedColumns"]
    assert lm[-3:] == ["metrics.`epsilon_lower_bound`", "metrics.`val_perplexity`", "metrics.`test_perplexity`"]
    assert search_view()["searchFilter"] == "tags.`lmodp.kind` = 'search'"
    assert json.loads(view_text(view)) == view and view_text(view) == view_text(dict(reversed(view.items())))


def test_run_name_widths_fit_the_keys_within_bounds() -> None:
    assert run_name_width([]) == 260
    assert run_name_width(["none_seed=0"]) == 190
    assert run_name_width(["x" * 200]) == 480


def test_a_sweep_view_has_a_column_for_each_hyperparameter_its_trials_vary() -> None:
    def spec(key: str, lr: float | None, clip: float | None = None) -> SimpleNamespace:
        return SimpleNamespace(key=key, learning_rate=lr, clip=clip, epochs=None, trainable=None)

    cfg = SimpleNamespace(model=SimpleNamespace(task="classification"), audit=None)
    varied = sweep_view(cfg, [spec("a", 0.03), spec("b", 0.1), spec("c", None, 1.0)])["selectedColumns"]
    assert "params.`training.learning_rate`" in varied and "params.`privacy.clip`" not in varied
    same = sweep_view(cfg, [spec("a", 0.1), spec("b", 0.1)])["selectedColumns"]
    assert "params.`training.learning_rate`" not in same


def _result(**over) -> dict:
    trial = {
        "key": "eps=8_gaussian_seed=0", "status": "finished", "epsilon": 7.9, "epsilon_target": 8.0,
        "metrics": {"accuracy": 0.75}, "reused": True,
    }  # fmt: skip
    base = {
        "experiment": "x", "parent_run_id": "p1", "trials": [trial, {**trial, "key": "k2", "reused": False}],
        "trials_failed": 0, "resumed": True, "trials_run": 1, "trials_reused": 1, "report": "/r/index.html",
        "tracking_uri": "http://h:5000", "runs_url": "http://h:5000" + ROUTE, "ui_command": None,
    }  # fmt: skip
    return {**base, **over}


def test_resuming_a_finished_sweep_says_nothing_was_rerun() -> None:
    from orchestrator.commands.sweep import render

    done = render(_result(trials_run=0, trials_reused=2))
    first = done.splitlines()[0]
    assert "already finished, nothing was rerun" in first and "all 2 trials were read back" in first
    assert "eps=8_gaussian_seed=0" not in done  # no trial lines, as if it had trained
    assert done.splitlines()[-1] == f"browse the runs: http://h:5000{ROUTE}"
    partial = render(_result())
    assert "1 trials read back from their finished MLflow runs, not rerun" in partial
    assert "finished (earlier)" in partial and partial.count("(earlier)") == 1


def test_help_tells_the_two_ray_addresses_and_every_accountant_apart(capsys) -> None:
    from orchestrator.cli import build_parser

    parser = build_parser()
    helps = {
        name: " ".join(sub.format_help().split()) for name, sub in parser._subparsers._group_actions[0].choices.items()
    }
    assert "--address HOST:PORT" in helps["sweep"] and "GCS address" in helps["sweep"]
    assert "not the dashboard URL" in helps["sweep"] and "not the dashboard URL" in helps["search"]
    assert "--address URL" in helps["submit"] and "not the GCS address" in helps["submit"]
    for command in ("account", "calibrate"):
        assert "rdp-hidden-u: lmo with u hidden" in helps[command], command
    assert "--experiment NAME" in helps["sweep"]


def test_rays_token_file_is_made_private(tmp_path) -> None:
    from orchestrator.ray_session import private_token_file

    token = tmp_path / "auth_token"
    assert private_token_file(token) is False  # none yet
    token.write_text("t")
    token.chmod(0o644)  # as ray.init() writes it
    assert private_token_file(token) is True and (token.stat().st_mode & 0o777) == 0o600
    assert private_token_file(token) is False

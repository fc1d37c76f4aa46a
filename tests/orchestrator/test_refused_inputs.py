"""Issue 27's bad inputs, one named case each: refused before they can hurt.

Every case runs the CLI in-process in an empty folder (MLflow pointed inside it) and checks the
contract of README.md's exit-code table: the exit code (2 for bad input), exactly one line on
stderr that starts ``lmo-dp <command>: error: <field>:`` and says what is allowed, no traceback,
nothing on stdout, nothing written (no file, folder or MLflow store), and nothing expensive
started -- Ray's ``connect`` and the model loading are replaced by a guard that fails the case,
so "before Ray starts" is checked for every sweep case. Cases that once hung (FIFOs, devices)
run under a timeout.

The hypothesis fuzz over the same schemas (duplicate keys, YAML 1.1 forms, special files,
names) is ``test_fuzz_cli.py``; the tests after the table check what these inputs are read as
when they are accepted (YAML 1.2, labels by value), the law of the number of tuning runs, and
the per-node resource check against a real Ray instance.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from cli_helpers import run_cli

from noise_search.errors import ParameterError

#: Work a refused input must never reach.
GUARDED = (
    "orchestrator.sweep.pipeline.connect",
    "orchestrator.search_runner.connect",
    "trainers.engine.build_trainable",
)


class ExpensiveWorkReached(BaseException):
    """A guarded function ran (a BaseException: no ``except Exception`` hides it)."""


FIFO = object()  #: a file entry created as a named pipe with no writer

HEAD = "model: {trainable: head}\ndata: {max_train_examples: 100, max_eval_examples: 50}\n"
TRIAL = "privacy: {mechanism: gaussian, epsilon: 8}\n"
SWEEP = HEAD + "privacy: {epsilons: [8], mechanisms: [gaussian]}\n"
ACCOUNT = ["account", "--mechanism", "gaussian", "--sigma", "1", "--sample-rate", "0.01", "--steps", "100",
           "--delta", "1e-5"]  # fmt: skip
LMO = {"a1": 1.0, "a3": 0.0, "a4": 0.5, "G_k": 4.0, "G_theta": 1.0, "E_lambda": 1.0, "U_a": 0.5, "U_b": 1.5}
LMO_ACCOUNT = ["account", "--mechanism", "lmo", "--params", "p.json", *ACCOUNT[5:]]
TUNED = [*ACCOUNT, "--tuning-mean", "3", "--tuning-shape", "-0.999"]
CALIBRATE = ["calibrate", "--mechanism", "gaussian", "--epsilon", "1", *ACCOUNT[5:]]
ALIAS_BOMB = (  # 9 levels of 9 aliases: 387 million items if expanded
    "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefg", "bcdefgh", strict=True))
    + "privacy: [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n"
)
ROWS = "".join(f"sentence number {i} is here,{i % 2}\n" for i in range(40))


def train(config: str, name: str = "t.yaml") -> tuple[dict, list[str]]:
    return {name: config}, ["train", "--config", name]


def sweep(config: str) -> tuple[dict, list[str]]:
    return {"s.yaml": config}, ["sweep", "--config", "s.yaml"]


def with_data(kind: str, body: str, extra: str = "") -> tuple[dict, list[str]]:
    files, argv = train(f"model: {{trainable: head}}\ndata: {{name: {kind}, path: d.{kind}}}\n{TRIAL}{extra}")
    return {**files, f"d.{kind}": body}, argv


def params(body: dict | str, *extra: str) -> tuple[dict, list[str]]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {"p.json": text}, [*LMO_ACCOUNT, *extra]


#: (id, (files, argv), environment, the field the line names first, text the line must contain)
CASES: list[tuple[str, tuple[dict, list[str]], dict, str, str]] = [
    # --- inputs that were accepted ----------------------------------------------------------------
    ("duplicate-yaml-key-epsilon-500", train("privacy: {mechanism: gaussian, epsilon: 1.0, epsilon: 500.0}\n"), {},
     "privacy.epsilon", "given twice in t.yaml (line 1); keep one"),
    ("duplicate-yaml-key-deep", sweep(SWEEP + "grid:\n  gaussian:\n    learning_rate: [0.1]\n"
     "    learning_rate: [0.3]\n"), {}, "grid.gaussian.learning_rate", "(lines 6 and 7)"),
    ("duplicate-yaml-section", sweep(SWEEP + "privacy: {epsilons: [500], mechanisms: [gaussian]}\n"), {},
     "privacy", "given twice in s.yaml (lines 3 and 4)"),
    ("duplicate-json-key-params", params('{"a1": 1.0, "a1": 9.0' + json.dumps(LMO)[10:]), {},
     "--params", "key 'a1' is given twice"),
    ("duplicate-json-key-jsonl-row", with_data("jsonl", '{"text": "a b", "label": 0, "label": 1}\n'), {},
     "data.path", "d.jsonl line 1: key 'label' is given twice"),
    ("duplicate-csv-column", with_data("csv", "text,label,label\n" + ROWS), {},
     "data.path", "column 'label' appears twice"),
    ("yaml11-sexagesimal-1:30", train("privacy: {mechanism: gaussian, epsilon: 1:30}\n"), {},
     "privacy.epsilon", "must be a number > 0, not text, got '1:30'"),
    ("yaml11-yes-boolean", sweep(SWEEP + "non_private: yes\n"), {}, "non_private", "must be true or false"),
    ("yaml11-on-boolean", train("privacy: {mechanism: gaussian, epsilon: 8, calibrate: on}\n"), {},
     "privacy.calibrate", "must be true or false, not text, got 'on'"),
    ("yaml11-underscore-integer", train(TRIAL + "model: {max_length: 1_000}\n"), {},
     "model.max_length", "must be an integer in [4, 8192], not text"),
    ("yaml11-date-in-a-list", sweep(SWEEP + "seeds: [2001-12-14]\n"), {}, "seeds", "must list numbers, not text"),
    ("params-unknown-key", params({"sigma": 3, "foo": 1}), {}, "--params", "foo: unknown key (allowed: a1, "),
    ("labels-list", with_data("jsonl", '{"text": "a b", "label": [0]}\n'), {},
     "data.label_field", "d.jsonl row 1: a label must be a number or text, got [0]"),
    ("labels-mapping", with_data("jsonl", '{"text": "a b", "label": {"y": 1}}\n'), {},
     "data.label_field", "a label must be a number or text"),
    ("labels-numbers-and-text", with_data("csv", "text,label\n" + ROWS + "another one,pos\n"), {},
     "data.label_field", "labels must be all numbers or all text"),
    ("dataset-too-small-to-split", with_data("csv", "text,label\nfirst row,0\nsecond row,1\n"), {},
     "data.path", "every split needs at least 1 example"),
    ("experiment-dotdot", sweep(SWEEP + 'experiment: ".."\n'), {}, "experiment", "must be a plain name, not '..'"),
    ("experiment-slash", train(TRIAL + "experiment: team/x\n"), {}, "experiment", "without / \\ ? * :"),
    ("experiment-newline", sweep(SWEEP + 'experiment: "a\\nb"\n'), {}, "experiment", "line breaks, got '\\n'"),
    ("experiment-nul", sweep(SWEEP + 'experiment: "a\\0b"\n'), {}, "experiment", "must not contain a NUL"),
    ("experiment-escape-character", train(TRIAL + 'experiment: "a\\eb"\n'), {}, "experiment", "control characters"),
    ("experiment-201-characters", train(TRIAL + f"experiment: {'x' * 201}\n"), {},
     "experiment", "must be at most 200 characters, got 201"),
    ("run-name-slash", train(TRIAL + "name: ../escape\n"), {}, "name", "must be a plain name without /"),
    ("run-name-from-the-file-name", train(TRIAL, "a:b.yaml"), {}, "name", "named after the config file"),
    ("report-experiment-dotdot", ({}, ["report", "--experiment", "..", "--out", "rep"]), {},
     "--experiment", "must be a plain name, not '..'"),
    ("demo-config-experiment-slash", ({"s.yaml": SWEEP + "experiment: a/b\n"}, ["demo", "--config", "s.yaml"]),
     {}, "experiment", "without /"),
    # --- inputs that hung, failed late or with the wrong code ------------------------------------
    ("fifo-as-train-config", ({"t.yaml": FIFO}, ["train", "--config", "t.yaml"]), {},
     "--config", "t.yaml is a FIFO (named pipe), not a regular file"),
    ("fifo-as-sweep-config", ({"s.yaml": FIFO}, ["sweep", "--config", "s.yaml"]), {}, "--config", "is a FIFO"),
    ("fifo-as-params", ({"p.json": FIFO}, LMO_ACCOUNT), {}, "--params", "is a FIFO"),
    ("fifo-as-data-path", ({**with_data("csv", "")[0], "d.csv": FIFO}, with_data("csv", "")[1]), {},
     "data.path", "d.csv is a FIFO"),
    ("device-as-config", ({}, ["train", "--config", "/dev/zero"]), {}, "--config", "is a character device"),
    ("config-over-1-mib", train(TRIAL + "#" * (1 << 20)), {}, "--config", "larger than 1 MiB"),
    ("memory-gb-beyond-this-machine", sweep(SWEEP + "resources: {memory_gb: 100000}\n"), {},
     "resources.memory_gb", "a trial asks for 1 x 100000 GiB of memory, but this machine has"),
    ("cpus-per-trial-64-or-more", sweep(SWEEP + "resources: {cpus_per_trial: 1024}\n"), {},
     "resources.cpus_per_trial", "must be at most"),
    ("workers-times-cpus", sweep(SWEEP + "resources: {cpus_per_trial: 1, workers: 1024}\n"), {},
     "resources.workers", "1024 workers x 1 CPU(s) = 1024 CPUs per trial"),
    ("experiment-300-characters", sweep(SWEEP + f"experiment: {'e' * 300}\n"), {},
     "experiment", "must be at most 200 characters, got 300"),
    ("sigma-1e-300", ({}, [*ACCOUNT[:4], "1e-300", *ACCOUNT[5:]]), {}, "--sigma", "must be in [0.001, 1000000.0]"),
    ("lmo-g-theta-1e300-hidden-u", params({**LMO, "G_theta": 1e300}, "--accountant", "rdp-hidden-u"), {},
     "--params", "G_theta: too large: u's second moment E[u^2] overflows"),
    ("tuning-shape-minus-0.999-account", ({}, TUNED), {}, "--tuning-shape", "must be > -0.9984 with mean 3"),
    ("tuning-shape-minus-0.999-calibrate", ({}, [*CALIBRATE, *TUNED[-4:]]), {},
     "--tuning-shape", "must be > -0.9984 with mean 3"),
    ("steps-1e9-pld", ({}, [*ACCOUNT[:8], "1000000000", *ACCOUNT[9:], "--accountant", "pld"]), {},
     "--steps", "the pld accountant supports at most 1,000,000 steps"),
    ("steps-1e9-prv", ({}, [*ACCOUNT[:8], "1000000000", *ACCOUNT[9:], "--accountant", "prv"]), {},
     "--steps", "the prv accountant supports at most 1,000,000 steps"),
    ("steps-beyond-pld-in-a-trial", train(HEAD + "privacy: {mechanism: gaussian, epsilon: 8, accountant: pld}\n"
     "training: {steps: 2000000, batch_size: 10}\n"), {}, "privacy.accountant", "supports at most 1,000,000"),
    ("mlflow-uri-garbage-sweep", sweep(SWEEP), {"MLFLOW_TRACKING_URI": "garbage://x"},
     "MLFLOW_TRACKING_URI", "MLflow has no tracking store for 'garbage://x'"),
    ("mlflow-uri-garbage-train", train(TRIAL), {"MLFLOW_TRACKING_URI": "garbage://x"},
     "MLFLOW_TRACKING_URI", "no tracking store"),
    ("mlflow-uri-garbage-search", ({}, ["search", "--epsilons", "1", *ACCOUNT[5:], "--workers", "0"]),
     {"MLFLOW_TRACKING_URI": "garbage://x"}, "MLFLOW_TRACKING_URI", "no tracking store"),
    ("csv-field-over-the-csv-limit", with_data("csv", "text,label\n" + "w" * 200_000 + ",1\n" + ROWS), {},
     "data.path", "d.csv line 2 is not readable CSV (a field is longer than the csv module's limit of 131,072"),
    ("model-config-json-empty", ({"m/config.json": "{}", **train(f"model: {{path: m}}\n{TRIAL}")[0]},
     ["train", "--config", "t.yaml"]), {}, "model.path", "m/config.json names no model_type"),
    ("max-length-above-the-positions", train(TRIAL + "model: {max_length: 600}\n"), {},
     "model.max_length", "must be at most 512 for the model at"),
    ("nul-in-storage-path", sweep(SWEEP + 'storage_path: "runs\\0x"\n'), {},
     "storage_path", "must not contain a NUL character"),
    # --- unreadable errors ------------------------------------------------------------------------
    ("yaml-alias-bomb", sweep(ALIAS_BOMB), {}, "", "aliases expand s.yaml beyond 10,000 added items"),
    ("yaml-recursive-alias", train("privacy: &p [1, *p]\n"), {}, "privacy[1]",
     "an alias refers to a mapping or list that contains it"),
    ("error-line-capped", train(TRIAL + f"training:\n  ? {'k' * 5000}\n  : 1\n"), {},  # an explicit 5000-character key
     "training.kkkk", "more characters; --debug shows all"),
    # --- heavy-tailed K -----------------------------------------------------------------------------
    ("tuning-k-quantile-above-max-runs", sweep(SWEEP + "tuning: {mean: 500}\n"), {},
     "tuning.mean", "99.9% quantile above tuning.max_runs = 1,000 (P[K > 1,000] = 0.135)"),
    ("tuning-heavy-tail-above-max-runs", sweep(SWEEP + "tuning: {mean: 30, shape: -0.5}\n"), {},
     "tuning.shape", "99.9% quantile above tuning.max_runs = 1,000"),
    ("tuning-shape-minus-0.999-sweep", sweep(SWEEP + "tuning: {mean: 3, shape: -0.999}\n"), {},
     "tuning.shape", "must be > -0.9984 with mean 3"),
]  # fmt: skip


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Every entry point of :data:`GUARDED` fails the test if it is called."""

    def reached(*args, **kwargs):
        raise ExpensiveWorkReached("expensive work was reached")

    with contextlib.ExitStack() as stack:
        for target in GUARDED:
            stack.enter_context(mock.patch(target, reached))
        yield


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.slow  # about 10 s in all: in-process runs; some read the movie-review sentences
@pytest.mark.timeout(120)  # a FIFO or a device read would hang: fail instead
@pytest.mark.parametrize(("given", "env", "field", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_exits_2_with_one_line_before_anything_starts(capsys, tmp_path, monkeypatch, given, env, field,
                                                                  needle):  # fmt: skip
    files, argv = given
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.get("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db"))
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if body is FIFO:
            os.mkfifo(tmp_path / name)
        else:
            (tmp_path / name).write_text(body)
    before = tree(tmp_path)
    started = time.monotonic()
    with guarded():
        r = run_cli(capsys, *argv)
    seconds = time.monotonic() - started
    lines = r.err.splitlines()
    assert r.code == 2 and r.out == "" and len(lines) == 1, r.err[:2000]
    prefix = f"lmo-dp {argv[0]}: error: {field}"
    assert lines[0].startswith(prefix) and needle in lines[0] and "Traceback" not in r.err, lines[0][:1000]
    assert len(lines[0]) <= len(f"lmo-dp {argv[0]}: error: ") + 500  # capped
    assert tree(tmp_path) == before  # nothing written: no file, folder or MLflow store
    assert seconds < 30, f"took {seconds:.1f} s"


# --- what accepted inputs are read as --------------------------------------------------------------


def test_configs_are_read_as_yaml_1_2() -> None:
    """YAML 1.2 core schema: 010 is ten, 0o17 octal, 1e3 a float, yes/on/1:30/dates text."""
    from trainers.yaml_input import load_yaml_text

    text = "a: 010\nb: 0o17\nc: 1e3\nd: yes\ne: 'on'\nf: 1:30\ng: 2001-12-14\nh: true\ni: ~\nj: .inf\n"
    got = load_yaml_text(text, "t.yaml", "--config")
    assert got == {"a": 10, "b": 15, "c": 1000.0, "d": "yes", "e": "on", "f": "1:30", "g": "2001-12-14",
                   "h": True, "i": None, "j": math.inf}  # fmt: skip
    merged = load_yaml_text("base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n", "t.yaml", "--config")
    assert merged["use"] == {"x": 1, "y": 3}  # a merge key is no duplicate; the explicit key wins


def test_labels_are_classes_by_value(tmp_path: Path) -> None:
    """0, 1, 1.0 and "1" are two classes, in numeric order; text labels sort as text."""
    from trainers.data import load_dataset

    rows = [f'{{"text": "example {i}", "label": {lab}}}' for i, lab in enumerate(["0", "1", "1.0", '"1"', '" 0 "'] * 8)]
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    ds = load_dataset("jsonl", path=tmp_path / "d.jsonl")
    assert ds.label_names == ("0", "1")
    labels = [*ds.train.labels, *ds.validation.labels, *ds.test.labels]
    assert sorted(labels) == sorted([0, 1, 1, 1, 0] * 8)


# --- the number of runs K of a tuning section ------------------------------------------------------


@pytest.mark.parametrize(("mean", "shape"), [(4, 1.0), (10, 0.0), (6, 2.5), (6, -0.5), (3, math.inf)])
def test_the_runs_quantile_is_the_laws_exact_quantile(mean: float, shape: float) -> None:
    """Against scipy's own quantile of the same law (geometric, logarithmic, Poisson; a truncated
    negative binomial as scipy's negative binomial conditioned on K >= 1)."""
    from scipy import stats

    from noise_search.tuning import TuningDistribution

    dist = TuningDistribution.from_mean(mean, shape)
    if shape == math.inf:
        expected = stats.poisson.ppf(0.999, mean)
    elif shape == 0.0:
        expected = stats.logser.ppf(0.999, 1 - dist.gamma)
    elif shape > 0:
        nb = stats.nbinom(shape, dist.gamma)
        expected = nb.ppf(nb.cdf(0) + 0.999 * nb.sf(0))
    else:  # scipy has no negative shape: the cumulative sum of the law's own ratio recurrence
        k = np.arange(1, 2000)
        cdf = np.cumsum(np.exp(dist._log_pmf_table(len(k))))
        expected = k[np.searchsorted(cdf, 0.999)]
    assert dist.quantile() == int(expected)
    assert dist.tail(int(expected)) <= 0.001 < dist.tail(int(expected) - 1)


def test_tuning_max_runs_raises_the_cap() -> None:
    from orchestrator.sweep_config import SweepConfig

    with pytest.raises(ParameterError, match=r"tuning\.mean"):
        SweepConfig.from_dict({"privacy": {"epsilons": [1.0]}, "tuning": {"mean": 500}})
    raised = SweepConfig.from_dict({"privacy": {"epsilons": [1.0]}, "tuning": {"mean": 500, "max_runs": 5000}})
    assert raised.tuning is not None and raised.tuning.max_runs == 5000


@pytest.mark.slow  # reads the movie-review sentences (a second)
def test_a_tuned_sweep_states_k_before_ray_starts(capsys, tmp_path, monkeypatch) -> None:
    """The expected K and its exact 99.9% quantile (geometric, mean 4: 25) are printed before Ray starts."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "s.yaml").write_text(SWEEP + "tuning: {mean: 4, shape: 1}\n")
    with guarded(), pytest.raises(ExpensiveWorkReached):
        run_cli(capsys, "sweep", "--config", "s.yaml")
    err = capsys.readouterr().err
    assert "tuning: K runs per (target, mechanism), geometric with mean 4, 99.9% quantile 25" in err, err
    assert "(tuning.max_runs 1,000); drawn:" in err and tree(tmp_path) == ["s.yaml"]


# --- resources against the cluster ------------------------------------------------------------------


def _cfg(**resources):
    from orchestrator.sweep_config import SweepConfig

    return SweepConfig.from_dict({"privacy": {"epsilons": [1.0]}, "resources": resources})


GIB = 2**30
TWO_NODES = [{"CPU": 4.0, "memory": 8.0 * GIB}, {"CPU": 4.0, "memory": 8.0 * GIB, "GPU": 1.0}]


@pytest.mark.parametrize(
    ("resources", "field", "needle"),
    [
        ({"cpus_per_trial": 6}, "resources.cpus_per_trial", "6 CPUs per trial, but no node"),
        ({"memory_gb": 12}, "resources.memory_gb", "12 GiB of memory per trial, but no node"),
        ({"gpus_per_trial": 2}, "resources.gpus_per_trial", "the largest has 1 GPU;"),
        ({"cpus_per_trial": 3, "workers": 3}, "resources.workers", "holds only 2 such workers"),
        ({"memory_gb": 5, "workers": 3}, "resources.workers", "holds only 2 such workers"),
    ],
    ids=["cpus-on-no-node", "memory-on-no-node", "gpus-on-no-node", "workers-by-cpus", "workers-by-memory"],
)
def test_a_trial_no_node_can_hold_is_refused(resources: dict, field: str, needle: str) -> None:
    """Per node, not in total: 8 CPUs over two nodes do not hold a 6-CPU trial (Tune would wait for ever)."""
    from orchestrator.sweep.pipeline import check_resources

    with pytest.raises(ParameterError) as info:
        check_resources(_cfg(**resources), TWO_NODES)
    assert info.value.field == field and needle in str(info.value), str(info.value)
    check_resources(_cfg(cpus_per_trial=4, memory_gb=8, workers=2), TWO_NODES)  # fits exactly


@pytest.mark.slow  # starts a local Ray instance (about 5 s)
@pytest.mark.timeout(180)
def test_memory_or_gpus_beyond_a_real_ray_instance_are_refused_before_planning(capsys, tmp_path, monkeypatch):
    """A running Ray instance with 1 CPU, 1 GiB for tasks and no GPU: asking for more memory or a
    GPU exits 2 naming the field before planning (no search, no MLflow run, nothing written),
    where Tune would have waited for ever."""
    import ray

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=1, num_gpus=0, _memory=GIB, include_dashboard=False, log_to_driver=False)
    capsys.readouterr()  # Ray's own start-up lines
    try:
        for extra, field in (
            ("memory_gb: 2", "resources.memory_gb"),
            ("gpus_per_trial: 1", "resources.gpus_per_trial"),
        ):
            (tmp_path / "s.yaml").write_text(SWEEP + f"resources: {{{extra}}}\n")
            with mock.patch("orchestrator.sweep.pipeline._Run.execute", side_effect=ExpensiveWorkReached):
                r = run_cli(capsys, "sweep", "--config", "s.yaml")
            line = r.err.strip()
            assert r.code == 2 and "\n" not in line and line.startswith(f"lmo-dp sweep: error: {field}:"), r.err
            assert "no node of the Ray cluster has that many" in line
            assert tree(tmp_path) == ["s.yaml"]
    finally:
        ray.shutdown()

"""`lmo-dp account` and `lmo-dp calibrate`: the JSON contract, library agreement, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_cli, run_console

from noise_search.accountants import compute_epsilon
from noise_search.calibration import calibrate
from noise_search.mechanisms import LMO, Gaussian, Laplace

PAPER = Path(__file__).resolve().parents[2] / "reference" / "paper_params"
ACCOUNT_KEYS = {"mechanism", "accountant", "epsilon", "delta", "order", "sample_rate", "steps"}
Q, T = 2048 / 67349, 197


def test_account_json_matches_library_for_each_mechanism(capsys):
    cases = [
        (["--mechanism", "gaussian", "--sigma", "2.5"], Gaussian(2.5), "rdp"),
        (["--mechanism", "gaussian", "--sigma", "2.5", "--accountant", "pld"], Gaussian(2.5), "pld"),
        (["--mechanism", "laplace", "--u", "0.4"], Laplace(0.4), "rdp"),
        (
            ["--mechanism", "lmo", "--params", PAPER / "fig6_lmo_eps1.json"],
            LMO.from_json(PAPER / "fig6_lmo_eps1.json"),
            "rdp",
        ),
    ]
    for flags, mech, acc in cases:
        r = run_cli(capsys, "account", *flags, "--sample-rate", Q, "--steps", T, "--delta", "1e-10", "--json")
        assert r.code == 0, r.err
        data = r.json()
        assert set(data) == ACCOUNT_KEYS
        expected = compute_epsilon(mech, sample_rate=Q, steps=T, delta=1e-10, accountant=acc)
        assert data["epsilon"] == expected.epsilon and data["order"] == expected.order
        assert data["mechanism"] == mech.name and data["accountant"] == acc and data["steps"] == T
        assert r.out.count("\n") == 1  # one JSON object, nothing else on stdout


def test_u0_its_deprecated_alias_u_and_param_give_one_epsilon(capsys):
    args = ["--sample-rate", "0.01", "--steps", "100", "--delta", "1e-5", "--json"]
    outs = [run_cli(capsys, "account", "--mechanism", "laplace", *flags, *args) for flags in
            (["--u0", "0.5"], ["--u", "0.5"], ["--param", "u0=0.5"], ["--param", "u=0.5"])]  # fmt: skip
    assert all(r.code == 0 for r in outs)
    assert len({r.out for r in outs}) == 1


def test_human_output_names_the_numbers(capsys):
    r = run_cli(
        capsys,
        "account",
        "--mechanism",
        "laplace",
        "--u",
        "0.3",
        "--sample-rate",
        "1",
        "--steps",
        "1",
        "--delta",
        "1e-10",
    )
    assert r.code == 0 and "epsilon = 0.3" in r.out and "pure-DP" in r.out


def test_calibrate_json_round_trips_through_account(capsys):
    r = run_cli(
        capsys,
        "calibrate",
        "--mechanism",
        "gaussian",
        "--epsilon",
        "1",
        "--delta",
        "1e-5",
        "--sample-rate",
        Q,
        "--steps",
        T,
        "--json",
    )
    assert r.code == 0, r.err
    data = r.json()
    assert {"mechanism", "sigma", "epsilon", "delta", "sample_rate", "steps"} <= set(data)
    assert data["epsilon"] <= 1.0
    lib = calibrate("gaussian", epsilon=1.0, delta=1e-5, sample_rate=Q, steps=T)
    assert data["sigma"] == lib.mechanism.sigma
    back = run_cli(
        capsys,
        "account",
        "--mechanism",
        "gaussian",
        "--sigma",
        repr(data["sigma"]),
        "--sample-rate",
        Q,
        "--steps",
        T,
        "--delta",
        "1e-5",
        "--json",
    ).json()
    assert back["epsilon"] == data["epsilon"]
    r = run_cli(
        capsys,
        "calibrate",
        "--mechanism",
        "laplace",
        "--epsilon",
        "2",
        "--delta",
        "1e-5",
        "--sample-rate",
        Q,
        "--steps",
        T,
        "--json",
    )
    assert r.code == 0 and r.json()["u"] > 0 and r.json()["epsilon"] <= 2.0


BAD_INPUTS = [
    (["--mechanism", "gaussian", "--sigma", "-1"], "--sigma"),
    (["--mechanism", "gaussian", "--sigma", "0"], "--sigma"),
    (["--mechanism", "gaussian"], "--sigma"),
    (["--mechanism", "laplace", "--u", "0"], "--u: must be in (0.0, 1000.0]"),
    (["--mechanism", "laplace", "--u0", "0"], "--u0: must be in (0.0, 1000.0]"),
    (["--mechanism", "laplace", "--u0", "1", "--u", "1"], "not allowed with argument"),
    (["--mechanism", "laplace", "--param", "u0=2000"], "--param: u0: must be in (0.0, 1000.0]"),
    (["--mechanism", "laplace", "--param", "b=2"], "--param: b: not a parameter of the laplace mechanism"),
    (["--mechanism", "laplace", "--param", "u0"], "--param: expected KEY=VALUE"),
    (["--mechanism", "gaussian", "--sigma", "abc"], "--sigma"),
    (["--mechanism", "cauchy", "--sigma", "1"], "--mechanism"),
    (["--mechanism", "lmo", "--params", "/nonexistent/params.json"], "params"),
]


@pytest.mark.parametrize(("flags", "needle"), BAD_INPUTS)
def test_bad_mechanism_input_exits_2_with_one_line(capsys, flags, needle):
    r = run_cli(capsys, "account", *flags, "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5")
    assert r.code == 2 and r.out == ""
    assert len(r.err.strip().splitlines()) == 1 and needle in r.err


@pytest.mark.parametrize(
    ("q", "steps", "delta", "needle"),
    [
        ("0", "10", "1e-5", "--sample-rate"),
        ("1.5", "10", "1e-5", "--sample-rate"),
        ("-0.1", "10", "1e-5", "--sample-rate"),
        ("0.1", "0", "1e-5", "--steps"),
        ("0.1", "2.5", "1e-5", "--steps"),
        ("0.1", "10", "0", "--delta"),
        ("0.1", "10", "1", "--delta"),
        ("0.1", "10", "-1e-5", "--delta"),
    ],
)
def test_bad_accounting_input_exits_2_with_one_line(capsys, q, steps, delta, needle):
    r = run_cli(
        capsys,
        "account",
        "--mechanism",
        "gaussian",
        "--sigma",
        "1",
        "--sample-rate",
        q,
        "--steps",
        steps,
        "--delta",
        delta,
        "--json",
    )
    assert r.code == 2 and r.out == ""
    assert len(r.err.strip().splitlines()) == 1 and needle in r.err


def test_malformed_and_out_of_range_params_files(capsys, tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{ a1: 0.1")
    neg = tmp_path / "neg.json"
    neg.write_text(
        json.dumps({"a1": 0.1, "a3": 0.1, "a4": 0.1, "G_k": 1, "G_theta": -0.5, "E_lambda": 5, "U_a": 0, "U_b": 1})
    )
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"a1": 0.1}))
    for path, needle in ((bad_json, "not valid JSON"), (neg, "G_theta"), (missing, "missing")):
        r = run_cli(
            capsys,
            "account",
            "--mechanism",
            "lmo",
            "--params",
            path,
            "--sample-rate",
            "1",
            "--steps",
            "1",
            "--delta",
            "1e-10",
        )
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and needle in r.err


def test_unsupported_accountant_is_bad_input(capsys):
    r = run_cli(
        capsys,
        "account",
        "--mechanism",
        "lmo",
        "--params",
        PAPER / "fig6_lmo_eps1.json",
        "--accountant",
        "pld",
        "--sample-rate",
        "1",
        "--steps",
        "1",
        "--delta",
        "1e-10",
    )
    assert r.code == 2 and "rdp" in r.err


def test_calibrate_says_when_the_noise_is_at_its_lower_limit(capsys):
    args = ["calibrate", "--mechanism", "laplace", "--delta", "1e-5", "--sample-rate", "0.03", "--steps", "10"]
    capped = run_cli(capsys, *args, "--epsilon", "1e6")
    assert capped.code == 0 and "u0 is at its upper limit 1000" in capped.out
    assert "upper limit" not in run_cli(capsys, *args, "--epsilon", "1").out
    # --json says so too, for both families
    assert json.loads(run_cli(capsys, *args, "--epsilon", "1e6", "--json").out)["at_limit"] is True
    assert json.loads(run_cli(capsys, *args, "--epsilon", "1", "--json").out)["at_limit"] is False
    gauss = [*args[:2], "gaussian", *args[3:], "--epsilon", "1e12"]
    out = run_cli(capsys, *gauss)
    assert "sigma is at its lower limit 0.001" in out.out
    assert json.loads(run_cli(capsys, *gauss, "--json").out)["at_limit"] is True


def test_calibrate_bad_input(capsys):
    r = run_cli(
        capsys,
        "calibrate",
        "--mechanism",
        "gaussian",
        "--epsilon",
        "-1",
        "--sample-rate",
        "0.1",
        "--steps",
        "10",
        "--delta",
        "1e-5",
    )
    assert r.code == 2 and "--epsilon" in r.err and len(r.err.strip().splitlines()) == 1


def test_console_script_end_to_end():
    """The installed `lmo-dp` entry point, as other tools call it."""
    r = run_console(
        "account",
        "--mechanism",
        "laplace",
        "--u",
        "0.5",
        "--sample-rate",
        "0.01",
        "--steps",
        "100",
        "--delta",
        "1e-5",
        "--json",
    )
    assert r.code == 0, r.err
    assert set(r.json()) == ACCOUNT_KEYS
    bad = run_console(
        "account",
        "--mechanism",
        "laplace",
        "--u",
        "0.5",
        "--sample-rate",
        "2",
        "--steps",
        "100",
        "--delta",
        "1e-5",
        "--json",
    )
    assert bad.code == 2 and bad.out == "" and len(bad.err.strip().splitlines()) == 1


# --- private hyperparameter tuning ------------------------------------------------------------

TUNED = ["--sample-rate", "0.03", "--steps", "500", "--delta", "1e-5"]


@pytest.mark.parametrize(
    ("mech", "shape", "distribution"),
    [
        (["--mechanism", "gaussian", "--sigma", "1"], "inf", "poisson"),
        (["--mechanism", "laplace", "--u", "0.5"], "1", "geometric"),
        (["--mechanism", "lmo", "--params", PAPER / "fig6_lmo_eps1.json"], "0", "logarithmic"),
    ],
)
def test_account_with_tuning_reports_the_selected_runs_epsilon(capsys, mech, shape, distribution):
    from noise_search.accountants import RdpAccountant
    from noise_search.events import dp_sgd_event, tuned_event

    r = run_cli(capsys, "account", *mech, *TUNED, "--tuning-mean", "10", "--tuning-shape", shape, "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert set(data) == ACCOUNT_KEYS | {"epsilon_per_run", "tuning"}
    # the 99.9% quantile of the number of runs, against scipy's own quantile of the same law
    from scipy import stats

    from noise_search.tuning import TuningDistribution

    law = TuningDistribution.from_mean(10, float(shape))
    q999 = {"poisson": lambda: stats.poisson.ppf(0.999, 10), "geometric": lambda: stats.geom.ppf(0.999, 0.1),
            "logarithmic": lambda: stats.logser.ppf(0.999, 1 - law.gamma)}[distribution]()  # fmt: skip
    assert data["tuning"] == {"mean": 10.0, "shape": "inf" if shape == "inf" else float(shape),
                              "distribution": distribution, "runs_quantile_999": int(q999)}  # fmt: skip
    one = run_cli(capsys, "account", *mech, *TUNED, "--json").json()
    assert data["epsilon_per_run"] == one["epsilon"] < data["epsilon"]
    mechanism = {"gaussian": Gaussian(1.0), "laplace": Laplace(0.5)}.get(
        mech[1], LMO.from_json(PAPER / "fig6_lmo_eps1.json")
    )
    expected = RdpAccountant().compose(tuned_event(dp_sgd_event(mechanism, 0.03, 500), 10, float(shape)))
    assert data["epsilon"] == pytest.approx(expected.get_epsilon(1e-5), rel=1e-12)
    human = run_cli(capsys, "account", *mech, *TUNED, "--tuning-mean", "10", "--tuning-shape", shape)
    assert "best of a random number of runs" in human.out and f"{one['epsilon']:.6g}" in human.out


def test_calibrate_with_tuning_meets_the_target_for_the_selected_run(capsys):
    r = run_cli(
        capsys, "calibrate", "--mechanism", "gaussian", "--epsilon", "4", *TUNED,
        "--tuning-mean", "10", "--tuning-shape", "1", "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    data = r.json()
    assert data["epsilon"] <= 4.0 and data["epsilon_per_run"] < data["epsilon"]
    back = run_cli(
        capsys, "account", "--mechanism", "gaussian", "--sigma", repr(data["sigma"]), *TUNED,
        "--tuning-mean", "10", "--tuning-shape", "1", "--json",
    ).json()  # fmt: skip
    assert back["epsilon"] == pytest.approx(data["epsilon"], rel=1e-12) and back["epsilon"] <= 4.0


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--tuning-mean", "0", "--tuning-shape", "1"], "--tuning-mean: must be in (1, "),
        (["--tuning-mean", "-2", "--tuning-shape", "inf"], "--tuning-mean: must be in [1, "),
        (["--tuning-mean", "5", "--tuning-shape", "-1"], "--tuning-shape: must be > -1"),
        (["--tuning-mean", "5", "--tuning-shape", "-3"], "--tuning-shape: must be > -1"),
        (["--tuning-mean", "5", "--tuning-shape", "nan"], "--tuning-shape: must be a number"),
        (["--tuning-mean", "3", "--tuning-shape", "-0.999"], "--tuning-shape: must be > -0.9984 with mean 3"),
        (["--tuning-mean", "5"], "--tuning-shape: required with --tuning-mean"),
        (["--tuning-shape", "1"], "--tuning-mean: required with --tuning-shape"),
        (["--tuning-mean", "5", "--tuning-shape", "1", "--accountant", "pld"], "--accountant: 'pld' does not support"),
        (["--tuning-mean", "5", "--tuning-shape", "1", "--accountant", "prv"], "--accountant: 'prv' does not support"),
    ],
)
@pytest.mark.parametrize("command", ["account", "calibrate"])
def test_bad_tuning_input_exits_2(capsys, flags, needle, command):
    mech = ["--mechanism", "gaussian"] + (["--sigma", "1"] if command == "account" else ["--epsilon", "2"])
    r = run_cli(capsys, command, *mech, *TUNED, *flags)
    assert r.code == 2 and r.out == ""
    assert len(r.err.strip().splitlines()) == 1 and needle in r.err, r.err

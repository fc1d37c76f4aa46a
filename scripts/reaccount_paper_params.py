"""Audit the LMO-DP paper's published parameter files with the sound accountant.

For every JSON file in a folder (default: reference/paper_params) this prints and
writes (``--out``, default docs/paper-audit.md) a table with

* the epsilon the file's name claims,
* the paper's unsampled formula (docs/privacy.md section 4, q = 1, T = 1) evaluated the way
  the public reference code evaluates it -- closed-form MGFs with no domain check, orders
  2..128, NaNs ignored -- to show where its small epsilons come from,
* the sound epsilon at (q = 1, T = 1, delta = 1e-10) with its RDP order,
* the sound epsilon at the paper's SST-2 setting (q = 2048/67349, T = 197, delta = 1e-10),
* the sound epsilon there with u hidden (the ``rdp-hidden-u`` accountant) and a Laplace calibrated
  under PLD to it,
* whether the reference evaluation left the MGF domain, and the noise magnitude E|Z| = E[1/u].

Run: ``python scripts/reaccount_paper_params.py`` (``--check`` fails if docs/paper-audit.md is stale).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from noise_search.accountants import compute_epsilon
from noise_search.calibration import calibrate
from noise_search.lower_bound import epsilon_lower_bound
from noise_search.mechanisms import LMO, Laplace
from noise_search.rdp import epsilon_from_rdp

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = ROOT / "reference" / "paper_params"
SST2 = {"sample_rate": 2048 / 67349, "steps": 197, "delta": 1e-10}


def claimed_epsilon(name: str) -> float | None:
    """The epsilon in a file name such as ``fig6_lmo_eps0.2.json`` or ``..._eps_1.0.json``."""
    m = re.search(r"eps_?([0-9]+(?:\.[0-9]+)?)", name)
    return float(m.group(1)) if m else None


def _naive_mgf(p: dict, t: float) -> float:
    """The three closed forms multiplied with no domain check (the reference code's way).

    A negative base to a non-integer power has no real value; it is reported as NaN
    (the reference code's Python gets a complex number there and its result is unusable).
    """
    base = 1.0 - p["a1"] * t * p["G_theta"]
    if base < 0 and float(p["G_k"]) != int(p["G_k"]):
        return math.nan
    try:
        gamma = base ** (-p["G_k"])
        expo = p["E_lambda"] / (p["E_lambda"] - p["a3"] * t)
        s = p["a4"] * t
        unif = (math.exp(s * p["U_b"]) - math.exp(s * p["U_a"])) / (s * (p["U_b"] - p["U_a"]))
    except (ZeroDivisionError, OverflowError):
        return math.nan
    return gamma * expo * unif


def reference_style_epsilon(p: dict, delta: float = 1e-10) -> tuple[float, float, bool]:
    """(epsilon, order, left_domain) of the unsampled formula evaluated without domain checks."""
    orders = np.arange(2, 129, dtype=float)
    rdp = np.full(orders.size, np.nan)
    left_domain = False
    for i, a in enumerate(orders.tolist()):
        m_pos, m_neg = _naive_mgf(p, a - 1), _naive_mgf(p, -a)
        in_domain = p["a1"] * (a - 1) * p["G_theta"] < 1 and p["a3"] * (a - 1) < p["E_lambda"]
        inner = (a * m_pos + (a - 1) * m_neg) / (2 * a - 1)
        if inner > 0 and math.isfinite(inner):
            rdp[i] = math.log(inner) / (a - 1)
            if not in_domain:
                left_domain = True
    finite = np.isfinite(rdp)
    if not finite.any():
        return math.inf, math.nan, left_domain
    eps, order = epsilon_from_rdp(rdp[finite][None, :], orders[finite], delta)
    # which order won, and was it outside the domain?
    won = float(order[0])
    winner_outside = not (p["a1"] * (won - 1) * p["G_theta"] < 1 and p["a3"] * (won - 1) < p["E_lambda"])
    return float(eps[0]), won, winner_outside


def audit_file(path: Path) -> dict:
    raw = json.loads(path.read_text())
    mech = LMO.from_json(path)
    single = compute_epsilon(mech, sample_rate=1.0, steps=1, delta=1e-10)
    sst2 = compute_epsilon(mech, **SST2)
    ref_eps, ref_order, outside = reference_style_epsilon(raw)
    lap = Laplace(mech.mean_u())
    row = {
        "file": path.name,
        "claimed": claimed_epsilon(path.name),
        "reference_style": ref_eps,
        "reference_order": ref_order,
        "reference_outside_domain": outside,
        "sound_single": single.epsilon,
        "sound_single_order": single.order,
        "sound_sst2": sst2.epsilon,
        "sound_sst2_order": sst2.order,
        "hidden_sst2": (hidden := compute_epsilon(mech, **SST2, accountant="rdp-hidden-u")).epsilon,
        "hidden_sst2_order": hidden.order,
        "mean_u": mech.mean_u(),
        "mean_abs": mech.mean_abs(),
        "laplace_same_mean_sst2": compute_epsilon(lap, **SST2).epsilon,
        "laplace_same_mean_sst2_pld": compute_epsilon(lap, **SST2, accountant="pld").epsilon,
        "laplace_same_mean_abs": lap.mean_abs(),
        "lower_bound_sst2": epsilon_lower_bound(mech, **SST2),
    }
    row["laplace_at_lower_bound_abs"] = calibrate(
        "laplace", epsilon=row["lower_bound_sst2"], accountant="pld", **SST2
    ).mechanism.mean_abs()
    row["laplace_at_hidden_abs"] = calibrate(
        "laplace", epsilon=row["hidden_sst2"], accountant="pld", **SST2
    ).mechanism.mean_abs()
    if "delta" in raw:
        row["file_delta"] = float(raw["delta"])
        row["sound_single_file_delta"] = compute_epsilon(
            mech, sample_rate=1.0, steps=1, delta=row["file_delta"]
        ).epsilon
    return row


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}g}"


def render(rows: list[dict]) -> str:
    lines = [
        "# Audit of the LMO-DP paper's parameter files",
        "",
        "Generated by `python scripts/reaccount_paper_params.py` from the files in `reference/paper_params/`;",
        "do not edit by hand. Sound values come from lmo-dp's RDP accountant (docs/privacy.md sections 3-5:",
        "MGF +inf outside its domain, integer orders 2..256, improved conversion).",
        "",
        "Columns: **claimed** = epsilon in the file name; **reference-style** = the paper's unsampled",
        "formula (q = 1, T = 1, delta = 1e-10) evaluated as the public reference code does it, with the",
        "closed-form MGFs used outside their domain (orders 2..128), and the order that won;",
        "**sound (q=1, T=1)** = the same release, soundly; **sound (SST-2)** = q = 2048/67349, T = 197,",
        "delta = 1e-10; **E|Z|** = noise magnitude E[1/u] per coordinate for C = 1;",
        "**Laplace, same E[u]** = a plain Laplace with u0 = E[u]: its SST-2 epsilon and E|Z|;",
        "**tight** = that Laplace's SST-2 epsilon under the PLD accountant (dp-accounting, pessimistic;",
        'proven for L1-clipped d-dimensional releases in docs/privacy.md, "Laplace in d dimensions").',
        "The LMO mixtures have no privacy-loss-distribution column: with u hidden, the whole shift on",
        'one coordinate is not the worst case (docs/privacy.md, "No privacy-loss distribution for LMO',
        'with u hidden"). **sound SST-2, u hidden** = their epsilon under the `rdp-hidden-u` accountant',
        '(Renyi moments of the noise actually drawn, proven for every L1 split; docs/privacy.md, "RDP',
        'with u hidden"), and **Laplace at that epsilon (PLD)** = the E|Z| of a Laplace calibrated under',
        "the PLD accountant to it: the two at the same proven epsilon. **LMO lower bound** = the least",
        "SST-2 epsilon *any* sound accountant could give the mixture (its whole shift on one coordinate,",
        'u hidden; docs/privacy.md, "A lower bound for LMO"): not a guarantee, the floor under the',
        "tight value; **Laplace at that epsilon** = the E|Z| of a Laplace calibrated under the proven PLD",
        "accountant to that lower bound.",
        "",
        "| file | claimed | reference-style (order) | sound q=1,T=1 (order) | sound SST-2 (order) "
        "| sound SST-2, u hidden (order) "
        "| E[u] | E\\|Z\\| | Laplace at that epsilon (PLD): E\\|Z\\| "
        "| Laplace same E[u]: SST-2 eps, E\\|Z\\| | Laplace same E[u]: tight SST-2 eps "
        "| LMO lower bound, SST-2 | Laplace at that epsilon: E\\|Z\\| |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        outside = ", outside domain" if r["reference_outside_domain"] else ""
        ref = f"{_fmt(r['reference_style'])} ({_fmt(r['reference_order'], 3)}{outside})"
        lines.append(
            f"| `{r['file']}` | {_fmt(r['claimed'])} | {ref} "
            f"| {_fmt(r['sound_single'])} ({_fmt(r['sound_single_order'], 3)}) "
            f"| {_fmt(r['sound_sst2'])} ({_fmt(r['sound_sst2_order'], 3)}) "
            f"| {_fmt(r['hidden_sst2'])} ({_fmt(r['hidden_sst2_order'], 3)}) "
            f"| {_fmt(r['mean_u'])} | {_fmt(r['mean_abs'])} | {_fmt(r['laplace_at_hidden_abs'])} "
            f"| {_fmt(r['laplace_same_mean_sst2'])}, {_fmt(r['laplace_same_mean_abs'])} "
            f"| {_fmt(r['laplace_same_mean_sst2_pld'])} "
            f"| {_fmt(r['lower_bound_sst2'])} | {_fmt(r['laplace_at_lower_bound_abs'])} |"
        )
    lines += ["", "## Reading the table", ""]
    for r in rows:
        note = f"- `{r['file']}`: claims {_fmt(r['claimed'])}; sound single release {_fmt(r['sound_single'])}"
        if r["claimed"]:
            note += f" ({r['sound_single'] / r['claimed']:.1f}x the claim)"
        note += f", SST-2 setting {_fmt(r['sound_sst2'])}."
        if r["reference_outside_domain"]:
            note += (
                f" The reference-style evaluation reaches {_fmt(r['reference_style'])} only at order"
                f" {_fmt(r['reference_order'], 3)}, where the Gamma or Exponential MGF is outside its domain."
            )
        if "file_delta" in r:
            note += (
                f" The file records delta = {r['file_delta']:g}; at that delta the sound single-release"
                f" epsilon is {_fmt(r['sound_single_file_delta'])}."
            )
        lines.append(note)
    dominated = [
        r["laplace_same_mean_sst2"] <= r["sound_sst2"] and r["laplace_same_mean_abs"] <= r["mean_abs"] for r in rows
    ]
    verdict = "In every row" if all(dominated) else f"In {sum(dominated)} of {len(rows)} rows"
    lines += [
        "",
        f"{verdict} a plain Laplace mechanism with the same mean inverse scale has a smaller (SST-2) epsilon",
        "and a smaller noise magnitude than the LMO mixture, as docs/privacy.md section 6 predicts under",
        "the joint-convexity bound.",
        "",
    ]
    proven = [r["laplace_at_hidden_abs"] < r["mean_abs"] for r in rows]
    factor = max(r["sound_sst2"] / r["hidden_sst2"] for r in rows)
    lines += [
        f"With u hidden (`rdp-hidden-u`) the mixtures' proven epsilon falls by up to a factor of {factor:.1f};",
        f"at that proven epsilon a Laplace calibrated under PLD still has a smaller noise magnitude in "
        f"{'every row' if all(proven) else f'{sum(proven)} of {len(rows)} rows'}.",
        "",
    ]
    beaten = [r["laplace_at_lower_bound_abs"] < r["mean_abs"] for r in rows]
    which = "every row" if all(beaten) else f"{sum(beaten)} of {len(rows)} rows"
    lines += [
        f"The same holds without the RDP bound's slack: in {which}, a Laplace proven to spend no more",
        "than the mixture's *lower bound* has a smaller noise magnitude, so no accountant, however",
        "tight, can make these mixtures beat Laplace on E|Z|.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="folder of parameter JSON files")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "paper-audit.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from a fresh audit")
    args = parser.parse_args(argv)
    files = sorted(args.params.glob("*.json"))
    if not files:
        print(f"reaccount_paper_params: no .json files in {args.params}", file=sys.stderr)
        return 2
    text = render([audit_file(f) for f in files])
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(
                f"reaccount_paper_params: {args.out} is stale; rerun scripts/reaccount_paper_params.py", file=sys.stderr
            )
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Could a tighter accountant make LMO beat Laplace? Each mixture at the epsilon no accountant can beat.

    python scripts/lmo_lower_bound.py [--epsilons 1,2,8] [--sample-rate 0.030409] [--steps 197]
        [--delta 1e-10] [--gamma 1] [--shapes gamma-3,uniform-wide,...] [--params DIR] [--hidden-u] [--json]

For every target epsilon and every mixture shape, the mixture's scale is set (bisection on the
scale of ``u``) so that its *lower bound* (noise_search/lower_bound.py: the least epsilon any
sound accountant could report, u hidden) meets the target: that is the most noise-efficient the
shape could ever be made to look. Its three objectives are then compared with

* **Laplace, proven**: a Laplace calibrated under the PLD accountant, an upper bound proven for
  L1-clipped d-dimensional releases. If the mixture loses to it, no accountant can make it win;
* **Laplace, lower bound**: a Laplace calibrated under the same lower bound, like for like (the
  lower bound is within 0.1% of Laplace's tight epsilon).

With ``--hidden-u`` every shape is also scaled until its *proven* epsilon under the ``rdp-hidden-u``
accountant (u hidden, noise_search/hidden_rdp.py) meets the target: what the shape achieves today,
with a guarantee, against the same proven Laplace (about 5 s per shape and target).

Objectives per coordinate, clipping bound 1: ``E|Z|`` and ``Var Z`` (lower is better) as ratios to
the proven Laplace, and the usefulness ``P(|Z| <= gamma)`` (higher is better). The shapes are
built-in families plus every parameter file in ``--params`` (their shape; the scale is re-set).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from noise_search.calibration import calibrate
from noise_search.errors import ParameterError
from noise_search.lower_bound import epsilon_lower_bound
from noise_search.mechanisms import LMO, Laplace

ROOT = Path(__file__).resolve().parents[1]
_NONE = {"a1": 0.0, "a3": 0.0, "a4": 0.0, "G_k": 2.0, "G_theta": 1.0, "E_lambda": 1.0, "U_a": 0.5, "U_b": 1.5}
FAMILIES: dict[str, LMO] = {
    "gamma-3": LMO.from_dict({**_NONE, "a1": 1.0, "G_k": 3.0}),
    "gamma-6": LMO.from_dict({**_NONE, "a1": 1.0, "G_k": 6.0}),
    "gamma-20": LMO.from_dict({**_NONE, "a1": 1.0, "G_k": 20.0}),
    "uniform-narrow": LMO.from_dict({**_NONE, "a4": 1.0, "U_a": 0.9, "U_b": 1.1}),
    "uniform-mid": LMO.from_dict({**_NONE, "a4": 1.0, "U_a": 0.5, "U_b": 1.5}),
    "uniform-wide": LMO.from_dict({**_NONE, "a4": 1.0, "U_a": 0.1, "U_b": 1.9}),
    "exp+uniform": LMO.from_dict({**_NONE, "a3": 0.3, "a4": 1.0, "E_lambda": 1.0, "U_a": 0.5, "U_b": 1.5}),
}
_BISECTIONS = 16


def scale_to_lower_bound(base: LMO, epsilon: float, start: float, account: dict) -> LMO:
    """``base.scaled(c)`` with the largest ``c`` (to 2e-4 relative, by bisection from ``start``) whose
    lower bound stays within ``epsilon``."""

    def fits(c: float) -> bool:
        return epsilon_lower_bound(base.scaled(c), **account) <= epsilon

    lo, hi = start / 2.0, start * 2.0
    while not fits(lo):
        lo, hi = lo / 4.0, lo
    while fits(hi):
        lo, hi = hi, hi * 4.0
    for _ in range(_BISECTIONS):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return base.scaled(lo)


def laplace_at_lower_bound(epsilon: float, start: float, account: dict) -> Laplace:
    lo, hi = start * 0.9, start * 1.1
    while epsilon_lower_bound(Laplace(lo), **account) > epsilon:
        lo, hi = lo / 2.0, lo
    while epsilon_lower_bound(Laplace(hi), **account) <= epsilon:
        lo, hi = hi, hi * 2.0
    for _ in range(_BISECTIONS):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if epsilon_lower_bound(Laplace(mid), **account) <= epsilon else (lo, mid)
    return Laplace(lo)


def objectives(mech: LMO | Laplace, gamma: float) -> dict[str, float]:
    return {"mean_abs": mech.mean_abs(), "variance": mech.variance(), "usefulness": mech.usefulness(gamma)}


def compare(shapes: dict[str, LMO], epsilon: float, account: dict, gamma: float, hidden_u: bool = False) -> dict:
    """One target: the proven and the like-for-like Laplace, and every shape at its lower bound (and,
    with ``hidden_u``, at its proven rdp-hidden-u epsilon)."""
    proven = calibrate("laplace", epsilon=epsilon, accountant="pld", **account).mechanism
    like = laplace_at_lower_bound(epsilon, proven.u0, account)
    rows = {}
    for name, base in shapes.items():
        mech = scale_to_lower_bound(base, epsilon, proven.u0 / base.mean_u(), account)
        rows[name] = {"mechanism": mech.to_dict(), "mean_u": mech.mean_u(), **objectives(mech, gamma)}
        if hidden_u:
            cal = calibrate(mech, epsilon=epsilon, accountant="rdp-hidden-u", rel_tol=1e-3, **account)
            rows[name]["hidden_u"] = {
                "mechanism": cal.mechanism.to_dict(),
                "epsilon": cal.spent.epsilon,
                "mean_u": cal.mechanism.mean_u(),
                **objectives(cal.mechanism, gamma),
            }
    return {
        "epsilon": epsilon,
        "laplace_proven": {"u0": proven.u0, **objectives(proven, gamma)},
        "laplace_lower_bound": {"u0": like.u0, **objectives(like, gamma)},
        "lmo": rows,
    }


def wins(row: dict, laplace: dict) -> list[str]:
    """The objectives on which ``row`` beats ``laplace``."""
    out = [k for k in ("mean_abs", "variance") if row[k] < laplace[k]]
    return out + (["usefulness"] if row["usefulness"] > laplace["usefulness"] else [])


def render(results: list[dict], account: dict, gamma: float) -> str:
    lines = [
        f"each LMO shape scaled until its epsilon LOWER BOUND meets the target (q = {account['sample_rate']:g}, "
        f"T = {account['steps']}, delta = {account['delta']:g}); ratios to a Laplace proven (PLD) at the target",
    ]
    for res in results:
        proven, like = res["laplace_proven"], res["laplace_lower_bound"]
        lines += [
            "",
            f"target epsilon {res['epsilon']:g}: Laplace proven u0 {proven['u0']:.4f} (E|Z| {proven['mean_abs']:.4f}, "
            f"P(|Z|<={gamma:g}) {proven['usefulness']:.4f}); Laplace at the same lower bound u0 {like['u0']:.4f}",
            f"{'shape':<38} {'E[u]':>8} {'E|Z| x':>8} {'Var x':>8} {'P(|Z|<=g)':>10} "
            f"{'beats proven':>14} {'beats like':>12}"
            + (f" {'u hidden: E|Z| x':>17} {'Var x':>8} {'P(|Z|<=g)':>10}" if _has_hidden(res) else ""),
        ]
        for name, row in res["lmo"].items():
            line = (
                f"{name:<38} {row['mean_u']:>8.4f} {row['mean_abs'] / proven['mean_abs']:>8.4f} "
                f"{row['variance'] / proven['variance']:>8.4f} {row['usefulness']:>10.4f} "
                f"{','.join(wins(row, proven)) or '-':>14} {','.join(wins(row, like)) or '-':>12}"
            )
            if "hidden_u" in row:
                h = row["hidden_u"]
                line += (
                    f" {h['mean_abs'] / proven['mean_abs']:>17.4f} {h['variance'] / proven['variance']:>8.4f} "
                    f"{h['usefulness']:>10.4f}"
                )
            lines.append(line)
    beaten = sorted(
        {(r["epsilon"], n) for r in results for n, row in r["lmo"].items() if wins(row, r["laplace_lower_bound"])}
    )
    where = ", ".join(f"{n} at {e:g}" for e, n in beaten) or "nowhere"
    lines += ["", f"LMO ahead of Laplace like for like: {where}"]
    if any(_has_hidden(r) for r in results):
        ahead = sorted(
            {
                (r["epsilon"], n)
                for r in results
                for n, row in r["lmo"].items()
                if "hidden_u" in row and wins(row["hidden_u"], r["laplace_proven"])
            }
        )
        lines.append(
            "LMO proven with u hidden ahead of the proven Laplace: "
            + (", ".join(f"{n} at {e:g}" for e, n in ahead) or "nowhere")
        )
    best = largest_advantage(results)
    if best is None:
        lines.append("LMO ahead of the proven Laplace: nowhere")
    else:
        lines.append(
            f"largest advantage over the proven Laplace (the most any accountant could give LMO here): "
            f"{best['margin']:.3%} on {best['objective']} ({best['shape']} at epsilon {best['epsilon']:g})"
        )
    return "\n".join(lines)


def _has_hidden(res: dict) -> bool:
    return any("hidden_u" in row for row in res["lmo"].values())


def largest_advantage(results: list[dict]) -> dict | None:
    """The largest relative margin by which a shape beats the proven Laplace, or None."""
    best = None
    for res in results:
        lap = res["laplace_proven"]
        for name, row in res["lmo"].items():
            margins = {
                "mean_abs": 1.0 - row["mean_abs"] / lap["mean_abs"],
                "variance": 1.0 - row["variance"] / lap["variance"],
                "usefulness": row["usefulness"] / lap["usefulness"] - 1.0,
            }
            for objective, margin in margins.items():
                if margin > 0 and (best is None or margin > best["margin"]):
                    best = {"margin": margin, "objective": objective, "shape": name, "epsilon": res["epsilon"]}
    return best


def _floats(text: str, field: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ParameterError(field, f"must be comma-separated numbers, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ParameterError(field, f"must be numbers in (0, inf), got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epsilons", default="1,2,8", help="target epsilons, comma-separated, each > 0")
    p.add_argument("--sample-rate", type=float, default=2048 / 67349, help="Poisson sampling rate in (0, 1]")
    p.add_argument("--steps", type=int, default=197, help="number of steps (>= 1)")
    p.add_argument("--delta", type=float, default=1e-10, help="delta in (0, 1)")
    p.add_argument("--gamma", type=float, default=1.0, help="usefulness threshold, units of the clipping bound (> 0)")
    p.add_argument("--shapes", default=",".join(FAMILIES), help=f"built-in shapes, any of {','.join(FAMILIES)}")
    p.add_argument("--params", type=Path, default=ROOT / "reference" / "paper_params", help="folder of LMO files")
    p.add_argument("--hidden-u", action="store_true", help="also scale each shape to its proven rdp-hidden-u epsilon")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    try:
        epsilons = _floats(args.epsilons, "epsilons")
        _floats(str(args.gamma), "gamma")
        unknown = [s for s in args.shapes.split(",") if s and s not in FAMILIES]
        if unknown:
            raise ParameterError("shapes", f"must be among {','.join(FAMILIES)}, got {','.join(unknown)}")
        shapes = {s: FAMILIES[s] for s in args.shapes.split(",") if s}
        for path in sorted(args.params.glob("*.json")) if args.params.is_dir() else []:
            shapes[path.name] = LMO.from_json(path)
        if not shapes:
            raise ParameterError("shapes", "no shapes: name built-in shapes or give --params a folder of .json files")
        account = {"sample_rate": args.sample_rate, "steps": args.steps, "delta": args.delta}
        epsilon_lower_bound(Laplace(1.0), **account)  # validates the accounting inputs before the long part
        results = [compare(shapes, eps, account, args.gamma, args.hidden_u) for eps in epsilons]
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        best = largest_advantage(results)
        print(json.dumps({**account, "gamma": args.gamma, "results": results, "largest_advantage": best}))
    else:
        print(render(results, account, args.gamma))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The report's privacy table: what each (target epsilon, mechanism) cell of a sweep guarantees.

Per cell, from its trial runs' MLflow params and metrics (:func:`privacy_fields` reads one run):
delta, the accountant, the sample rate ``q``, the planned steps ``T``, the epochs, the clipping
bound and its norm, the noise (Gaussian ``sigma``, Laplace ``u0``, LMO's mixture parameters) with
``E[u]`` and ``E|Z|`` per coordinate for ``C = 1`` computed from the mechanism object, the
largest epsilon a trial of the cell spent (the accountant's upper bound) and the smallest audit
lower bound among its audited trials. A tuned sweep adds the bound on one run and on the
returned run, selection included; a sweep with early stopping the selection's bound.

A value that differs between the cell's trials (a tuning space drawing the epochs, a grid of
clips) is the sorted list of its distinct values. :func:`write_privacy` puts the cells in the
report folder as ``privacy.json`` (the ``privacy`` key of ``lmo-dp report --json`` and
``lmo-dp sweep --json``) and ``privacy.csv``; :func:`privacy_html` is the page's table.

Printed epsilons keep their meaning: an upper bound is rounded up, a lower bound down
(:func:`upper_bound_text`, :func:`lower_bound_text`).
"""

from __future__ import annotations

import ast
import csv
import html
import json
import math
from pathlib import Path
from typing import Any

PRIVACY_JSON = "privacy.json"

#: columns of ``privacy.csv`` (and of the page's table, with readable headers)
PRIVACY_COLUMNS = [
    "epsilon_target",
    "mechanism",
    "trials",
    "delta",
    "accountant",
    "sample_rate",
    "steps",
    "epochs",
    "clip",
    "clip_norm",
    "noise",
    "mean_u",
    "mean_abs",
    "epsilon_spent",
    "epsilon_per_run",
    "epsilon_tuned",
    "epsilon_selection",
    "epsilon_lower_bound",
]

_HEADERS = {
    "epsilon_target": "target epsilon",
    "sample_rate": "q",
    "steps": "T",
    "mean_u": "E[u]",
    "mean_abs": "E|Z| (C = 1)",
    "epsilon_spent": "epsilon spent (max)",
    "epsilon_per_run": "epsilon per run (max)",
    "epsilon_tuned": "epsilon tuned",
    "epsilon_selection": "epsilon selection",
    "epsilon_lower_bound": "audit lower bound (min)",
}

#: upper bounds on epsilon: printed rounded up
_UPPER = ("epsilon_spent", "epsilon_per_run", "epsilon_tuned", "epsilon_selection")


def round_sig(x: float, rounding: Any) -> str:
    """``x`` to 4 significant digits with ``rounding`` (``math.ceil`` or ``math.floor``)."""
    if not math.isfinite(x) or x == 0.0:
        return f"{x:.4g}"
    scale = 10.0 ** (3 - math.floor(math.log10(abs(x))))
    return f"{rounding(x * scale) / scale:.4g}"


def upper_bound_text(x: float) -> str:
    """An upper bound on epsilon to 4 significant digits, rounded up (it stays a bound)."""
    return round_sig(x, math.ceil)


def lower_bound_text(x: float) -> str:
    """A lower bound on epsilon to 4 significant digits, rounded down (it stays a bound)."""
    return round_sig(x, math.floor)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        pass
    if text.startswith(("[", "(")):
        try:
            return list(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            return text
    return text


def privacy_fields(params: dict[str, str]) -> dict[str, Any]:
    """One trial run's privacy settings from its MLflow params: ``delta``, ``accountant``,
    ``sample_rate``, ``planned_steps`` and ``noise`` (the mechanism's ``to_dict()`` as logged, or
    None for a run that logged no noise: non-private, failed before training)."""

    def num(key: str) -> float | None:
        v = params.get(key)
        return None if v in (None, "None", "null") else float(v)

    noise = {k[6:]: _number(v) for k, v in params.items() if k.startswith("noise.") and k != "noise.source"}
    steps = num("plan.steps")
    return {
        "delta": num("privacy.delta"),
        "accountant": params.get("privacy.accountant"),
        "sample_rate": num("plan.sample_rate"),
        "planned_steps": None if steps is None else int(steps),
        "noise": noise if noise.get("mechanism") else None,
    }


def noise_moments(noise: dict[str, Any]) -> tuple[float | None, float | None]:
    """``(E[u], E|Z|)`` of a logged noise for ``C = 1``, from the mechanism object itself
    (``E[u]`` only for a mechanism with a random inverse scale); ``(None, None)`` when the
    mechanism cannot be rebuilt (an unknown plug-in)."""
    from noise_search.errors import LmoDpError
    from noise_search.mechanisms import mechanism_from_dict

    try:
        mech = mechanism_from_dict(dict(noise))
    except (LmoDpError, TypeError, ValueError):
        return None, None
    mean_u = mech.mean_u() if hasattr(mech, "mean_u") else None
    return mean_u, mech.mean_abs()


def _norm(noise: dict[str, Any]) -> str | None:
    from noise_search.mechanisms import mechanisms

    cls = mechanisms().get(str(noise.get("mechanism")))
    return None if cls is None else str(cls.norm).upper()


def _distinct(values: list[Any]) -> Any:
    """None (no value), the value all trials share, or the sorted list of distinct values."""
    seen: list[Any] = []
    for v in values:
        if v is not None and v not in seen:
            seen.append(v)
    if not seen:
        return None
    if len(seen) == 1:
        return seen[0]
    try:
        return sorted(seen)
    except TypeError:  # dicts (noises) keep the trials' order
        return seen


def _cell_key(row: dict[str, Any]) -> tuple[float, str]:
    return row["epsilon_target"], row["mechanism"] or ""


def privacy_cells(
    rows: list[dict[str, Any]],
    tuning: dict[str, Any] | None = None,
    early: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One dict per private (target, mechanism) cell of ``rows`` (the report's trial rows, with
    :func:`privacy_fields` merged in), by target then mechanism; ``tuning`` / ``early``: the
    parent run's ``tuning.json`` / ``early_stopping.json`` (their cells' bounds are added)."""
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("epsilon_target") is not None and r.get("mechanism") not in (None, "none"):
            groups.setdefault(_cell_key(r), []).append(r)
    bounds = {(c["mechanism"], c["epsilon"]): c for c in ((tuning or {}).get("cells") or [])}
    bounds |= {(c["mechanism"], c["epsilon"]): c for c in ((early or {}).get("cells") or [])}
    out = []
    for (eps, mech), group in sorted(groups.items()):
        noises = [r["noise"] for r in group if r.get("noise")]
        noise = _distinct(noises)
        moments = [noise_moments(n) for n in (noise if isinstance(noise, list) else [noise] if noise else [])]
        epochs = [
            r["epochs"] if r.get("epochs") is not None else _passes(r.get("sample_rate"), r.get("planned_steps"))
            for r in group
        ]
        spent = [r["epsilon"] for r in group if r.get("epsilon") is not None]
        lower = [r["epsilon_lower_bound"] for r in group if r.get("epsilon_lower_bound") is not None]
        b = bounds.get((mech, eps), {})
        out.append(
            {
                "epsilon_target": eps,
                "mechanism": mech,
                "trials": len(group),
                "delta": _distinct([r.get("delta") for r in group]),
                "accountant": _distinct([r.get("accountant") for r in group]),
                "sample_rate": _distinct([r.get("sample_rate") for r in group]),
                "steps": _distinct([r.get("planned_steps") for r in group]),
                "epochs": _distinct(epochs),
                "clip": _distinct([r.get("clip") for r in group]),
                "clip_norm": _distinct([_norm(n) for n in noises]),
                "noise": noise,
                "mean_u": _distinct([m[0] for m in moments]),
                "mean_abs": _distinct([m[1] for m in moments]),
                "epsilon_spent": max(spent) if spent else None,
                "epsilon_per_run": b.get("epsilon_per_run"),
                "epsilon_tuned": b.get("epsilon_tuned"),
                "epsilon_selection": b.get("epsilon_selection"),
                "epsilon_lower_bound": min(lower) if lower else None,
            }
        )
    return out


def _passes(q: float | None, steps: int | None) -> float | None:
    """Expected passes over the data, ``q * T``, for a plan given in steps."""
    return None if q is None or steps is None else q * steps


def noise_text(noise: dict[str, Any]) -> str:
    """``sigma 1.23`` / ``u0 0.5`` / ``a1 0.1, a3 0.2, ... (gamma+exponential, per_coordinate)``."""
    parts = [f"{k} {v:.4g}" for k, v in noise.items() if isinstance(v, float)]
    extra = []
    if isinstance(noise.get("components"), list):
        extra.append("+".join(str(c) for c in noise["components"]))
    if isinstance(noise.get("variant"), str):
        extra.append(noise["variant"])
    return ", ".join(parts) + (f" ({', '.join(extra)})" if extra else "")


def cell_text(column: str, value: Any) -> str:
    """A privacy-table value as printed (upper bounds rounded up, the audit's lower bound down)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(cell_text(column, v) for v in value)
    if column == "noise":
        return noise_text(value)
    if isinstance(value, float):
        if column in _UPPER:
            return upper_bound_text(value)
        if column == "epsilon_lower_bound":
            return lower_bound_text(value)
        return f"{value:.4g}"
    return str(value)


def write_privacy(cells: list[dict[str, Any]], out_dir: Path) -> None:
    """``privacy.json`` (the numbers as computed) and ``privacy.csv`` (as printed) in ``out_dir``."""
    (out_dir / PRIVACY_JSON).write_text(json.dumps(cells, indent=1))
    with (out_dir / "privacy.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PRIVACY_COLUMNS)
        for c in cells:
            w.writerow([cell_text(k, c.get(k)) for k in PRIVACY_COLUMNS])


def read_privacy(out_dir: str | Path) -> list[dict[str, Any]]:
    """What :func:`write_privacy` wrote into ``out_dir`` (empty for a report written before it)."""
    path = Path(out_dir) / PRIVACY_JSON
    return json.loads(path.read_text()) if path.exists() else []


def privacy_html(cells: list[dict[str, Any]]) -> str:
    """The page's privacy table (columns no cell has are left out)."""
    if not cells:
        return ""
    cols = [c for c in PRIVACY_COLUMNS if any(cell.get(c) is not None for cell in cells)]
    head = "".join(f"<th>{html.escape(_HEADERS.get(c, c))}</th>" for c in cols)
    tds = [
        [(' class="wrap"' if c == "noise" else "", html.escape(cell_text(c, cell.get(c)))) for c in cols]
        for cell in cells
    ]
    body = "\n".join("<tr>" + "".join(f"<td{cls}>{text}</td>" for cls, text in row) + "</tr>" for row in tds)
    text = (
        "What each target and mechanism guarantees: (epsilon, delta)-DP at the record level, accounted by the "
        "accountant named, for DP-SGD with Poisson sample rate q over T steps (epochs: the configured passes, "
        "or q x T where the plan is set in steps), per-example gradients clipped to the bound in the norm named, "
        "and the noise named (Gaussian: noise multiplier sigma; Laplace: inverse scale u0; LMO: Laplace with a "
        "random inverse scale u drawn from the mixture, with its mean E[u]). E|Z| is the mean absolute noise per "
        "coordinate for clip 1, computed from the mechanism. epsilon spent is the largest any trial of the cell "
        "spent (the accountant's upper bound, rounded up)."
    )
    if "epsilon_tuned" in cols:
        text += (
            " epsilon per run is the most one run of the tuning space can spend; epsilon tuned bounds the run "
            "returned, the selection included: it is the number the target bounds."
        )
    if "epsilon_selection" in cols:
        text += " epsilon selection bounds the early-stopped selection: all the cell's trials composed."
    if "epsilon_lower_bound" in cols:
        text += " The audit lower bound (the smallest among the cell's audited trials, rounded down) is empirical."
    if any(isinstance(cell.get(c), list) for cell in cells for c in cols):
        text += " A value that differs between the cell's trials lists each distinct value."
    return f"""<h2>Privacy per target and mechanism</h2>
<p>{html.escape(text)}</p>
<div class="scroll"><table id="privacy"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></div>
"""

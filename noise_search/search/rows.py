"""A target's :class:`~noise_search.search_result.SearchRow`: the pick, the baselines, the notes.

Every row says which calibrated baselines are at least as good as the best LMO (under the
joint-convexity bound a plain Laplace with ``u0 = E[u]`` never loses to the mixture), and an
infeasible row says how close the space came.
"""

from __future__ import annotations

import math

from noise_search.evaluator import MAXIMISED
from noise_search.search.baselines import Baselines
from noise_search.search.grid import GridOutcome, LmoPick
from noise_search.search.problem import SearchProblem
from noise_search.search_result import LmoEntry, SearchRow, TightOutlook

#: Objectives within this relative distance count as a tie in the dominance note.
TIE_REL_TOL = 1e-6


#: What a tighter accountant changes for an LMO that a Laplace dominates under the RDP bound, as the
#: search's notes (and the reports that show them) and README.md say it (tests/test_doc_facts.py)
TIGHTER_ACCOUNTANT = (
    "A tighter accountant does not change that at the settings tested: under rdp-hidden-u, the tightest "
    "bound proven for the mixture, LMO still loses, and no sound accountant could make the mixtures tried "
    "beat Laplace meaningfully"
)


def at_least_as_good(problem: SearchProblem, a: float, b: float, rel_tol: float = 0.0) -> bool:
    """Whether objective ``a`` is at least as good as ``b`` (or within ``rel_tol`` of it)."""
    slack = rel_tol * abs(b)
    return a >= b - slack if problem.objective in MAXIMISED else a <= b + slack


def honesty_note(
    problem: SearchProblem, target: float, objective: float | None, baselines: Baselines, lmo_accountant: str = "rdp"
) -> tuple[tuple[str, ...], str | None]:
    """Which baselines are at least as good as the best LMO (objective ``objective``; None when
    infeasible), and a sentence saying so."""
    if objective is None:
        return (), None
    dominated = tuple(
        entry.family
        for entry in (baselines.laplace, baselines.gaussian)
        if entry.objective is not None and at_least_as_good(problem, entry.objective, objective, TIE_REL_TOL)
    )
    if not dominated:
        return (), None
    parts = []
    if baselines.laplace.family in dominated:
        lap = baselines.laplace
        parts.append(f"the calibrated Laplace (u0 = {lap.value:.4g}, {problem.objective} {lap.objective:.4g})")
    if baselines.gaussian.family in dominated:
        g = baselines.gaussian
        parts.append(
            f"the calibrated Gaussian (sigma = {g.value:.4g}, {problem.objective} "
            f"{g.objective:.4g}; L2 sensitivity, not L1)"
        )
    note = (
        f"The best LMO ({problem.objective} {objective:.4g}) is dominated by {' and '.join(parts)} "
        f"at epsilon {target:g}."
    )
    tighter = sorted({baselines.laplace.accountant, baselines.gaussian.accountant} - {"rdp"})
    if lmo_accountant == "rdp-hidden-u":
        note += (
            " The LMO is held to its rdp-hidden-u bound (Renyi moments of the noise drawn, u hidden), "
            f"the baselines to {'/'.join(tighter) or 'rdp'}."
        )
        return dominated, note
    note += (
        " This is expected: under the joint-convexity RDP bound a plain Laplace "
        f"with u0 = E[u] is never worse than the mixture (docs/privacy.md section 6). {TIGHTER_ACCOUNTANT} "
        "(--lmo-accountant rdp-hidden-u; docs/utility.md, 'Could a tighter accountant make LMO win?')."
    )
    if tighter:
        note += (
            f" The baselines here are calibrated with the {'/'.join(tighter)} accountant, tighter than the RDP "
            "bound the LMO is held to here (--lmo-accountant rdp-hidden-u tightens it; lmo-dp has no "
            "privacy-loss distribution for the mixture: docs/privacy.md, 'No privacy-loss distribution for LMO "
            "with u hidden')."
        )
    return dominated, note


def outlook_note(problem: SearchProblem, objective: float, outlook: TightOutlook) -> str:
    """A sentence on whether any accountant could make the LMO (objective ``objective``) win."""
    if outlook.could_win is None:
        return f" Whether a tighter accountant could make the LMO win is unknown here ({outlook.error})."
    lap = outlook.laplace
    where = (
        f"at {outlook.epsilon_lower_bound:.4g}, the least epsilon any sound accountant could give this LMO "
        f"(a lower bound, not a guarantee; docs/privacy.md, 'A lower bound for LMO'), a Laplace proven by the "
        f"{lap.accountant} accountant (u0 = {lap.value:.4g}) has {problem.objective} {lap.objective:.4g} against "
        f"the LMO's {objective:.4g}"
    )
    if outlook.could_win:
        return f" A tighter accountant might make this LMO win: {where}; lmo-dp cannot tell."
    return f" No accountant could make this LMO win: {where}."


def infeasible_note(problem: SearchProblem, grid: GridOutcome, target: float) -> str:
    where = problem.space.describe()["space"]
    smallest = (
        f"{grid.min_epsilon:.4g}" if math.isfinite(grid.min_epsilon) else "inf (no candidate has a finite epsilon)"
    )
    return (
        f"infeasible: no candidate of the {where} space has epsilon <= {target:g} at q = {problem.sample_rate:g}, "
        f"T = {problem.steps}, delta = {problem.delta:g} (smallest epsilon in the space: {smallest})"
    )


def build_row(
    problem: SearchProblem,
    target: float,
    pick: LmoPick | None,
    baselines: Baselines,
    grid: GridOutcome,
    outlook: TightOutlook | None = None,
    *,
    rdp_pick: LmoPick | None = None,
    rescale_error: str | None = None,
) -> SearchRow:
    """The row of ``target``; ``rdp_pick`` is the RDP pick when ``pick`` was rescaled under
    ``rdp-hidden-u`` (``rescale_error``: why it could not be)."""
    dominated, note = honesty_note(
        problem,
        target,
        None if pick is None else pick.objective,
        baselines,
        "rdp" if pick is None else pick.spent.accountant,
    )
    if pick is not None and rdp_pick is not None:
        note = hidden_u_note(problem, pick, rdp_pick, rescale_error) + (note or "")
    if pick is not None and outlook is not None:
        note = (note or f"The best LMO has {problem.objective} {pick.objective:.4g}.") + outlook_note(
            problem, pick.objective, outlook
        )
    return SearchRow(
        epsilon_target=target,
        lmo=None if pick is None else pick.mechanism,
        epsilon=None if pick is None else pick.spent.epsilon,
        order=None if pick is None else pick.spent.order,
        objective=None if pick is None else pick.objective,
        source=None if pick is None else pick.source,
        laplace=baselines.laplace,
        gaussian=baselines.gaussian,
        gaussian_rdp=baselines.gaussian_rdp,
        laplace_rdp=baselines.laplace_rdp,
        dominated_by=dominated,
        note=note if pick is not None else infeasible_note(problem, grid, target),
        outlook=outlook if pick is not None else None,
        lmo_accountant=pick.spent.accountant if pick is not None else "rdp",
        lmo_rdp=None if rdp_pick is None or rdp_pick is pick else LmoEntry.of(rdp_pick),
    )


def hidden_u_note(problem: SearchProblem, pick: LmoPick, rdp_pick: LmoPick, error: str | None) -> str:
    """A sentence on the rescaling under ``rdp-hidden-u`` (``pick``: the best rescaled candidate)."""
    if error is not None or pick is rdp_pick:
        return f"The LMO stays at its RDP pick ({error or 'not rescaled'}). "
    head = "With u hidden (rdp-hidden-u; docs/privacy.md, 'RDP with u hidden') "
    tail = f"{problem.objective} {rdp_pick.objective:.4g} -> {pick.objective:.4g}. "
    if pick.index == rdp_pick.index and pick.source == f"{rdp_pick.source}+hidden-u":
        factor = pick.mechanism.mean_u() / rdp_pick.mechanism.mean_u()
        return head + (
            f"the grid's RDP pick is rescaled (u times {factor:.4g}) to spend epsilon {pick.spent.epsilon:.4g}: " + tail
        )
    where = f"grid candidate {pick.index}" if pick.index is not None else "the optimiser's point"
    return head + (
        f"{where}, rescaled to spend epsilon {pick.spent.epsilon:.4g}, beats the RDP pick rescaled "
        f"(best of the {problem.rerank} best RDP candidates): " + tail
    )

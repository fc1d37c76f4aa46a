"""Stage 4, under a tighter accountant: could *any* accountant make the best LMO beat Laplace?

The LMO is held to its RDP bound, the only one proven for the mixture, while the Laplace baseline
uses the tighter accountant. That asymmetry could hide an LMO win. This stage removes it from the
LMO's side as far as possible: it credits the LMO with the least epsilon any sound accountant
could give it (:func:`noise_search.lower_bound.epsilon_lower_bound`), calibrates a Laplace under
the tighter accountant to that epsilon, and compares the objectives. If the Laplace is still at
least as good, no accountant, however tight, can make this LMO win at this setting.
"""

from __future__ import annotations

from noise_search.errors import InputError
from noise_search.lower_bound import epsilon_lower_bound
from noise_search.mechanisms import LMO, Laplace
from noise_search.search.baselines import tighter_laplace
from noise_search.search.problem import SearchProblem
from noise_search.search.rows import TIE_REL_TOL, at_least_as_good
from noise_search.search_result import BaselineEntry, TightOutlook


def tight_outlook(problem: SearchProblem, lmo: LMO, objective: float) -> TightOutlook:
    """The outlook of ``lmo`` (objective ``objective``) at the problem's ``(q, T, delta)``."""
    try:
        bound = epsilon_lower_bound(lmo, sample_rate=problem.sample_rate, steps=problem.steps, delta=problem.delta)
    except (InputError, ValueError, OverflowError, MemoryError) as exc:
        return TightOutlook(None, BaselineEntry(Laplace.name, None, accountant=problem.accountant), None, str(exc))
    if bound <= 0.0:
        entry = BaselineEntry(Laplace.name, None, accountant=problem.accountant, error="the lower bound is 0")
        return TightOutlook(bound, entry, None, "the lower bound is 0: nothing to compare")
    laplace = tighter_laplace(problem, bound)
    if laplace.objective is None:
        return TightOutlook(bound, laplace, None, laplace.error)
    return TightOutlook(bound, laplace, not at_least_as_good(problem, laplace.objective, objective, TIE_REL_TOL))

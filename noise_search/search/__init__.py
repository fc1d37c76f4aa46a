"""The offline noise search: for every target epsilon, the least noisy LMO, Laplace and Gaussian.

* :mod:`~noise_search.search.problem` -- the question (:class:`SearchProblem`);
* :mod:`~noise_search.search.executors` -- where tasks run;
* :mod:`~noise_search.search.grid` -- stage 1, the space in blocks;
* :mod:`~noise_search.search.baselines` -- stage 2, calibrated Laplace and Gaussian;
* :mod:`~noise_search.search.optimize` -- stage 3, differential evolution (``optimize``);
* :mod:`~noise_search.search.outlook` -- stage 4 under a tighter accountant: could any
  accountant make the best LMO win?
* :mod:`~noise_search.search.rows` -- a target's row and its notes;
* :mod:`~noise_search.search.run` -- :func:`run_search`, the stages together.

The rows are :class:`~noise_search.search_result.SearchRow` objects. Under the joint-convexity
bound a plain Laplace with ``u0 = E[u]`` is never worse than the mixture, so the best LMO is
normally dominated by the calibrated Laplace; each row says so in its ``note``.
"""

from noise_search.evaluator import OBJECTIVES
from noise_search.search.baselines import Baselines, calibrate_baselines, calibrate_gaussian_rdp
from noise_search.search.executors import Executor, LocalExecutor
from noise_search.search.grid import BlockSummary, GridOutcome, grid_pick, reduce_blocks, search_block
from noise_search.search.optimize import optimize_target
from noise_search.search.problem import STRATEGIES, SearchProblem, mechanism_objective
from noise_search.search.run import SearchOutcome, run_search

__all__ = [
    "OBJECTIVES",
    "STRATEGIES",
    "Baselines",
    "BlockSummary",
    "Executor",
    "GridOutcome",
    "LocalExecutor",
    "SearchOutcome",
    "SearchProblem",
    "calibrate_baselines",
    "calibrate_gaussian_rdp",
    "grid_pick",
    "mechanism_objective",
    "optimize_target",
    "reduce_blocks",
    "run_search",
    "search_block",
]

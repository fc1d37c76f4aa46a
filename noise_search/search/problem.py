"""The noise-search question: :class:`SearchProblem`, validated once where it enters.

Target epsilons, ``delta``, Poisson sample rate ``q``, steps ``T``, objective (``mean-abs``,
``variance`` or ``usefulness`` at ``gamma``), space (:mod:`noise_search.spaces`), strategy and
seed. :func:`mechanism_objective` is a mechanism's objective through its own methods (the values
a result reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from noise_search.accountants import ACCOUNTANT_CLASSES, accountants_for, check_accounting_inputs, check_steps_supported
from noise_search.errors import ParameterError, check_int, require_finite_number
from noise_search.evaluator import check_objective, to_score
from noise_search.mechanisms import LMO, Mechanism
from noise_search.spaces import SPACES, PaperSpace, Space, WideSpace, make_space

STRATEGIES: tuple[str, ...] = ("grid", "optimize")
#: accountants for the baselines (the RDP values are always reported beside them)
BASELINE_ACCOUNTANTS: tuple[str, ...] = tuple(a.name for a in ACCOUNTANT_CLASSES if a.baseline)
#: accountants a pick's LMO is finally held to: ``rdp-hidden-u`` rescales each pick to spend the target
LMO_ACCOUNTANTS: tuple[str, ...] = tuple(accountants_for(LMO))
#: Candidates per block (one Ray task): paper blocks are cheap (orders <= 20), wide ones are not.
DEFAULT_BLOCK_SIZE = {"paper": 8192, "wide": 2048}


def _check_targets(targets: Any) -> tuple[float, ...]:
    if isinstance(targets, (int, float)):
        targets = (targets,)
    try:
        values = [require_finite_number("targets", t) for t in targets]
    except TypeError:
        raise ParameterError("targets", f"must be a list of epsilons > 0, got {targets!r}") from None
    if not values:
        raise ParameterError("targets", "at least one target epsilon is needed")
    bad = [v for v in values if v <= 0]
    if bad:
        raise ParameterError("targets", f"every target epsilon must be > 0, got {bad[0]!r}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class SearchProblem:
    """One noise-search question, validated on construction.

    ``targets`` are sorted and de-duplicated. ``space`` is ``"paper"``, ``"wide"`` or a
    :class:`~noise_search.spaces.PaperSpace` / :class:`~noise_search.spaces.WideSpace`
    (stored resolved). ``candidates`` sizes the wide space. ``accountant`` is the Gaussian
    baseline's accountant (``rdp``, ``prv`` or ``pld``; the RDP one is always reported).
    ``lmo_accountant`` is ``rdp`` (the grid's RDP pick is reported) or ``rdp-hidden-u`` (the
    ``rerank`` best RDP candidates of each target -- the pick, and the optimiser's point if any, among
    them -- are rescaled to spend the target under that accountant, and the best of them is
    reported; the RDP pick is kept beside it).
    ``gamma`` is required for ``usefulness``. ``block_size`` is the number of candidates per
    task (default per space, :data:`DEFAULT_BLOCK_SIZE`; results do not depend on it).
    ``optimizer_starts`` (distinct discrete families) and ``optimizer_generations`` size the
    ``optimize`` strategy; ``seed`` seeds it and the wide space.
    """

    targets: tuple[float, ...]
    delta: float
    sample_rate: float
    steps: int
    objective: str = "mean-abs"
    gamma: float | None = None
    space: str | Space = "paper"
    strategy: str = "grid"
    seed: int = 0
    accountant: str = "rdp"
    lmo_accountant: str = "rdp"
    rerank: int = 3
    candidates: int | None = None
    block_size: int | None = None
    optimizer_starts: int = 3
    optimizer_generations: int = 60

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "targets", _check_targets(self.targets))
        q, t, d = check_accounting_inputs(self.sample_rate, self.steps, self.delta)
        set_(self, "sample_rate", q)
        set_(self, "steps", t)
        set_(self, "delta", d)
        set_(self, "gamma", check_objective(self.objective, self.gamma))
        if self.strategy not in STRATEGIES:
            raise ParameterError("strategy", f"must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.accountant not in BASELINE_ACCOUNTANTS:
            raise ParameterError(
                "accountant", f"must be one of {', '.join(BASELINE_ACCOUNTANTS)}, got {self.accountant!r}"
            )
        check_steps_supported(self.accountant, t, "accountant")
        if self.lmo_accountant not in LMO_ACCOUNTANTS:
            raise ParameterError(
                "lmo_accountant", f"must be one of {', '.join(LMO_ACCOUNTANTS)}, got {self.lmo_accountant!r}"
            )
        set_(self, "seed", check_int("seed", self.seed, ge=0))
        set_(self, "rerank", check_int("rerank", self.rerank, ge=1))
        if self.rerank > 50:
            raise ParameterError("rerank", f"must be an integer in [1, 50], got {self.rerank}")
        set_(self, "optimizer_starts", check_int("optimizer_starts", self.optimizer_starts, ge=1))
        set_(self, "optimizer_generations", check_int("optimizer_generations", self.optimizer_generations, ge=1))
        if self.candidates is not None:
            set_(self, "candidates", check_int("candidates", self.candidates, ge=1))
        if isinstance(self.space, str):
            if self.space not in SPACES:
                raise ParameterError("space", f"must be one of {', '.join(SPACES)}, got {self.space!r}")
            set_(self, "space", make_space(self.space, size=self.candidates, seed=self.seed))
        elif not isinstance(self.space, (PaperSpace, WideSpace)):
            raise ParameterError("space", f"must be one of {', '.join(SPACES)} or a space object")
        if self.block_size is None:
            set_(self, "block_size", DEFAULT_BLOCK_SIZE[self.space.name])
        set_(self, "block_size", check_int("block_size", self.block_size, ge=1))

    @property
    def n_blocks(self) -> int:
        return -(-self.space.size // self.block_size)

    def settings(self) -> dict[str, Any]:
        """The inputs as the result file's ``settings`` object."""
        space = self.space.describe()
        return {
            "targets": list(self.targets),
            "delta": self.delta,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "objective": self.objective,
            "gamma": self.gamma,
            "space": space.pop("space"),
            "space_size": space.pop("size"),
            "space_details": space,
            "strategy": self.strategy,
            "seed": self.seed,
            "accountant": self.accountant,
            "lmo_accountant": self.lmo_accountant,
            **({"rerank": self.rerank} if self.lmo_accountant != "rdp" else {}),
            "block_size": self.block_size,
        }

    def score(self, values: np.ndarray) -> np.ndarray:
        return to_score(np.asarray(values, float), self.objective)


def mechanism_objective(mech: Mechanism, objective: str, gamma: float | None) -> float:
    """A mechanism's objective through its own methods (the values the result reports)."""
    if objective == "mean-abs":
        return float(mech.mean_abs())
    if objective == "variance":
        return float(mech.variance())
    return float(mech.usefulness(gamma))

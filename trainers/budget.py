"""The run's plan (sample rate, steps), its noise, and the privacy budget guard.

* :func:`make_plan` -- ``q = B / N`` (expected batch size over training examples) and
  ``T = steps`` or ``ceil(epochs / q)``.
* :func:`resolve_mechanism` -- the noise from explicit parameters, a search result file, or a
  calibration to the target for this plan.
* :func:`plan_privacy` -- epsilon of the whole planned run, checked *before* the first step:
  above the target, the trial refuses to start (``on_budget: refuse``; an
  :class:`~noise_search.errors.InputError` giving both numbers).
* :class:`BudgetGuard` -- during training, the epsilon after every step from a
  :class:`~noise_search.accountants.PrivacyLedger`, and whether one more step stays within
  the target (the loop stops *before* a step that would exceed it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from noise_search.accountants import PrivacyLedger, PrivacySpent, compute_epsilon, get_accountant
from noise_search.calibration import calibrate
from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import LMO, Mechanism
from noise_search.search_result import SearchResult
from trainers.config import PrivacySettings


class BudgetExceededError(InputError):
    """The planned run would spend more than the target epsilon."""


@dataclass(frozen=True)
class Plan:
    """Poisson sampling rate ``q = batch_size / n_train`` and the number of steps ``T``."""

    n_train: int
    batch_size: int
    sample_rate: float
    steps: int


def make_plan(n_train: int, batch_size: int, *, epochs: float = 1.0, steps: int | None = None) -> Plan:
    if n_train < 1:
        raise ParameterError("data.max_train_examples", "the training split is empty")
    if batch_size > n_train:
        raise ParameterError(
            "training.batch_size", f"must be <= the number of training examples ({n_train}), got {batch_size}"
        )
    q = batch_size / n_train
    t = steps if steps is not None else max(1, math.ceil(epochs / q - 1e-9))
    return Plan(n_train, batch_size, q, int(t))


@dataclass(frozen=True)
class PrivacyPlan:
    """The noise of a run and the epsilon its full plan spends."""

    mechanism: Mechanism
    source: str
    target_epsilon: float
    delta: float
    accountant: str
    planned: PrivacySpent
    sample_rate: float
    steps: int


def resolve_mechanism(settings: PrivacySettings, plan: Plan) -> tuple[Mechanism, str]:
    """The run's mechanism and where it came from (``params``, ``search_result:FILE``, ``calibrated``)."""
    eps = float(settings.epsilon)  # type: ignore[arg-type]
    if settings.search_result is not None:
        mech = SearchResult.load(settings.search_result).mechanism(settings.mechanism, eps)
        source = f"search_result:{settings.search_result}"
    elif settings.params is not None:
        mech = settings.explicit_mechanism()
        source = "params"
    else:
        cal = calibrate(
            settings.mechanism,
            epsilon=eps,
            delta=settings.delta,
            sample_rate=plan.sample_rate,
            steps=plan.steps,
            accountant=settings.accountant,
        )
        return cal.mechanism, "calibrated"
    if settings.calibrate and isinstance(mech, LMO):
        cal = calibrate(
            mech,
            epsilon=eps,
            delta=settings.delta,
            sample_rate=plan.sample_rate,
            steps=plan.steps,
            accountant=settings.accountant,
        )
        return cal.mechanism, f"{source}+calibrated"
    return mech, source  # type: ignore[return-value]


def plan_privacy(settings: PrivacySettings, plan: Plan, mechanism: Mechanism | None = None) -> PrivacyPlan:
    """Account the whole plan; refuse (``on_budget: refuse``) if it exceeds the target."""
    source = "given"
    if mechanism is None:
        mechanism, source = resolve_mechanism(settings, plan)
    target = float(settings.epsilon)  # type: ignore[arg-type]
    spent = compute_epsilon(
        mechanism, sample_rate=plan.sample_rate, steps=plan.steps, delta=settings.delta, accountant=settings.accountant
    )
    if spent.epsilon > target and settings.on_budget == "refuse":
        raise BudgetExceededError(
            f"privacy.epsilon: the planned run (q = {plan.sample_rate:.6g}, T = {plan.steps} steps, "
            f"delta = {settings.delta:g}) spends epsilon {spent.epsilon:.6g} > target {target:g} with "
            f"{mechanism.name} noise ({source}); raise the target or the noise, or lower the steps or batch size"
        )
    return PrivacyPlan(
        mechanism, source, target, settings.delta, settings.accountant, spent, plan.sample_rate, plan.steps
    )


class BudgetGuard:
    """Tracks epsilon step by step and forbids any step that would exceed the target."""

    def __init__(self, plan: PrivacyPlan) -> None:
        self.target = plan.target_epsilon
        self.ledger = PrivacyLedger(
            plan.mechanism, sample_rate=plan.sample_rate, delta=plan.delta, accountant=get_accountant(plan.accountant)
        )
        self._next: PrivacySpent | None = None
        self.spent = self.ledger.epsilon_after(0)

    @property
    def steps(self) -> int:
        return self.ledger.steps

    def allows_next_step(self) -> bool:
        """Whether epsilon after one more step is still ``<= target``."""
        self._next = self.ledger.epsilon_after(self.ledger.steps + 1)
        return self._next.epsilon <= self.target

    def record_step(self) -> PrivacySpent:
        """Count one noisy release; returns the epsilon spent so far."""
        nxt = self._next if self._next is not None else self.ledger.epsilon_after(self.ledger.steps + 1)
        self.ledger.step()
        self._next = None
        self.spent = nxt
        return nxt

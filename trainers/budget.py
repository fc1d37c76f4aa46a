"""The run's step plan (sample rate, steps), its noise, and the privacy budget guard.

* :func:`make_step_plan` -- ``q = B / N`` (expected batch size over training examples) and
  ``T = steps`` or ``ceil(epochs / q)``.
* :func:`resolve_mechanism` -- the noise from explicit parameters, a search result file, or a
  calibration to the target for this plan.
* :func:`plan_noise` -- epsilon of the whole planned run, checked *before* the first step:
  above the target, the trial refuses to start (``on_budget: refuse``; an
  :class:`~noise_search.errors.InputError` giving both numbers).
* :class:`BudgetGuard` -- during training, the run's accountant: attached to the DP
  optimizer's step, it composes one step event (:mod:`noise_search.events`) per noisy release,
  and tells the loop whether one more step stays within the target (the loop stops *before* a
  step that would exceed it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from noise_search.accountants import PrivacySpent, check_steps_supported, compute_epsilon, get_accountant
from noise_search.calibration import calibrate
from noise_search.errors import InputError, LmoDpError, ParameterError
from noise_search.events import DpEvent, PoissonSampledDpEvent, mechanism_event
from noise_search.mechanisms import Mechanism
from noise_search.search_result import SearchResult
from trainers.settings import PrivacySettings


class BudgetExceededError(InputError):
    """The planned run would spend more than the target epsilon."""


@dataclass(frozen=True)
class StepPlan:
    """Poisson sampling rate ``q = batch_size / n_train`` and the number of steps ``T``."""

    n_train: int
    batch_size: int
    sample_rate: float
    steps: int


def make_step_plan(n_train: int, batch_size: int, *, epochs: float = 1.0, steps: int | None = None) -> StepPlan:
    if n_train < 1:
        raise ParameterError("data.max_train_examples", "the training split is empty")
    if batch_size > n_train:
        raise ParameterError(
            "training.batch_size", f"must be <= the number of training examples ({n_train}), got {batch_size}"
        )
    q = batch_size / n_train
    t = steps if steps is not None else max(1, math.ceil(epochs / q - 1e-9))
    return StepPlan(n_train, batch_size, q, int(t))


@dataclass(frozen=True)
class NoisePlan:
    """The noise of a run and the epsilon its full plan spends."""

    mechanism: Mechanism
    source: str
    target_epsilon: float
    delta: float
    accountant: str
    planned: PrivacySpent
    sample_rate: float
    steps: int


def resolve_mechanism(settings: PrivacySettings, plan: StepPlan) -> tuple[Mechanism, str]:
    """The run's mechanism and where it came from (``params``, ``search_result:FILE``, ``calibrated``)."""
    eps = float(settings.epsilon)  # type: ignore[arg-type]
    if settings.search_result is not None:
        mech = SearchResult.load(settings.search_result).require(settings.mechanism, eps)
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
    if settings.calibrate:  # a mechanism rescaled along its own noise family (an LMO's scale of u)
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


log = logging.getLogger("lmo_dp.privacy")


def check_delta(delta: float, n_train: int, *, allow: bool, field: str = "privacy.delta", warn: bool = True) -> None:
    """Refuse ``delta >= 1/N`` (unless ``allow``): a mechanism that publishes one random example
    in the clear is (0, 1/N)-DP, so such a delta promises nothing. Warn when
    ``delta > 1/(10 N)``, above the usual advice."""
    if n_train < 1:
        return
    if delta >= 1.0 / n_train and not allow:
        raise ParameterError(
            field,
            f"{delta:g} is >= 1/N = {1.0 / n_train:.3g} for N = {n_train} training examples (such a delta allows "
            f"releasing an example in the clear); use a delta below {1.0 / (10 * n_train):.3g}, or set "
            "privacy.allow_large_delta: true",
        )
    if warn and delta > 1.0 / (10 * n_train):
        log.warning(
            "%s = %g is above 1/(10 N) = %.3g for N = %d training examples: the usual advice is delta << 1/N",
            field, delta, 1.0 / (10 * n_train), n_train,
        )  # fmt: skip


def plan_noise(settings: PrivacySettings, plan: StepPlan, mechanism: Mechanism | None = None) -> NoisePlan:
    """Account the whole plan; refuse (``on_budget: refuse``) if it exceeds the target, or if
    ``delta >= 1/N`` without ``allow_large_delta`` (:func:`check_delta`)."""
    check_delta(settings.delta, plan.n_train, allow=settings.allow_large_delta)
    check_steps_supported(settings.accountant, plan.steps, "privacy.accountant")
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
    return NoisePlan(
        mechanism, source, target, settings.delta, settings.accountant, spent, plan.sample_rate, plan.steps
    )


@dataclass(frozen=True)
class BudgetState:
    """What a checkpoint keeps of a :class:`BudgetGuard`."""

    steps: int  #: noisy step events composed so far (>= 0)
    epsilon: float  #: epsilon spent after them, at the run's delta (0.0 before any step)


#: Relative difference allowed between a checkpoint's epsilon and the one recomposed from it on
#: restore: the same arithmetic gives the same float on one machine; another machine's maths
#: library may differ in the last bits, while one step more or less changes epsilon by far more.
RESTORE_REL_TOL = 1e-9


class BudgetGuard:
    """The run's accountant and its budget.

    ``step_event`` is one Poisson-sampled release of the run's mechanism. :meth:`attach` makes
    the DP optimizer compose it after every noisy step (Opacus's step hook: once per step, also
    when a batch is processed in several passes); :meth:`allows_next_step` answers, before a
    step, whether the epsilon after it stays ``<= target``.
    """

    def __init__(self, plan: NoisePlan) -> None:
        self.target = plan.target_epsilon
        self.delta = plan.delta
        step: DpEvent = mechanism_event(plan.mechanism)
        self.step_event = PoissonSampledDpEvent(plan.sample_rate, step) if plan.sample_rate < 1.0 else step
        self.accountant = get_accountant(plan.accountant)
        self._next: PrivacySpent | None = None
        self.spent = self.accountant.spent(self.delta)

    @property
    def steps(self) -> int:
        """Noisy steps composed so far."""
        return self.accountant.releases

    def next_spent(self) -> PrivacySpent:
        """Epsilon after one more step (nothing is composed)."""
        if self._next is None:
            self._next = self.accountant.spent_with(self.step_event, self.delta)
        return self._next

    def allows_next_step(self) -> bool:
        """Whether epsilon after one more step is still ``<= target``."""
        return self.next_spent().epsilon <= self.target

    def record_step(self, _optimizer: Any = None) -> PrivacySpent:
        """Compose one noisy step; returns the epsilon spent so far."""
        nxt = self.next_spent()
        self.accountant.compose(self.step_event)
        self._next = None
        self.spent = nxt
        return nxt

    def attach(self, optimizer: Any) -> None:
        """Compose a step every time ``optimizer`` (an Opacus ``DPOptimizer``) adds its noise."""
        optimizer.attach_step_hook(self.record_step)

    def state(self) -> BudgetState:
        """The step events composed so far and the epsilon they spend."""
        return BudgetState(self.steps, self.spent.epsilon)

    def restore(self, state: BudgetState) -> None:
        """Compose ``state.steps`` step events into this (fresh) guard's accountant.

        Raises :class:`~noise_search.errors.LmoDpError` when the guard has already composed
        steps, or when the recomposed epsilon differs from ``state.epsilon`` by more than a
        relative :data:`RESTORE_REL_TOL` (the checkpoint does not describe this run's noise).
        The guard then reports the recomposed value (with its order).
        """
        if self.steps:
            raise LmoDpError(f"accounting: cannot restore a checkpoint into a guard with {self.steps} steps composed")
        if state.steps < 0:
            raise LmoDpError(f"accounting: a checkpoint cannot hold {state.steps} composed steps")
        if state.steps:
            self.accountant.compose(self.step_event, count=state.steps)
        self._next = None
        self.spent = self.accountant.spent(self.delta)
        if not math.isclose(self.spent.epsilon, state.epsilon, rel_tol=RESTORE_REL_TOL, abs_tol=0.0):
            raise LmoDpError(
                f"accounting: {state.steps} step events recompose to epsilon {self.spent.epsilon!r}, "
                f"but the checkpoint recorded {state.epsilon!r}"
            )

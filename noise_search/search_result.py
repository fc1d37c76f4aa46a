"""The noise-search result: typed rows, and the file ``lmo-dp search --out FILE`` writes.

A :class:`SearchRow` per target epsilon holds the best LMO (or none: infeasible), the
calibrated Laplace and Gaussian baselines (:class:`BaselineEntry`) and the dominance note; a
:class:`SearchResult` is the rows plus the search's settings. Both are built once -- by the
search, or from a file -- and passed around typed; ``to_dict`` gives the file/JSON form.

File schema (one JSON object; the ``--json`` output of ``lmo-dp search`` plus ``settings``)::

    {
      "settings": {"delta": D, "sample_rate": Q, "steps": T, "objective": "mean-abs",
                   "gamma": G | null, "space": "paper", "strategy": "grid", ...},
      "results": [
        {"epsilon_target": E, "feasible": true,
         "epsilon": E_lmo, "order": A, "objective": V,
         "params": {"a1": .., "a3": .., "a4": .., "G_k": .., "G_theta": .., "E_lambda": ..,
                    "U_a": .., "U_b": .., "components": [...], "variant": "per_coordinate"},
         "source": "grid" | "optimize" (+ "+hidden-u" when rescaled), "mean_u": ..,
         "lmo_accountant": "rdp-hidden-u", "lmo_rdp": {"params": .., "epsilon": .., ...}  (rescaled only),
         "laplace": {"u0": U0, "u": U0, "epsilon": .., "order": .., "objective": ..},
         "gaussian": {"sigma": S, "epsilon": .., "order": .., "objective": .., "accountant": "rdp"},
         "dominated_by": [...], "note": "..."},
        ...
      ],
      "evaluated": N, "seconds": S
    }

The Laplace entry holds its inverse scale as ``u0`` and, for tools written before that name,
as ``u`` beside it (deprecated; a file with only ``u`` is still read). An infeasible target has ``"feasible": false``
and ``"params": null`` (the Laplace and Gaussian entries are still present). A baseline that
could not be calibrated has its parameter ``null`` and an ``error``. The parameters were
searched for the ``settings``' sample rate and steps; a trainer must still account its own plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noise_search.errors import InputError
from noise_search.mechanisms import LMO, Gaussian, Laplace, Mechanism, mechanism_class
from noise_search.user_files import load_json_file


@dataclass(frozen=True)
class BaselineEntry:
    """A calibrated baseline (Laplace or Gaussian) for one target, or why there is none (``error``)."""

    family: str  #: the mechanism's name
    mechanism: Mechanism | None
    epsilon: float | None = None
    order: float | None = None
    objective: float | None = None
    accountant: str = "rdp"
    error: str | None = None

    @property
    def value(self) -> float | None:
        """The value of the mechanism's scalar noise parameter (``u0``, ``sigma``)."""
        return None if self.mechanism is None else self.mechanism.noise_value()

    def _parameter_keys(self) -> tuple[str, ...]:
        """The file's keys of the noise parameter: its name, then its deprecated aliases."""
        p = mechanism_class(self.family).noise_parameter
        assert p is not None, f"{self.family} has no scalar noise parameter"
        param = mechanism_class(self.family).parameter(p.name)
        return (param.name, *param.aliases)

    def to_dict(self) -> dict[str, Any]:
        keys = dict.fromkeys(self._parameter_keys(), self.value)
        if self.mechanism is None:
            return {**keys, "accountant": self.accountant, "error": self.error}
        return {
            **keys,
            "epsilon": self.epsilon,
            "order": self.order,
            "objective": self.objective,
            "accountant": self.accountant,
        }

    @classmethod
    def from_dict(cls, family: str, data: Any, source: str) -> BaselineEntry:
        if not isinstance(data, dict):
            raise InputError(f"{source}: the {family} entry is not an object")
        keys = cls(family, None)._parameter_keys()
        value = next((data[k] for k in keys if data.get(k) is not None), None)
        mech = None if value is None else mechanism_class(family).from_params({keys[0]: value}, source=source)
        return cls(
            family,
            mech,
            data.get("epsilon"),
            data.get("order"),
            data.get("objective"),
            data.get("accountant", "rdp"),
            data.get("error"),
        )


@dataclass(frozen=True)
class TightOutlook:
    """Could any accountant make the row's LMO beat Laplace? (searches under a tighter accountant)

    ``epsilon_lower_bound`` is the least epsilon any sound accountant could give the LMO
    (:mod:`noise_search.lower_bound`; a lower bound, never a guarantee); ``laplace`` is a Laplace
    calibrated under the tighter accountant to it; ``could_win`` is whether the LMO's objective
    beats that Laplace's (``False``: no accountant can make this LMO win; ``None``: unknown).
    """

    epsilon_lower_bound: float | None
    laplace: BaselineEntry
    could_win: bool | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "lmo_epsilon_lower_bound": self.epsilon_lower_bound,
            "laplace_at_lower_bound": self.laplace.to_dict(),
            "lmo_could_win": self.could_win,
        }
        return out if self.error is None else {**out, "error": self.error}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> TightOutlook:
        if not isinstance(data, dict):
            raise InputError(f"{source}: 'tight_outlook' is not an object")
        return cls(
            data.get("lmo_epsilon_lower_bound"),
            BaselineEntry.from_dict(Laplace.name, data.get("laplace_at_lower_bound") or {}, source),
            data.get("lmo_could_win"),
            data.get("error"),
        )


@dataclass(frozen=True)
class LmoEntry:
    """An LMO and its epsilon under one accountant (the RDP pick beside a rescaled one)."""

    mechanism: LMO
    epsilon: float
    order: float | None
    objective: float
    accountant: str = "rdp"

    @classmethod
    def of(cls, pick: Any) -> LmoEntry:
        """From a search's pick (anything with ``mechanism``, ``spent`` and ``objective``)."""
        return cls(pick.mechanism, pick.spent.epsilon, pick.spent.order, pick.objective, pick.spent.accountant)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.mechanism.params(),
            "epsilon": self.epsilon,
            "order": self.order,
            "objective": self.objective,
            "accountant": self.accountant,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str) -> LmoEntry:
        if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
            raise InputError(f"{source}: 'lmo_rdp' needs 'params'")
        return cls(
            LMO.from_dict(data["params"], source=f"{source} lmo_rdp"),
            data.get("epsilon"),
            data.get("order"),
            data.get("objective"),
            data.get("accountant", "rdp"),
        )


@dataclass(frozen=True)
class SearchRow:
    """The search's answer for one target epsilon."""

    epsilon_target: float
    lmo: LMO | None  #: the best LMO meeting the target (None: infeasible)
    epsilon: float | None  #: the LMO's epsilon (under ``lmo_accountant``)
    order: float | None
    objective: float | None
    source: str | None  #: ``grid`` or ``optimize``
    laplace: BaselineEntry
    gaussian: BaselineEntry
    gaussian_rdp: BaselineEntry | None = None  #: the RDP Gaussian when ``gaussian`` is PRV/PLD
    laplace_rdp: BaselineEntry | None = None  #: the RDP Laplace when ``laplace`` is PLD
    dominated_by: tuple[str, ...] = ()
    note: str | None = None
    outlook: TightOutlook | None = None  #: under a tighter accountant: could any accountant help the LMO?
    lmo_accountant: str = "rdp"  #: the accountant of ``epsilon``
    lmo_rdp: LmoEntry | None = None  #: the RDP pick, when ``lmo`` is it rescaled under ``rdp-hidden-u``
    #: keys of a file's row this class does not model, kept as they were
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def feasible(self) -> bool:
        return self.lmo is not None

    def baseline(self, family: str) -> BaselineEntry:
        return self.laplace if family == self.laplace.family else self.gaussian

    def mechanisms(self) -> dict[str, Mechanism | None]:
        """The row's noise by mechanism name: the searched LMO and the calibrated baselines
        (None where there is none)."""
        return {LMO.name: self.lmo, self.laplace.family: self.laplace.mechanism,
                self.gaussian.family: self.gaussian.mechanism}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epsilon_target": self.epsilon_target, "feasible": self.feasible}
        if self.lmo is None:
            out.update({"epsilon": None, "order": None, "objective": None, "params": None, "source": None})
        else:
            out.update(
                {
                    "epsilon": self.epsilon,
                    "order": self.order,
                    "objective": self.objective,
                    "params": self.lmo.params(),
                    "source": self.source,
                    "mean_u": self.lmo.mean_u(),
                }
            )
        if self.laplace_rdp is not None:
            out["laplace_rdp"] = self.laplace_rdp.to_dict()
        out[self.laplace.family] = self.laplace.to_dict()
        if self.gaussian_rdp is not None:
            out["gaussian_rdp"] = self.gaussian_rdp.to_dict()
        out[self.gaussian.family] = self.gaussian.to_dict()
        if self.lmo is not None and self.lmo_accountant != "rdp":
            out["lmo_accountant"] = self.lmo_accountant
        if self.lmo_rdp is not None:
            out["lmo_rdp"] = self.lmo_rdp.to_dict()
        out["dominated_by"] = list(self.dominated_by)
        if self.outlook is not None:
            out["tight_outlook"] = self.outlook.to_dict()
        out["note"] = self.note
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str) -> SearchRow:
        if not isinstance(data, dict) or "epsilon_target" not in data:
            raise InputError(f"{source}: has no 'epsilon_target'")
        params = data.get("params")
        feasible = data.get("feasible", params is not None)
        lmo = LMO.from_dict(params, source=f"{source} params") if feasible and params else None
        known = {
            "epsilon_target", "feasible", "epsilon", "order", "objective", "params", "source", "mean_u",
            Laplace.name, Gaussian.name, "gaussian_rdp", "laplace_rdp", "dominated_by", "note", "tight_outlook",
            "lmo_accountant", "lmo_rdp",
        }  # fmt: skip
        return cls(
            epsilon_target=float(data["epsilon_target"]),
            lmo=lmo,
            epsilon=data.get("epsilon") if lmo else None,
            order=data.get("order") if lmo else None,
            objective=data.get("objective") if lmo else None,
            source=data.get("source") if lmo else None,
            laplace=BaselineEntry.from_dict(Laplace.name, data.get(Laplace.name) or {}, source),
            gaussian=BaselineEntry.from_dict(Gaussian.name, data.get(Gaussian.name) or {}, source),
            gaussian_rdp=None
            if data.get("gaussian_rdp") is None
            else BaselineEntry.from_dict(Gaussian.name, data["gaussian_rdp"], source),
            laplace_rdp=None
            if data.get("laplace_rdp") is None
            else BaselineEntry.from_dict(Laplace.name, data["laplace_rdp"], source),
            dominated_by=tuple(data.get("dominated_by") or ()),
            note=data.get("note"),
            outlook=None
            if data.get("tight_outlook") is None
            else TightOutlook.from_dict(data["tight_outlook"], source),
            lmo_accountant=str(data.get("lmo_accountant", "rdp")),
            lmo_rdp=None if data.get("lmo_rdp") is None else LmoEntry.from_dict(data["lmo_rdp"], source),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class SearchResult:
    """A search's settings and rows (from a search or a result file)."""

    settings: dict[str, Any]
    rows: tuple[SearchRow, ...]
    source: str = "search result"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "search result") -> SearchResult:
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise InputError(f"{source}: not a search result (expected an object with a 'results' list)")
        rows = tuple(SearchRow.from_dict(row, f"{source}: results[{i}]") for i, row in enumerate(data["results"]))
        return cls(dict(data.get("settings") or {}), rows, source)

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        """A result file written by ``lmo-dp search --out`` (a regular file of at most 64 MiB,
        no key given twice)."""
        return cls.from_dict(load_json_file(path, "privacy.search_result", max_bytes=64 << 20), source=str(path))

    def targets(self) -> list[float]:
        return [r.epsilon_target for r in self.rows]

    def row(self, epsilon_target: float) -> SearchRow:
        """The row for ``epsilon_target`` (matched to 1e-9 relative)."""
        for r in self.rows:
            if math.isclose(r.epsilon_target, float(epsilon_target), rel_tol=1e-9, abs_tol=0.0):
                return r
        have = ", ".join(f"{t:g}" for t in self.targets())
        raise InputError(f"epsilon: {self.source} has no result for target {epsilon_target:g} (has: {have})")

    def covers(self, family: str) -> bool:
        """Whether the search computes noise for the mechanism named ``family`` (the LMO and its
        baselines); other mechanisms are calibrated where they are used."""
        return bool(self.rows) and family in self.rows[0].mechanisms()

    def mechanism(self, family: str, epsilon_target: float) -> Mechanism | None:
        """The searched LMO, or the calibrated Laplace / Gaussian, for ``epsilon_target``;
        None where the search found none (an infeasible LMO target, a failed calibration)."""
        row = self.row(epsilon_target)
        found = row.mechanisms()
        if family not in found:
            raise InputError(f"mechanism: must be one of {', '.join(found)}, got {family!r}")
        return found[family]

    def require(self, family: str, epsilon_target: float) -> Mechanism:
        """:meth:`mechanism`, or :class:`InputError` saying there is none."""
        mech = self.mechanism(family, epsilon_target)
        if mech is None:
            what = "LMO parameters meeting" if family == LMO.name else f"calibrated {family} noise for"
            raise InputError(f"epsilon: {self.source} found no {what} target {epsilon_target:g} (infeasible)")
        return mech

    def to_dict(self) -> dict[str, Any]:
        return {"settings": dict(self.settings), "results": [r.to_dict() for r in self.rows]}

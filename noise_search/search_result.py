"""The noise-search result file: what ``lmo-dp search --out FILE`` writes and trainers read.

Schema (one JSON object; the ``--json`` output of ``lmo-dp search`` plus ``settings``)::

    {
      "settings": {"delta": D, "sample_rate": Q, "steps": T, "objective": "mean-abs",
                   "gamma": G | null, "space": "paper", "strategy": "grid", ...},
      "results": [
        {"epsilon_target": E, "feasible": true,
         "epsilon": E_lmo, "order": A, "objective": V,
         "params": {"a1": .., "a3": .., "a4": .., "G_k": .., "G_theta": .., "E_lambda": ..,
                    "U_a": .., "U_b": .., "components": [...], "variant": "per_coordinate"},
         "laplace": {"u": U0, "epsilon": .., "order": .., "objective": ..},
         "gaussian": {"sigma": S, "epsilon": .., "order": .., "objective": .., "accountant": "rdp"},
         ...},
        ...
      ],
      "evaluated": N, "seconds": S
    }

An infeasible target has ``"feasible": false`` and ``"params": null`` (the Laplace and
Gaussian entries are still present). The parameters were searched for the ``settings``'
sample rate and steps; a trainer must still account its own plan with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noise_search.errors import InputError, load_json_file
from noise_search.mechanisms import LMO, Gaussian, Laplace, Mechanism


@dataclass(frozen=True)
class SearchResult:
    """A parsed search result file."""

    settings: dict[str, Any]
    results: list[dict[str, Any]]
    source: str = "search result"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "search result") -> SearchResult:
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise InputError(f"{source}: not a search result (expected an object with a 'results' list)")
        for i, row in enumerate(data["results"]):
            if not isinstance(row, dict) or "epsilon_target" not in row:
                raise InputError(f"{source}: results[{i}] has no 'epsilon_target'")
        return cls(dict(data.get("settings") or {}), list(data["results"]), source)

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        return cls.from_dict(load_json_file(path, "search_result"), source=str(path))

    def targets(self) -> list[float]:
        return [float(r["epsilon_target"]) for r in self.results]

    def row(self, epsilon_target: float) -> dict[str, Any]:
        """The row for ``epsilon_target`` (matched to 1e-9 relative)."""
        for r in self.results:
            if math.isclose(float(r["epsilon_target"]), float(epsilon_target), rel_tol=1e-9, abs_tol=0.0):
                return r
        have = ", ".join(f"{t:g}" for t in self.targets())
        raise InputError(f"epsilon: {self.source} has no result for target {epsilon_target:g} (has: {have})")

    def mechanism(self, family: str, epsilon_target: float) -> Mechanism:
        """The searched LMO, or the calibrated Laplace / Gaussian, for ``epsilon_target``."""
        row = self.row(epsilon_target)
        if family == "lmo":
            if not row.get("feasible", row.get("params") is not None) or not row.get("params"):
                raise InputError(
                    f"epsilon: {self.source} found no LMO parameters meeting target {epsilon_target:g} (infeasible)"
                )
            return LMO.from_dict(row["params"], source=f"{self.source} params")
        if family == "laplace":
            return Laplace(row["laplace"]["u"])
        if family == "gaussian":
            return Gaussian(row["gaussian"]["sigma"])
        raise InputError(f"mechanism: must be one of gaussian, laplace, lmo, got {family!r}")

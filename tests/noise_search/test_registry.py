"""The mechanism registry: built-ins, classes registered in-process, and entry-point plug-ins
found on ``sys.path`` (a real ``*.dist-info`` folder written to a temporary directory), broken
ones included."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import Laplace, Mechanism, Parameter, registry


@pytest.fixture
def fresh_registry(monkeypatch) -> Iterator[None]:
    """The registry reloaded from scratch for the test, and as it was afterwards."""
    monkeypatch.setattr(registry, "_classes", {})
    monkeypatch.setattr(registry, "_broken", {})
    monkeypatch.setattr(registry, "_loaded", False)
    yield


def _install(site: Path, dist: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    """A distribution as pip leaves it: a dist-info with its entry points, and its modules."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
    info.joinpath("entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}")
    for name, text in modules.items():
        site.joinpath(f"{name}.py").write_text(text)


PLUGIN = """
from dataclasses import dataclass
from typing import ClassVar
from noise_search.mechanisms import Laplace

@dataclass(frozen=True)
class Wide(Laplace):
    name: ClassVar[str] = "wide-laplace"
"""


def test_builtins_come_first_and_by_class():
    names = registry.mechanism_names()
    assert names[:3] == registry.builtin_names() == ("gaussian", "laplace", "lmo")
    assert registry.mechanism_class("laplace") is Laplace
    with pytest.raises(ParameterError, match="--mechanism: must be one of gaussian, laplace, lmo"):
        registry.mechanism_class("cauchy", "--mechanism")


def test_entry_point_plugins_load_and_a_broken_one_is_left_out_with_its_reason(
    fresh_registry, tmp_path, monkeypatch, caplog
):
    site = tmp_path / "site"
    _install(site, "wide_plugin", {"wide-laplace": "wide_plugin:Wide"}, {"wide_plugin": PLUGIN})
    _install(site, "broken_plugin", {"broken": "broken_plugin:Nothing"}, {"broken_plugin": "import no_such_module\n"})
    _install(site, "misnamed_plugin", {"other-name": "wide_plugin:Wide"}, {})
    monkeypatch.syspath_prepend(str(site))
    names = registry.mechanism_names()
    assert "wide-laplace" in names and "broken" not in names and "other-name" not in names
    wide = registry.mechanism_from_dict({"mechanism": "wide-laplace", "u0": 0.5})
    assert wide.name == "wide-laplace" and wide.u0 == 0.5
    broken = registry.broken_plugins()
    assert "ModuleNotFoundError" in broken["broken"] and "no_such_module" in broken["broken"]
    assert "is not the entry point's" in broken["other-name"]
    with pytest.raises(ParameterError, match=re.escape("privacy.mechanism: plug-in 'broken'")):
        registry.mechanism_class("broken", "privacy.mechanism")
    assert any("left out" in r.getMessage() for r in caplog.records)
    sys.modules.pop("wide_plugin", None)


@dataclass(frozen=True)
class _Half(Mechanism):
    scale: float
    name: ClassVar[str] = "half-test"
    norm: ClassVar[str] = "l1"
    parameters: ClassVar[tuple[Parameter, ...]] = (Parameter("scale", "C", "a scale", gt=0.0),)


def test_register_and_what_it_refuses(fresh_registry):
    assert registry.register(_Half) is _Half and registry.mechanism_class("half-test") is _Half
    with pytest.raises(InputError, match="is taken by"):
        registry.register(type("Other", (_Half,), {}))
    for bad, needle in [
        (int, "is not a subclass"),
        (type("NoName", (_Half,), {"name": "Has Space"}), "lower-case letters"),
        (type("Reserved", (_Half,), {"name": "none"}), "lower-case letters"),
        (type("BadNorm", (_Half,), {"name": "bad-norm", "norm": "l3"}), "norm must be 'l1' or 'l2'"),
    ]:
        with pytest.raises(InputError, match=needle):
            registry.register(bad)
    registry.unregister("half-test")
    assert "half-test" not in registry.mechanism_names()
    with pytest.raises(ValueError, match="built in"):
        registry.unregister("laplace")

"""The one registry of noise mechanisms: the built-ins, and plug-ins found through entry points.

Every place that offers or reads a mechanism by name -- the CLI's ``--mechanism`` choices, the
trial and sweep configs, the recipes, the search's baselines, the report's legend -- asks this
registry, so a mechanism is added in one place.

Plug-ins: an installed distribution declares, in its ``pyproject.toml``::

    [project.entry-points."lmo_dp.mechanisms"]
    laplace-b = "lmo_dp_laplace_b:LaplaceB"

and the class (a :class:`~noise_search.mechanisms.base.Mechanism` whose ``name`` is the entry
point's name) is loaded the first time the registry is asked. A plug-in that cannot be loaded
(an import error, something that is not a mechanism class, a name already taken) never breaks
the others: it is left out with one warning line naming its entry point, and asking for it by
name is an :class:`~noise_search.errors.InputError` giving the same reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms.base import Mechanism, Parameter
from noise_search.mechanisms.gaussian import Gaussian
from noise_search.mechanisms.laplace import Laplace
from noise_search.mechanisms.lmo import LMO

#: The entry-point group plug-in mechanisms register under.
ENTRY_POINT_GROUP = "lmo_dp.mechanisms"
#: The mechanisms lmo-dp ships, in the order outputs list them.
BUILTINS: tuple[type[Mechanism], ...] = (Gaussian, Laplace, LMO)
#: A mechanism's name: 1-32 lower-case letters, digits or ``-``, starting with a letter.
NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
#: Names a mechanism cannot take (the non-private reference).
RESERVED = ("none",)

log = logging.getLogger(__name__)

_classes: dict[str, type[Mechanism]] = {}
_broken: dict[str, str] = {}  #: entry-point name -> why it could not be loaded
_loaded = False


def check_class(cls: Any, where: str) -> type[Mechanism]:
    """``cls`` if it is a usable mechanism class, else :class:`InputError` saying why (``where``
    names the class's origin, e.g. its entry point)."""
    if not isinstance(cls, type) or not issubclass(cls, Mechanism):
        raise InputError(f"{where}: {cls!r} is not a subclass of noise_search.mechanisms.Mechanism")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED:
        raise InputError(f"{where}: the class's name must be 1-32 lower-case letters, digits or '-', got {name!r}")
    if getattr(cls, "norm", None) not in ("l1", "l2"):
        raise InputError(f"{where}: {name}.norm must be 'l1' or 'l2', got {getattr(cls, 'norm', None)!r}")
    if not all(isinstance(p, Parameter) for p in cls.parameters) or not cls.parameters:
        raise InputError(f"{where}: {name}.parameters must list its parameters as Parameter objects")
    p = cls.noise_parameter
    if p is not None and p.name not in {q.name for q in cls.parameters}:
        raise InputError(f"{where}: {name}.noise_parameter {p.name!r} is not one of its parameters")
    return cls


def register(cls: type[Mechanism], *, where: str | None = None) -> type[Mechanism]:
    """Add ``cls`` to the registry (usable as a class decorator); a name already taken by another
    class is refused (:class:`InputError`)."""
    _load()
    check_class(cls, where or f"mechanism class {getattr(cls, '__qualname__', cls)!r}")
    taken = _classes.get(cls.name)
    if taken is not None and taken is not cls:
        raise InputError(f"{where or cls.__qualname__}: the name {cls.name!r} is taken by {taken.__module__}")
    _classes[cls.name] = cls
    _broken.pop(cls.name, None)
    return cls


def unregister(name: str) -> None:
    """Remove a plug-in (tests); the built-ins stay."""
    if name in {c.name for c in BUILTINS}:
        raise ValueError(f"{name} is built in")
    _classes.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for cls in BUILTINS:
        _classes[cls.name] = cls
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"plug-in {ep.name!r} (entry point {ep.value} in {ENTRY_POINT_GROUP})"
        try:
            cls = ep.load()
            if getattr(cls, "name", None) != ep.name:
                raise InputError(f"{where}: the class's name {getattr(cls, 'name', None)!r} is not the entry point's")
            register(cls, where=where)
        except Exception as exc:  # whatever a broken plug-in raises, the others go on
            reason = str(exc) if isinstance(exc, InputError) else f"{where}: {type(exc).__name__}: {exc}"
            _broken[ep.name] = " ".join(reason.split())
            log.warning("%s; it is left out", _broken[ep.name])


def mechanisms() -> Mapping[str, type[Mechanism]]:
    """Every registered mechanism by name: the built-ins first, then plug-ins."""
    _load()
    return dict(_classes)


def mechanism_names() -> tuple[str, ...]:
    return tuple(mechanisms())


def builtin_names() -> tuple[str, ...]:
    return tuple(cls.name for cls in BUILTINS)


def broken_plugins() -> Mapping[str, str]:
    """Plug-ins that could not be loaded, by entry-point name, with why."""
    _load()
    return dict(_broken)


def mechanism_class(name: str, field: str = "mechanism") -> type[Mechanism]:
    """The class registered as ``name``, or :class:`ParameterError` naming ``field`` (and, for a
    plug-in that failed to load, why)."""
    classes = mechanisms()
    if isinstance(name, str) and name in classes:
        return classes[name]
    if isinstance(name, str) and name in _broken:
        raise ParameterError(field, _broken[name])
    raise ParameterError(field, f"must be one of {', '.join(classes)}, got {name!r}")


def mechanism_from_dict(data: Mapping[str, Any], *, source: str = "mechanism") -> Mechanism:
    """Any registered mechanism from ``{"mechanism": name, ...parameters}``."""
    name = str(data.get("mechanism", "")).lower()
    cls = mechanism_class(name or None, "mechanism")  # type: ignore[arg-type]
    return cls.from_params({k: v for k, v in data.items() if k != "mechanism"}, source=source)

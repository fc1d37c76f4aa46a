"""Offline validation of a Ray cluster launcher config (``cluster.yaml``).

``ray up`` prepares a config in two stages:

1. offline: the provider's ``defaults.yaml`` is merged under the config, the common
   ``setup_commands`` go in front of the head and worker lists, and every node type gets
   ``min_workers`` (default 0) and ``max_workers`` (default: the global one; 0 for the head);
   the result is checked against ``ray/autoscaler/ray-schema.json`` plus two cross-field rules
   (the head type is one of the node types; the ``min_workers`` add up to at most the global
   ``max_workers``);
2. online: the AWS provider fills missing node ``resources`` from EC2 ``DescribeInstanceTypes`` and
   creates IAM roles, key pairs, subnets and security groups.

:func:`validate_cluster_config` does stage 1 only, with the defaults and schema files Ray ships
(package data, read through :mod:`importlib.resources`; no private Ray module), so it never
contacts AWS and needs no credentials. Stage 2 is why ``cluster.yaml`` states ``resources`` for
every node type: the schema requires them and only the online step would fill them in. Only
configs in the multi-node-type form (``available_node_types``) are supported.
"""

from __future__ import annotations

import copy
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from noise_search.errors import InputError, one_line
from trainers.yaml_input import load_yaml_file

#: Keys preparation itself reads before the schema is checked.
_NEEDED_FOR_PREPARATION = ("provider",)


def _field_path(parts: list[Any]) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _schema_error_field(error: Any) -> str:
    """The dotted config field a ``jsonschema.ValidationError`` is about."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        patterns = error.schema.get("patternProperties", {})
        extra = sorted(k for k in error.instance if k not in allowed and not patterns)
        if extra:
            return _field_path([*path, extra[0]])
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            return _field_path([*path, missing[0]])
    return _field_path(path)


def _load_yaml(path: Path) -> dict[str, Any]:
    config = load_yaml_file(path, "cluster config", core12=False)  # read as Ray reads it (YAML 1.1)
    if not isinstance(config, dict):
        raise InputError(f"cluster config: {path} must be a YAML mapping, got {type(config).__name__}")
    return config


def known_providers() -> list[str]:
    """Provider types with a ``defaults.yaml`` in the installed Ray, plus ``external``."""
    root = resources.files("ray.autoscaler")
    names = [d.name for d in root.iterdir() if d.is_dir() and d.joinpath("defaults.yaml").is_file()]
    return sorted([*names, "external"])


def provider_defaults(provider: dict[str, Any]) -> dict[str, Any]:
    """The provider's ``defaults.yaml`` (an ``external`` provider has none)."""
    if provider["type"] == "external":
        return {}
    text = resources.files("ray.autoscaler").joinpath(provider["type"], "defaults.yaml").read_text()
    return yaml.safe_load(text) or {}


def _schema() -> dict[str, Any]:
    return json.loads(resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text())


def _check_preparable(config: dict[str, Any]) -> None:
    """Reject what would crash preparation before the schema can name it."""
    for key in _NEEDED_FOR_PREPARATION:
        if key not in config:
            raise InputError(f"{key}: required field missing from the cluster config")
    provider = config["provider"]
    if not isinstance(provider, dict):
        raise InputError(f"provider: must be a mapping, got {type(provider).__name__}")
    if "type" not in provider:
        raise InputError("provider.type: required field missing (e.g. aws)")
    known = known_providers()
    if provider["type"] not in known:
        raise InputError(f"provider.type: unknown provider {provider['type']!r}; Ray knows {', '.join(known)}")
    if "available_node_types" not in config and ("head_node" in config or "worker_nodes" in config):
        raise InputError("available_node_types: required (the legacy head_node / worker_nodes form is not supported)")
    node_types = config.get("available_node_types", {})
    if not isinstance(node_types, dict):
        raise InputError(f"available_node_types: must be a mapping, got {type(node_types).__name__}")
    for name, node in node_types.items():
        if not isinstance(node, dict):
            raise InputError(f"available_node_types.{name}: must be a mapping, got {type(node).__name__}")


def _merged(raw: dict[str, Any]) -> dict[str, Any]:
    """The provider defaults with the config on top (top-level keys replace), and an ``auth``."""
    merged = copy.deepcopy(provider_defaults(raw["provider"]))
    merged.update(copy.deepcopy(raw))
    merged.setdefault("auth", {})
    merged.pop("min_workers", None)
    return merged


def prepare_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Stage 1 of ``ray up``'s preparation (see the module docstring) on a copy of ``raw``."""
    config = _merged(raw)
    for key in ("head_setup_commands", "worker_setup_commands"):
        config[key] = list(config.get("setup_commands", [])) + list(config.get(key, []))
    head = config.get("head_node_type")
    for name, node in config.get("available_node_types", {}).items():
        node.setdefault("min_workers", 0)
        node.setdefault("max_workers", 0 if name == head else config["max_workers"])
    return config


def _raise_schema_error(config: dict[str, Any]) -> None:
    """Raise the first schema error of ``config``, if any, naming its field."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(_schema()).iter_errors(config))
    if error is not None:
        raise InputError(f"{_schema_error_field(error)}: {one_line(error.message)}")


def _check_node_types(config: dict[str, Any]) -> None:
    node_types = config.get("available_node_types")
    if node_types is None:
        return
    if "head_node_type" not in config:
        raise InputError("head_node_type: required when available_node_types is set")
    if config["head_node_type"] not in node_types:
        raise InputError(f"head_node_type: {config['head_node_type']!r} is not one of available_node_types")
    total_min = sum(node.get("min_workers", 0) for node in node_types.values())
    if total_min > config["max_workers"]:
        raise InputError(
            f"max_workers: the global max_workers ({config['max_workers']}) is smaller than the sum of the "
            f"node types' min_workers ({total_min})"
        )


def validate_cluster_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate a cluster launcher YAML offline; return the prepared config (defaults filled in).

    Raises :class:`~noise_search.errors.InputError` with a one-line message that starts with the
    offending field (dotted path, e.g. ``available_node_types.gpu.worker.max_workers``).
    """
    raw = _load_yaml(Path(path))
    _check_preparable(raw)
    try:
        prepared = prepare_config(raw)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # A wrongly typed field can break preparation (e.g. a string for setup_commands): find it
        # with the schema on the config merged with the provider defaults, as preparation would.
        _raise_schema_error(_merged(raw))
        detail = f"missing {exc}" if isinstance(exc, KeyError) else one_line(exc)
        raise InputError(f"cluster config: cannot prepare {path}: {detail}") from exc
    _raise_schema_error(prepared)
    _check_node_types(prepared)
    return prepared


#: Values shipped in cluster.yaml that only stand for the user's own: ``name -> marker``. A value
#: that still contains its marker has not been edited (``ray up`` would start a cluster that cannot
#: reach its tracking server or storage).
PLACEHOLDERS: dict[str, str] = {
    "MLFLOW_TRACKING_URI": "MLFLOW_HOST",
    "LMODP_STORAGE_PATH": "s3://lmodp-artifacts/",
}


def node_environment(config: dict[str, Any]) -> dict[str, str]:
    """``NAME -> value`` of the ``export NAME=value`` lines the setup commands write for every node."""
    env: dict[str, str] = {}
    for command in config.get("setup_commands") or []:
        for match in re.finditer(r"export ([A-Z_][A-Z0-9_]*)=([^'\"\s]+)", str(command)):
            env[match.group(1)] = match.group(2)
    return env


def check_edited(config: dict[str, Any]) -> None:
    """Refuse a config whose node environment still holds a shipped placeholder (:data:`PLACEHOLDERS`)."""
    env = node_environment(config)
    for name, marker in PLACEHOLDERS.items():
        if marker in env.get(name, ""):
            raise InputError(
                f"setup_commands: {name}={env[name]} is the shipped placeholder ({marker}); "
                f"set your own (the lines marked EDIT; see docs/cluster.md step 1)"
            )

"""Offline validation of a Ray cluster launcher config (``cluster.yaml``).

``ray up`` prepares a config in two stages (``ray.autoscaler._private.commands._bootstrap_config``):

1. offline: ``prepare_config`` merges the provider's ``defaults.yaml``, merges ``setup_commands``
   into the head/worker lists and fills per-node-type ``min_workers``/``max_workers``; then
   ``validate_config`` checks the result against ``ray/autoscaler/ray-schema.json`` plus a few
   cross-field rules (head type among the node types, sum of ``min_workers`` <= ``max_workers``);
2. online: the AWS provider fills missing node ``resources`` from EC2 ``DescribeInstanceTypes`` and
   ``bootstrap_config`` creates IAM roles, key pairs, subnets and security groups.

:func:`validate_cluster_config` runs stage 1 only, with Ray's own functions, so it never contacts
AWS and needs no credentials. Stage 2 is why ``cluster.yaml`` states ``resources`` for every node
type: the schema requires them and only the online step would fill them in.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from pathlib import Path
from typing import Any

from noise_search.errors import InputError, one_line
from trainers.config import load_yaml_file

#: Keys ``prepare_config`` itself reads before the schema is checked.
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
    config = load_yaml_file(path, "cluster config")
    if not isinstance(config, dict):
        raise InputError(f"cluster config: {path} must be a YAML mapping, got {type(config).__name__}")
    return config


def _check_preparable(config: dict[str, Any]) -> None:
    """Reject what would crash ``prepare_config`` before the schema can name it."""
    for key in _NEEDED_FOR_PREPARATION:
        if key not in config:
            raise InputError(f"{key}: required field missing from the cluster config")
    provider = config["provider"]
    if not isinstance(provider, dict):
        raise InputError(f"provider: must be a mapping, got {type(provider).__name__}")
    if "type" not in provider:
        raise InputError("provider.type: required field missing (e.g. aws)")
    from ray.autoscaler._private.providers import _DEFAULT_CONFIGS

    known = sorted([*_DEFAULT_CONFIGS, "external"])
    if provider["type"] not in known:
        raise InputError(f"provider.type: unknown provider {provider['type']!r}; Ray knows {', '.join(known)}")
    if "max_workers" not in config or "available_node_types" not in config:
        return  # the defaults supply both
    node_types = config["available_node_types"]
    if not isinstance(node_types, dict):
        raise InputError(f"available_node_types: must be a mapping, got {type(node_types).__name__}")
    for name, node in node_types.items():
        if not isinstance(node, dict):
            raise InputError(f"available_node_types.{name}: must be a mapping, got {type(node).__name__}")


def _raise_schema_error(raw: dict[str, Any]) -> None:
    """Raise the first schema error of ``raw`` merged with its provider's defaults, if any."""
    import json

    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.providers import _get_default_config

    merged = _get_default_config(raw["provider"])
    merged.update(copy.deepcopy(raw))
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(merged))
    if error is not None:
        raise InputError(f"{_schema_error_field(error)}: {one_line(error.message)}")


@contextlib.contextmanager
def _quiet_ray_autoscaler_logs():
    """``prepare_config`` logs INFO lines ("setting max workers ...") through Ray's own handler."""
    logger = logging.getLogger("ray.autoscaler")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def validate_cluster_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate a cluster launcher YAML offline; return the prepared config (defaults filled in).

    Raises :class:`~noise_search.errors.InputError` with a one-line message that starts with the
    offending field (dotted path, e.g. ``available_node_types.gpu.worker.max_workers``).
    """
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load_yaml(Path(path))
    _check_preparable(raw)
    try:
        with _quiet_ray_autoscaler_logs():
            prepared = prepare_config(copy.deepcopy(raw))
    except (KeyError, TypeError, AttributeError, AssertionError, ValueError) as exc:
        # A wrongly typed field can crash preparation (e.g. a string for setup_commands): find it
        # with the schema on the config merged with the provider defaults, as preparation would.
        _raise_schema_error(raw)
        detail = f"missing {exc}" if isinstance(exc, KeyError) else one_line(exc)
        raise InputError(f"cluster config: Ray could not prepare {path}: {detail}") from exc
    try:
        validate_config(prepared)
    except jsonschema.ValidationError as exc:
        raise InputError(f"{_schema_error_field(exc)}: {one_line(exc.message)}") from exc
    except ValueError as exc:
        message = one_line(exc)
        field = "max_workers" if "max_workers" in message else "head_node_type"
        raise InputError(f"{field}: {message}") from exc
    return prepared

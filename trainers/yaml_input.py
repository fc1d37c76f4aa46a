"""YAML config files read strictly: YAML 1.2 scalars, no key given twice, no alias bombs.

PyYAML reads YAML 1.1, where ``1:30`` is the number 90 (base 60), ``yes``, ``no``, ``on``,
``off``, ``y`` and ``n`` are booleans, ``010`` is 8 (octal), ``1_000`` is 1000 and
``2024-01-31`` is a date; a key given twice silently keeps its last value; and a few hundred
bytes of nested aliases expand to millions of items. lmo-dp's configs are read instead with:

* **YAML 1.2 core-schema scalars**: ``true``/``false`` are the only booleans, ``null``/``~``/empty
  the only nulls; integers are decimal (``010`` is ten), ``0o17`` or ``0x1f``; floats are
  ``1.5``, ``1e-5``, ``.5``, ``.inf``, ``.nan``. Anything else plain (``yes``, ``on``, ``1:30``,
  ``1_000``, dates) is text, which a number or boolean field refuses by name.
* **no duplicate keys**, at any depth: the error names the key's path and both lines.
* **bounded aliases**: aliases may add at most :data:`MAX_ALIAS_NODES` nodes to the document
  (counted on the parsed graph, before anything is built), and may not refer to a mapping or
  list that contains them.

Files are read with :func:`noise_search.user_files.read_input_file` (a regular file of at
most 1 MiB, UTF-8). ``core12=False`` keeps PyYAML's YAML 1.1 scalars (for files another tool
reads the same way: Ray's ``cluster.yaml``); duplicate keys and aliases are checked either way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from noise_search.errors import InputError, ParameterError, one_line
from noise_search.user_files import read_input_file

#: Most nodes aliases may add to a document when expanded (a real config adds a few dozen).
MAX_ALIAS_NODES = 10_000

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_MERGE = re.compile(r"^(?:<<)$")


class Core12Loader(_Base):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader with YAML 1.2 core-schema implicit types (module docstring)."""

    yaml_implicit_resolvers: dict = {}  # noqa: RUF012 - PyYAML's own class attribute, replaced whole

    def construct_core_int(self, node: ScalarNode) -> int:
        value = str(self.construct_scalar(node))
        if value.startswith("0o"):
            return int(value[2:], 8)
        if value.startswith("0x"):
            return int(value[2:], 16)
        return int(value, 10)  # YAML 1.2: a leading 0 is decimal, not octal

    def construct_core_float(self, node: ScalarNode) -> float:
        value = str(self.construct_scalar(node)).lower()
        if value.endswith(".inf"):
            return float("-inf") if value.startswith("-") else float("inf")
        if value == ".nan":
            return float("nan")
        return float(value)


for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", _BOOL, list("tTfF")),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789")),
    ("tag:yaml.org,2002:merge", _MERGE, ["<"]),
):
    Core12Loader.add_implicit_resolver(_tag, _regexp, _first)
Core12Loader.add_constructor("tag:yaml.org,2002:int", Core12Loader.construct_core_int)
Core12Loader.add_constructor("tag:yaml.org,2002:float", Core12Loader.construct_core_float)


class Yaml11Loader(_Base):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader as it is (YAML 1.1 scalars)."""


def _key_text(node: Node) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) else None


def check_node_graph(root: Node, source: str) -> None:
    """Refuse a key given twice in one mapping, an alias that refers to its own container, and
    aliases that add more than :data:`MAX_ALIAS_NODES` nodes (:class:`InputError`)."""
    expanded: dict[int, int] = {}  # node id -> its size with aliases expanded
    on_path: set[int] = set()
    distinct = 0

    def size(node: Node, path: str) -> int:
        nonlocal distinct
        key = id(node)
        if key in expanded:
            return expanded[key]
        if key in on_path:
            raise InputError(f"{path or source}: an alias refers to a mapping or list that contains it ({source})")
        on_path.add(key)
        distinct += 1
        total = 1
        if isinstance(node, SequenceNode):
            for i, child in enumerate(node.value):
                total += size(child, f"{path}[{i}]")
        elif isinstance(node, MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                text = _key_text(key_node)
                line = key_node.start_mark.line + 1
                child = f"{path}.{text}" if path and text is not None else (text or path)
                if text is not None and key_node.tag != "tag:yaml.org,2002:merge":
                    if text in seen:
                        where = f"line {line}" if seen[text] == line else f"lines {seen[text]} and {line}"
                        raise ParameterError(child, f"given twice in {source} ({where}); keep one")
                    seen[text] = line
                total += size(key_node, child) + size(value_node, child)
        on_path.discard(key)
        expanded[key] = total
        if total - distinct > MAX_ALIAS_NODES:
            raise InputError(
                f"{path or source}: aliases expand {source} beyond {MAX_ALIAS_NODES:,} added items; "
                "write the values out instead of nesting aliases"
            )
        return total

    size(root, "")


def load_yaml_text(text: str, source: str, field: str, *, core12: bool = True) -> Any:
    """``text`` (from ``source``) parsed after :func:`check_node_graph`, or :class:`InputError`
    naming ``field`` (or the path of the key at fault)."""
    loader = (Core12Loader if core12 else Yaml11Loader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_node_graph(node, source)
        return loader.construct_document(node)
    except InputError:
        raise
    except yaml.YAMLError as exc:
        where = one_line(exc).replace('in "<unicode string>", ', "")  # the file is named already
        raise InputError(f"{field}: {source} is not valid YAML: {where}") from exc
    except ValueError as exc:  # an integer longer than Python converts (4300 digits)
        raise InputError(f"{field}: {source} is not usable YAML: {one_line(exc)}") from None
    except RecursionError:
        raise InputError(f"{field}: {source} is not usable YAML: nested too deeply") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path, field: str, *, core12: bool = True) -> Any:
    """A user's YAML file parsed (:func:`load_yaml_text`), or :class:`InputError` naming
    ``field``: unreadable, not a regular file, over 1 MiB, not UTF-8, not valid YAML, a key
    given twice, or aliases that expand too far."""
    return load_yaml_text(read_input_file(path, field), str(path), field, core12=core12)

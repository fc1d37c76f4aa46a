"""Fuzz test: bad input to the ``lmo-dp`` CLI is refused the same way everywhere (hypothesis).

What is fuzzed. Every example is one valid base input plus ONE mutation that the documented
ranges make invalid (checked by an oracle written from the docs, not from the code under test),
so an example is never accidentally valid:

* the flags of ``account``, ``calibrate``, ``search`` and ``audit``: numbers out of range,
  ``nan`` / ``inf``, non-numbers, non-integers for integer flags, huge values, choices the
  command does not offer, an accountant that cannot bound the mechanism, a missing parameter
  flag, ``--params`` files (bad or missing keys and values, not JSON, not UTF-8, not an object,
  overflowing parameters), ``--out`` and ``--address`` that cannot be used;
* ``lmo-dp train --config`` and ``lmo-dp sweep --config`` YAML: wrong types (strings, lists,
  mappings, booleans where numbers go; ``.inf`` / ``.nan``), out-of-range and huge values, null
  where a value is required, unknown keys at every level, sections that are not mappings,
  contradicting keys, a top level that is not a mapping, bytes that are not UTF-8, broken YAML,
  a key given twice (at any depth), YAML 1.1 forms written plainly where a number or boolean
  goes (``1:30``, ``1_000``, ``yes``, ``on``, dates: text under YAML 1.2), numbers and booleans
  written as text, experiment and run names that act as paths (``..``, ``/``, control
  characters, NUL, over 200 characters);
* special files where a file is read: a FIFO or a device as ``--config`` or ``--params``.

The contract checked for each example: exit code 2, nothing on stdout, exactly one line on
stderr, ``lmo-dp <cmd>: error: <field or flag>: <message>`` naming the mutated field as the
user wrote it (``training.epochs``, ``--sample-rate``), no traceback, no warning, nothing written
to the fresh, empty working directory (not even the SQLite database ``MLFLOW_TRACKING_URI``
points at), and no expensive work started: the functions that load data, connect to Ray, run
the noise search or the audit simulation are replaced by a guard that fails the example.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import string
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.sweep_config import MechanismGrid, Resources, SweepConfig, SweepPrivacy, SweepSearch
from trainers.config import TrialConfig
from trainers.settings import (
    DataSettings,
    FeatureSettings,
    LoraSettings,
    ModelSettings,
    PrivacySettings,
    TrainingSettings,
)

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: Work a bad input must never reach: loading data or models, Ray, the search, the audit simulation.
GUARDED: tuple[str, ...] = (
    "trainers.engine.load_settings_dataset",
    "trainers.engine.train",
    "orchestrator.sweep.pipeline.connect",
    "orchestrator.search_runner.connect",
    "orchestrator.search_runner.run_search",
    "trainers.audit_simulation.run_audit",
)


class ExpensiveWorkReached(Exception):
    """A guarded function ran: validation let a bad input through to real work."""


@dataclass(frozen=True)
class Case:
    """One bad invocation: ``argv`` after the command, the files to create first, the field the
    error must name first (``field``) and a second name it must mention (``detail``, e.g. a key
    of a ``--params`` file)."""

    argv: tuple[str, ...]
    field: str
    files: tuple[tuple[str, bytes], ...] = ()
    detail: str | None = None
    fifos: tuple[str, ...] = ()  #: named pipes to create (no writer: reading one would wait for ever)


# --- running one case ----------------------------------------------------------------------------


def _guard(target: str) -> Callable[..., Any]:
    def reached(*args: Any, **kwargs: Any) -> Any:
        raise ExpensiveWorkReached(f"{target} was called")

    return reached


@contextmanager
def sandbox(files: tuple[tuple[str, bytes], ...], fifos: tuple[str, ...] = ()) -> Iterator[Path]:
    """A fresh, empty working directory holding only ``files`` (and the named pipes ``fifos``), with
    MLflow pointed inside it and every expensive entry point guarded."""
    cwd, uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp).resolve()
        for name, data in files:
            (root / name).write_bytes(data)
        for name in fifos:
            os.mkfifo(root / name)
        for target in GUARDED:
            stack.enter_context(mock.patch(target, _guard(target)))
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(cwd)
            if uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = uri


def _tree(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, dirs, fs in os.walk(root) for f in [*dirs, *fs])


def assert_refused(capsys: pytest.CaptureFixture[str], command: str, case: Case) -> None:
    """``lmo-dp <command> <case.argv>`` keeps the bad-input contract (module docstring)."""
    capsys.readouterr()
    with sandbox(case.files, case.fifos) as root, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main([command, *case.argv])
        written = _tree(root)
    out, err = capsys.readouterr()
    shown = f"argv={[command, *case.argv]!r} files={[n for n, _ in case.files]} stderr={err!r}"
    prefix = f"lmo-dp {command}: error: "
    assert rc == 2, shown
    assert out == "", shown
    assert err.endswith("\n") and err.count("\n") == 1, shown
    assert err.startswith(prefix) and "Traceback" not in err, shown
    # argparse words its own errors "argument --flag: ..." (orchestrator/cli.py)
    named = err[len(prefix) :].removeprefix("argument ")
    assert re.match(re.escape(case.field) + r"[:.]", named), f"expected {case.field!r} first: {shown}"
    assert case.detail is None or case.detail in named, f"expected {case.detail!r}: {shown}"
    assert written == sorted([*(n for n, _ in case.files), *case.fifos]), f"wrote {written}: {shown}"
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning)  # Python hides these by default
    shown_warnings = [str(w.message) for w in caught if not issubclass(w.category, hidden)]
    assert not shown_warnings, f"warnings {shown_warnings}: {shown}"


# --- the oracle: documented ranges ----------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """A number in ``[lo, hi]`` (``lo_open`` / ``hi_open``: the end excluded); ``integer``: whole numbers."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not float(value).is_integer():
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def accepts_text(self, text: str) -> bool:
        """What argparse's ``type=int`` / ``type=float`` and then the range make of a flag's text."""
        try:
            value: float = int(text) if self.integer else float(text)
        except ValueError:
            return False
        return self.accepts(value)


POSITIVE = Num(0, lo_open=True)
PROBABILITY = Num(0, 1, lo_open=True, hi_open=True)
COUNT = Num(1, integer=True)
LEARNING_RATE = Num(0, 10, lo_open=True)  # also a sweep grid's clip


def words(exclude: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Letters only: never a number to YAML, pydantic or argparse (``inf``/``nan`` are not finite)."""
    lowered = {e.lower() for e in exclude}
    return st.text(string.ascii_letters + "-_", max_size=10).filter(lambda s: s.lower() not in lowered)


def bad_number_text(spec: Num) -> st.SearchStrategy[str]:
    """Flag text ``spec`` refuses: out of range, not finite, not a (whole) number, empty."""
    candidates = st.one_of(
        st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity", "1e999", "-1e999", "1e-400", "0", "-0", "-1"]),
        st.sampled_from(["", "abc", "1,5", "0x10", "1.5", "2.0", "1e3", "true", "None", "[1]", "1 2", "½"]),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.text(string.ascii_letters + string.digits + ".,+e", max_size=8),
    )
    return candidates.filter(lambda s: not spec.accepts_text(s))


#: text a number field refuses, whatever it spells (YAML 1.1 would read the last four as numbers)
NUMBERS_AS_TEXT = ("8", "0.5", "1e-5", "1", "1:30", "1_000", "0b101", "2001-12-14")


def bad_yaml_number(spec: Num) -> st.SearchStrategy[Any]:
    """A YAML value ``spec`` refuses: wrong type, not finite, out of range or huge, null."""
    wrong = [True, False, [], [1], {"x": 1}, math.inf, -math.inf, math.nan]
    return st.one_of(
        st.sampled_from(wrong if spec.nullable else [*wrong, None]),
        words(),
        st.sampled_from(NUMBERS_AS_TEXT),
        st.integers(min_value=-(10**40), max_value=10**40).filter(lambda v: not spec.accepts(v)),
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not spec.accepts(v)),
    )


def bad_choice(options: tuple[str, ...], nullable: bool = False) -> st.SearchStrategy[Any]:
    other = [5, 1.5, True, [options[0]], {"x": 1}]
    return st.one_of(words(options), st.sampled_from(other if nullable else [*other, None]))


#: strings pydantic (lax) reads as booleans, and YAML 1.1 reads unquoted: text to a boolean field
BOOL_WORDS = ("0", "off", "f", "false", "n", "no", "1", "on", "t", "true", "y", "yes")


def bad_flag() -> st.SearchStrategy[Any]:
    return st.one_of(
        words(),
        st.sampled_from(BOOL_WORDS),
        st.integers(min_value=-(10**6), max_value=10**6),
        st.sampled_from([2.5, -1.0, [], [True], {"x": 1}, None]),
    )


def bad_text(nullable: bool = False) -> st.SearchStrategy[Any]:
    other = [5, 1.5, True, False, [], ["a"], {"x": 1}]
    return st.sampled_from(other if nullable else [*other, None])


#: experiment and run names that would act as paths or break a line (noise_search.names)
BAD_NAMES = ("", ".", "..", "a/b", "../up", "a\\b", "a:b", " lead", "trail ", "x?", 'q"', "a\nb", "a\rb", "a\tb",
             "a\x00b", "a\x1bb", "a\x7fb", "a\u2028b", "x" * 201, "y" * 300)  # fmt: skip


def bad_name(nullable: bool = False) -> st.SearchStrategy[Any]:
    return st.one_of(bad_text(nullable), st.sampled_from(BAD_NAMES))


def bad_list(
    item: Num, good: st.SearchStrategy[Any], *, distinct: bool = True, nullable: bool = False
) -> st.SearchStrategy[Any]:
    """A list of numbers refused: empty, holding one bad item, repeating one (``distinct``), a scalar."""
    with_bad = st.tuples(st.lists(good, max_size=3), bad_yaml_number(item), st.integers(0, 3)).map(
        lambda t: [*t[0][: t[2]], t[1], *t[0][t[2] :]]
    )
    shapes = [st.just([]), with_bad, good, st.sampled_from(["x", {"x": 1}, True])]
    if distinct:
        shapes.append(st.lists(good, min_size=1, max_size=3).map(lambda xs: [*xs, xs[0]]))
    if not nullable:
        shapes.append(st.just(None))
    return st.one_of(shapes)


# --- flags --------------------------------------------------------------------------------------

ACCOUNTING = {"--sample-rate": "0.01", "--steps": "100", "--delta": "1e-5"}
FLAG_BASES: dict[str, dict[str, str]] = {
    "account": {"--mechanism": "gaussian", "--sigma": "1.0", **ACCOUNTING},
    "calibrate": {"--mechanism": "gaussian", "--epsilon": "1.0", **ACCOUNTING},
    "search": {"--epsilons": "0.5,1.0", **ACCOUNTING},
    "audit": {"--mechanism": "gaussian", "--sigma": "1.0", **ACCOUNTING, "--dim": "8", "--canaries": "16"},
}
LAPLACE = {"--mechanism": "laplace", "--sigma": None}
LMO_FILE = {"--mechanism": "lmo", "--sigma": None, "--params": "lmo.json"}

#: numeric flag -> (its documented range, other flags it needs), per command
ACCOUNTING_RANGES: dict[str, tuple[Num, dict[str, str | None]]] = {
    "--sample-rate": (Num(1e-12, 1), {}),
    "--steps": (COUNT, {}),
    "--delta": (PROBABILITY, {}),
}
MECHANISM_RANGES: dict[str, tuple[Num, dict[str, str | None]]] = {
    "--sigma": (Num(1e-3, 1e6), {}),
    "--u": (Num(0, 1e3, lo_open=True), LAPLACE),
}
FLAG_RANGES: dict[str, dict[str, tuple[Num, dict[str, str | None]]]] = {
    "account": {**MECHANISM_RANGES, **ACCOUNTING_RANGES},
    "calibrate": {"--epsilon": (POSITIVE, {}), **ACCOUNTING_RANGES},
    "search": {
        **ACCOUNTING_RANGES,
        "--gamma": (POSITIVE, {"--objective": "usefulness"}),
        "--seed": (Num(0, integer=True), {}),
        "--workers": (Num(0, integer=True), {}),
        "--candidates": (COUNT, {"--space": "wide"}),
    },
    "audit": {
        **MECHANISM_RANGES,
        **ACCOUNTING_RANGES,
        "--dim": (Num(1, 1e8, integer=True), {}),
        "--canaries": (Num(2, 1e6, integer=True), {}),
        "--confidence": (PROBABILITY, {}),
        "--clip": (POSITIVE, {}),
        "--seed": (Num(0, 2**64 - 1, integer=True), {}),
    },
}
FLAG_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "account": {"--mechanism": ("gaussian", "laplace", "lmo"), "--accountant": ("rdp", "prv", "pld")},
    "calibrate": {"--mechanism": ("gaussian", "laplace"), "--accountant": ("rdp", "prv", "pld")},
    "search": {
        "--objective": ("mean-abs", "variance", "usefulness"),
        "--space": ("paper", "wide"),
        "--strategy": ("grid", "optimize"),
        "--accountant": ("rdp", "prv", "pld"),
    },
    "audit": {"--mechanism": ("gaussian", "laplace", "lmo"), "--accountant": ("rdp", "prv", "pld")},
}
#: valid values, but not together: (flags, the flag the error must name)
FLAG_CONFLICTS: dict[str, list[tuple[dict[str, str | None], str]]] = {
    "account": [
        ({**LAPLACE, "--u": "1.0", "--accountant": "prv"}, "--accountant"),
        ({**LMO_FILE, "--accountant": "pld"}, "--accountant"),
        ({**LMO_FILE, "--accountant": "prv"}, "--accountant"),
        (LAPLACE, "--u"),
        ({"--mechanism": "lmo"}, "--params"),
        ({"--sigma": None}, "--sigma"),
    ],
    "calibrate": [({"--mechanism": "laplace", "--accountant": "prv"}, "--accountant")],
    "search": [
        ({"--objective": "usefulness"}, "--gamma"),
        ({"--candidates": "100"}, "--candidates"),
        ({"--space": "paper", "--candidates": "5"}, "--candidates"),
    ],
    "audit": [
        ({**LAPLACE, "--u": "1.0", "--accountant": "prv"}, "--accountant"),
        ({**LMO_FILE, "--accountant": "pld"}, "--accountant"),
        (LAPLACE, "--u"),
        ({"--mechanism": "lmo"}, "--params"),
    ],
}
BAD_OUT: tuple[str, ...] = (
    "",
    ".",
    "/",
    "a-file/result.json",
    "a-file/deeper/result.json",
    "/proc/lmodp-result.json",
    "/sys/lmodp-result.json",
    "x" * 300 + ".json",
    "~no-such-user-lmodp/result.json",
)
BAD_ADDRESS: tuple[str, ...] = ("http://127.0.0.1:6379", "https://h:1", "localhost", "host:", ":6379", "h:port",
                                "h:0", "h:70000", "ray://h:x")  # fmt: skip

LMO_PARAMS: dict[str, float] = {
    "a1": 1.0, "a3": 0.0, "a4": 0.5, "G_k": 4.0, "G_theta": 1.0, "E_lambda": 1.0, "U_a": 0.5, "U_b": 1.5,
}  # fmt: skip
LMO_RANGES: dict[str, Num] = {
    "a1": Num(0),
    "a3": Num(0),
    "a4": Num(0),
    "G_k": POSITIVE,
    "G_theta": POSITIVE,
    "E_lambda": POSITIVE,
    "U_a": Num(0),  # U_a >= U_b is refused as U_b
    "U_b": Num(0.5, lo_open=True),
}


def _argv(command: str, overrides: dict[str, str | None]) -> tuple[str, ...]:
    flags = {**FLAG_BASES[command], **overrides}
    return tuple(x for k, v in flags.items() if v is not None for x in (k, v))


def flag_case(
    command: str, overrides: dict[str, str | None], field: str, files: tuple[tuple[str, bytes], ...] = (), **kw: Any
) -> Case:
    if "--params" in overrides and not files:
        files = (("lmo.json", json.dumps(LMO_PARAMS).encode()),)
    return Case(_argv(command, overrides), field, files, **kw)


def bad_params_json() -> st.SearchStrategy[tuple[bytes, str | None]]:
    """A ``--params`` file body that is no LMO, with the key the error must mention (or None)."""

    def with_value(key: str, value: Any) -> tuple[bytes, str | None]:
        return json.dumps({**LMO_PARAMS, key: value}).encode(), key

    def without(key: str) -> tuple[bytes, str | None]:
        return json.dumps({k: v for k, v in LMO_PARAMS.items() if k != key}).encode(), key

    values = st.one_of([st.tuples(st.just(k), bad_yaml_number(spec)) for k, spec in LMO_RANGES.items()])
    whole_file = st.sampled_from(
        [b"", b"{", b"{a1: 1}", b"[1]", b'"lmo"', b"null", b"5", b"\xff\xfe{}", b'{"a1": 1.0,\x80}',
         b"1" * 5000, b"[" * 100_000 + b"]" * 100_000]
    ).map(lambda body: (body, None))  # fmt: skip
    return st.one_of(
        values.map(lambda kv: with_value(*kv)),
        st.sampled_from(sorted(LMO_PARAMS)).map(without),
        st.tuples(st.sampled_from(["a1", "G_theta"]), st.floats(min_value=1e308, max_value=1.7e308)).map(
            lambda kv: with_value(*kv)
        ),
        st.sampled_from(["shared-u", "", "PER_COORDINATE", 5, [], None]).map(lambda v: with_value("variant", v)),
        st.sampled_from(["gamma", [], ["cauchy"], [1], 5, None, True]).map(lambda v: with_value("components", v)),
        whole_file,
    )


def params_twice(key: str) -> bytes:
    """The LMO parameters as JSON with ``key`` given a second time."""
    return json.dumps(LMO_PARAMS)[:-1].encode() + f', "{key}": 1.0}}'.encode()


def params_cases(command: str) -> st.SearchStrategy[Case]:
    files = bad_params_json().map(
        lambda bk: flag_case(command, LMO_FILE, "--params", (("lmo.json", bk[0]),), detail=bk[1])
    )
    paths = st.sampled_from(["missing.json", ".", "a-file/lmo.json"]).map(
        lambda p: flag_case(command, {**LMO_FILE, "--params": p}, "--params", (("a-file", b"x"),))
    )
    dup = st.sampled_from(sorted(LMO_PARAMS)).map(
        lambda k: flag_case(command, LMO_FILE, "--params", (("lmo.json", params_twice(k)),), detail=k)
    )
    return st.one_of(files, paths, dup, special_file_cases(command))


def flag_cases(command: str) -> st.SearchStrategy[Case]:
    """Bad flags of ``command``: every numeric flag, every choice, conflicts, files, places."""
    parts: list[st.SearchStrategy[Case]] = []
    for flag, (spec, needs) in FLAG_RANGES[command].items():
        parts.append(bad_number_text(spec).map(lambda v, f=flag, n=needs: flag_case(command, {**n, f: v}, f)))
    for flag, options in FLAG_CHOICES[command].items():
        parts.append(words(options).map(lambda v, f=flag: flag_case(command, {f: v}, f)))
    parts.append(st.sampled_from(FLAG_CONFLICTS[command]).map(lambda c: flag_case(command, c[0], c[1])))
    if command in ("account", "audit"):
        parts.append(params_cases(command))
    if command == "search":
        parts.append(epsilons_cases())
        parts.append(
            st.sampled_from(BAD_OUT).map(lambda p: flag_case(command, {"--out": p}, "--out", (("a-file", b"x"),)))
        )
        parts.append(st.sampled_from(BAD_ADDRESS).map(lambda a: flag_case(command, {"--address": a}, "--address")))
    return st.one_of(parts)


def _epsilons_bad(text: str) -> bool:
    """The documented meaning of ``--epsilons``: comma-separated numbers, each finite and > 0."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    return not items or not all(POSITIVE.accepts_text(s) for s in items)


def epsilons_cases() -> st.SearchStrategy[Case]:
    good = st.floats(min_value=0.01, max_value=100.0).map(repr)
    bad_item = bad_number_text(POSITIVE).filter(lambda s: "," not in s and s.strip() != "")
    lists = st.tuples(st.lists(good, max_size=3), bad_item, st.integers(0, 3)).map(
        lambda t: ",".join([*t[0][: t[2]], t[1], *t[0][t[2] :]])
    )
    texts = st.one_of(lists, st.sampled_from(["", ",", " , ", ",,"])).filter(_epsilons_bad)
    return texts.map(lambda t: flag_case("search", {"--epsilons": t}, "--epsilons"))


# --- config files ---------------------------------------------------------------------------------

TRIAL_BASE: dict[str, Any] = {"privacy": {"mechanism": "gaussian", "epsilon": 8.0}}
SWEEP_BASE: dict[str, Any] = {"privacy": {"epsilons": [1.0]}}
CONFIG_NAME = {"train": "trial.yaml", "sweep": "sweep.yaml"}

TRAINING_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "training.epochs": bad_yaml_number(Num(0, 1e6, lo_open=True, nullable=True)),
    "training.steps": bad_yaml_number(Num(1, integer=True, nullable=True)),
    "training.batch_size": bad_yaml_number(Num(1, integer=True, nullable=True)),
    "training.physical_batch_size": bad_yaml_number(Num(1, integer=True, nullable=True)),
    "training.learning_rate": bad_yaml_number(Num(0, 10, lo_open=True, nullable=True)),
    "training.optimizer": bad_choice(("sgd", "adam", "adamw"), nullable=True),
    "training.weight_decay": bad_yaml_number(Num(0)),
    "training.seed": bad_yaml_number(Num(0, integer=True)),
    "training.device": st.one_of(words(("cpu", "cuda", "auto")), st.sampled_from(["cuda:", "cuda:x", "gpu:0", 0])),
    "training.eval_batch_size": bad_yaml_number(COUNT),
    "training.threads": bad_yaml_number(Num(1, 1024, integer=True, nullable=True)),
}
MODEL_DATA_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model.task": bad_choice(("classification", "causal-lm")),
    "model.trainable": bad_choice(("head", "lora", "full")),
    "model.top_layers": bad_yaml_number(Num(1, 1024, integer=True, nullable=True)),
    "model.max_length": bad_yaml_number(Num(4, 8192, integer=True)),
    "model.dtype": bad_choice(("float32", "bfloat16")),
    "model.path": st.one_of(bad_text(nullable=True), st.sampled_from(["no-such-model", "/nonexistent/model"])),
    "model.lora.rank": bad_yaml_number(Num(1, 4096, integer=True)),
    "model.lora.alpha": bad_yaml_number(POSITIVE),
    "model.lora.dropout": bad_yaml_number(Num(0, 1, hi_open=True)),
    "model.lora.target_modules": st.sampled_from([[], "query", [1], [["query"]], 5, {"x": 1}, [None]]),
    "model.features.layer": bad_yaml_number(Num(-64, 64, integer=True)),
    "model.features.pooling": bad_choice(("mean", "cls", "last")),
    "model.features.normalize": bad_flag(),
    "model.features.center": st.one_of(words(("nyt-editorials", "movie-reviews", "imdb")), bad_text(nullable=True)),
    "model.features.cache": bad_flag(),
    "data.name": bad_choice(("movie-reviews", "nyt-editorials", "imdb", "csv", "jsonl")),
    "data.max_train_examples": bad_yaml_number(Num(1, integer=True, nullable=True)),
    "data.max_eval_examples": bad_yaml_number(Num(1, integer=True, nullable=True)),
    "data.text_field": bad_text(),
    "data.label_field": bad_text(),
    "data.path": bad_text(nullable=True),
}
TRIAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    **TRAINING_FIELDS,
    **MODEL_DATA_FIELDS,
    "name": bad_name(nullable=True),
    "experiment": bad_name(),
    "privacy.mechanism": bad_choice(("gaussian", "laplace", "lmo", "none")),
    "privacy.epsilon": bad_yaml_number(POSITIVE),
    "privacy.delta": bad_yaml_number(PROBABILITY),
    "privacy.clip": bad_yaml_number(Num(0, lo_open=True, nullable=True)),
    "privacy.accountant": bad_choice(("rdp", "prv", "pld")),
    "privacy.params": st.sampled_from([[1], "sigma", 5, True, [{"sigma": 1.0}]]),
    "privacy.params.sigma": st.one_of(bad_yaml_number(Num(1e-3, 1e6)), st.sampled_from(["1.0", "1e-5"])),
    "privacy.search_result": st.one_of(bad_text(nullable=True), st.sampled_from(["no-such-result.json", "."])),
    "privacy.calibrate": bad_flag(),
    "privacy.on_budget": bad_choice(("refuse", "stop")),
    "audit.canaries": bad_yaml_number(Num(2, 1e6, integer=True)),
    "audit.confidence": bad_yaml_number(PROBABILITY),
}
SWEEP_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    **TRAINING_FIELDS,
    **MODEL_DATA_FIELDS,
    "experiment": bad_name(),
    "privacy.epsilons": bad_list(POSITIVE, st.floats(min_value=0.01, max_value=100.0)),
    "privacy.delta": bad_yaml_number(PROBABILITY),
    "privacy.clip": bad_yaml_number(Num(0, lo_open=True, nullable=True)),
    "privacy.accountant": st.one_of(bad_choice(("rdp", "prv", "pld")), st.just("prv")),  # prv: not laplace
    "privacy.mechanisms": st.sampled_from([[], ["cauchy"], ["gaussian", "gaussian"], "gaussian", [1], None, [True]]),
    "search.objective": bad_choice(("mean-abs", "variance", "usefulness")),
    "search.gamma": bad_yaml_number(Num(0, lo_open=True, nullable=True)),
    "search.space": bad_choice(("paper", "wide")),
    "search.strategy": bad_choice(("grid", "optimize")),
    "search.seed": bad_yaml_number(Num(0, integer=True)),
    "seeds": bad_list(Num(0, integer=True), st.integers(0, 1000)),
    "learning_rates": bad_list(LEARNING_RATE, st.floats(min_value=1e-4, max_value=10.0), nullable=True),
    "grid": st.sampled_from([5, [1], "gaussian", True]),
    "grid.gaussian.learning_rate": bad_list(LEARNING_RATE, st.floats(min_value=1e-4, max_value=10.0), nullable=True),
    "grid.laplace.clip": bad_list(LEARNING_RATE, st.floats(min_value=1e-4, max_value=10.0), nullable=True),
    "non_private": bad_flag(),
    "resources.cpus_per_trial": bad_yaml_number(Num(1, 1024, integer=True)),
    "resources.gpus_per_trial": bad_yaml_number(Num(0, 64)),
    "resources.workers": bad_yaml_number(Num(1, 1024, integer=True)),
    "resources.memory_gb": bad_yaml_number(Num(0, lo_open=True, nullable=True)),
    "max_concurrent_trials": bad_yaml_number(Num(1, integer=True, nullable=True)),
    "max_retries": bad_yaml_number(Num(0, 100, integer=True)),
    "storage_path": st.one_of(bad_text(), st.sampled_from(["", "sweep.yaml/runs", "/proc/lmodp-runs"])),
    "audit.canaries": bad_yaml_number(Num(2, integer=True)),
    "audit.confidence": bad_yaml_number(PROBABILITY),
    "tuning.mean": bad_yaml_number(Num(1, 1e6, lo_open=True)),
    "tuning.shape": bad_yaml_number(Num(-1, lo_open=True)),
    "tuning.max_runs": bad_yaml_number(Num(1, 1e6, integer=True)),
    "tuning.seed": bad_yaml_number(Num(0, 2**31 - 1, integer=True)),
    "tuning.noise": bad_choice(("selected", "per_run")),
    "tuning.space.epochs": bad_list(Num(1, 1000, integer=True), st.integers(1, 1000), nullable=True),
    "tuning.space.clip": bad_list(LEARNING_RATE, st.floats(min_value=1e-4, max_value=10.0), nullable=True),
}
#: a field that needs a sibling to be reached: path -> what else to set
NEEDS: dict[str, dict[str, Any]] = {
    "audit.confidence": {"audit.canaries": 16},
    **{f"tuning.{k}": {"tuning.mean": 3} for k in ("shape", "seed", "noise", "space.epochs", "space.clip", "max_runs")},
}

#: section path -> its model, for unknown keys and sections that are not mappings
TRIAL_SECTIONS: dict[str, type] = {
    "": TrialConfig,
    "model": ModelSettings,
    "model.lora": LoraSettings,
    "model.features": FeatureSettings,
    "data": DataSettings,
    "privacy": PrivacySettings,
    "training": TrainingSettings,
}
SWEEP_SECTIONS: dict[str, type] = {
    **{k: v for k, v in TRIAL_SECTIONS.items() if k != "privacy"},
    "": SweepConfig,
    "privacy": SweepPrivacy,
    "search": SweepSearch,
    "resources": Resources,
    "grid.gaussian": MechanismGrid,
}
#: valid values, but not together: (settings, the field the error must name)
TRIAL_CONFLICTS: list[tuple[dict[str, Any], str]] = [
    ({"privacy.calibrate": True}, "privacy.calibrate"),
    ({"privacy.epsilon": None}, "privacy.epsilon"),
    ({"privacy.mechanism": "lmo"}, "privacy.params"),
    ({"privacy.mechanism": "laplace", "privacy.accountant": "prv"}, "privacy.accountant"),
    ({"privacy.mechanism": "lmo", "privacy.params": dict(LMO_PARAMS), "privacy.accountant": "pld"},
     "privacy.accountant"),
    ({"privacy.params": {"sigma": 1.0}, "privacy.search_result": "result.json"}, "privacy.params"),
    ({"privacy.params": {"sigma": 1.0, "sigmaa": 2.0}}, "privacy.params.sigmaa"),
    ({"privacy.params": {"u0": 1.0}}, "privacy.params.u0"),
    ({"privacy.mechanism": "none", "privacy.params": {"sigma": 1.0}}, "privacy.params"),
    ({"privacy.mechanism": "none", "privacy.calibrate": True}, "privacy.calibrate"),
    ({"privacy.mechanism": "none", "audit.canaries": 16}, "audit"),
    ({"model.trainable": "head", "model.task": "causal-lm"}, "model.trainable"),
    ({"model.trainable": "head", "model.top_layers": 1}, "model.top_layers"),
    ({"model.trainable": "full", "model.lora.rank": 4}, "model.lora"),
    ({"model.lora": None, "model.trainable": "lora"}, "model.lora"),
    ({"model.features.layer": -2}, "model.features"),
    ({"model.trainable": "head", "model.features.center": "movie-reviews"}, "model.features.center"),
    ({"data.name": "nyt-editorials"}, "data.name"),
    ({"data.max_train_examples": 10, "training.batch_size": 20}, "training.batch_size"),
]  # fmt: skip
SWEEP_CONFLICTS: list[tuple[dict[str, Any], str]] = [
    ({"search.objective": "usefulness"}, "search.gamma"),
    ({"grid.none": {}}, "grid.none"),
    ({"non_private": True, "grid.none.clip": [1.0]}, "grid.none.clip"),
    ({"privacy.mechanisms": ["laplace"], "grid.gaussian": {}}, "grid.gaussian"),
    ({"learning_rates": [0.1], "grid.gaussian.learning_rate": [0.1]}, "grid.gaussian.learning_rate"),
    ({"privacy.clip": 1.0, "grid.lmo.clip": [1.0]}, "grid.lmo.clip"),
    ({"grid.cauchy": {}}, "grid.cauchy"),
    ({"data.name": "nyt-editorials"}, "data.name"),
    ({"model.trainable": "head", "model.features.center": "movie-reviews"}, "model.features.center"),
    ({"tuning.mean": 3, "privacy.accountant": "pld"}, "privacy.accountant"),
    ({"tuning.mean": 3, "seeds": [0, 1]}, "seeds"),
    ({"tuning.mean": 3, "learning_rates": [0.1]}, "learning_rates"),
    ({"tuning.mean": 3, "tuning.space.learning_rate": {"low": 0.5, "high": 0.1}}, "tuning.space.learning_rate.high"),
    ({"tuning.mean": 3, "tuning.overrides.none": {}}, "tuning.overrides.none"),
    ({"tuning.mean": 3, "audit.canaries": 16}, "tuning"),
    ({"tuning.mean": 500}, "tuning.mean"),  # K's 99.9% quantile above the default tuning.max_runs
    ({"tuning.mean": 3, "tuning.shape": -0.999}, "tuning.shape"),  # no computable law that close to -1
    ({"tuning.mean": 30, "tuning.max_runs": 100}, "tuning.mean"),
    ({"resources.cpus_per_trial": 1024}, "resources.cpus_per_trial"),  # more than this machine has
]


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return doc


def yaml_case(command: str, settings_: dict[str, Any], field: str) -> Case:
    base = TRIAL_BASE if command == "train" else SWEEP_BASE
    doc = copy.deepcopy(base)
    for path, value in settings_.items():
        for need, v in NEEDS.get(path, {}).items():
            _set(doc, need, v)
        _set(doc, path, value)
    return raw_case(command, yaml.safe_dump(doc, sort_keys=False).encode(), field)


def raw_case(command: str, body: bytes, field: str = "--config") -> Case:
    name = CONFIG_NAME[command]
    return Case(("--config", name), field, ((name, body),))


def unknown_key_cases(command: str) -> st.SearchStrategy[Case]:
    sections = TRIAL_SECTIONS if command == "train" else SWEEP_SECTIONS

    def case(section: str, key: str) -> Case:
        path = f"{section}.{key}" if section else key
        return yaml_case(command, {path: 1}, path)

    keys = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)
    return (
        st.tuples(st.sampled_from(sorted(sections)), keys)
        .filter(lambda sk: sk[1] not in sections[sk[0]].model_fields)
        .map(lambda sk: case(*sk))
    )


def not_mapping_cases(command: str) -> st.SearchStrategy[Case]:
    sections = [s for s in (TRIAL_SECTIONS if command == "train" else SWEEP_SECTIONS) if s]
    nullable = {"model.lora"}
    values = st.sampled_from([5, 1.5, "text", [1], [], True, None])
    return (
        st.tuples(st.sampled_from(sections), values)
        .filter(lambda sv: not (sv[1] is None and sv[0] in nullable))
        .map(lambda sv: yaml_case(command, {sv[0]: sv[1]}, sv[0]))
    )


def file_cases(command: str) -> st.SearchStrategy[Case]:
    """Whole files that are no config: not a mapping, not UTF-8, not YAML."""
    base = yaml.safe_dump(TRIAL_BASE if command == "train" else SWEEP_BASE).encode()
    invalid_utf8 = [b"\x80", b"\xff", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]
    non_utf8 = st.tuples(st.integers(0, len(base)), st.sampled_from(invalid_utf8)).map(
        lambda ib: base[: ib[0]] + ib[1] + base[ib[0] :]
    )
    broken = st.sampled_from([b"\n]", b"\n\tfoo: 1", b"\n: : :", b'\n"open', b"\n- 1", b"\n{"])
    top = st.sampled_from([[], [1, 2], "privacy", 5, 1.5, True, None, [TRIAL_BASE]])
    tags = st.sampled_from([b"!!python/object/apply:os.system ['true']\n", b"privacy: !!binary 'x'\n"])
    bodies = st.one_of(
        non_utf8,
        broken.map(lambda suffix: base + suffix),
        top.map(lambda v: yaml.safe_dump(v).encode()),
        st.sampled_from([b"", b"# only a comment\n", b"---\n...\n"]),
        tags,
    )
    return bodies.map(lambda body: raw_case(command, body))


def emit_yaml(doc: dict[str, Any], raw: dict[str, str], indent: str = "", prefix: str = "") -> str:
    """``doc`` as block YAML with scalars in JSON form; ``raw`` maps a path to text added as a
    plain line after that key's line (its value written as it is: a duplicate or a YAML 1.1 form)."""
    out = []
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.append(f"{indent}{key}:\n{emit_yaml(value, raw, indent + '  ', path + '.')}")
        elif path not in raw or raw[path].startswith(f"{key}: "):
            out.append(f"{indent}{key}: {json.dumps(value)}\n")
        if path in raw:
            out.append(f"{indent}{raw[path]}\n")
    return "".join(out)


def _with(base: dict[str, Any], settings_: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for path, value in settings_.items():
        _set(doc, path, value)
    return doc


#: valid (path, value) pairs per command, all set in the documents these cases start from
VALID_FIELDS: dict[str, dict[str, Any]] = {
    "train": {"privacy.mechanism": "gaussian", "privacy.epsilon": 8.0, "privacy.delta": 1e-5,
              "privacy.calibrate": False, "training.epochs": 1, "training.seed": 0, "training.learning_rate": 0.1,
              "model.max_length": 32, "model.features.normalize": True, "data.max_train_examples": 100,
              "name": "run-a", "experiment": "exp-a"},
    "sweep": {"privacy.epsilons": [1.0], "privacy.delta": 1e-5, "seeds": [0], "max_retries": 1,
              "non_private": False, "search.seed": 0, "resources.cpus_per_trial": 1, "training.epochs": 1,
              "model.max_length": 32, "data.max_eval_examples": 50, "experiment": "exp-a"},
}  # fmt: skip
#: plain YAML 1.1 forms (a number or boolean there, text under YAML 1.2): per kind of field
YAML11_NUMBERS = ("1:30", "1_000", "0b101", "2001-12-14", "yes", "on", "off", "y")
YAML11_BOOLS = ("yes", "no", "on", "off", "y", "n", "Yes", "ON", "1", "0")
BOOL_FIELDS = ("privacy.calibrate", "model.features.normalize", "non_private")


def duplicate_key_cases(command: str) -> st.SearchStrategy[Case]:
    """A key given twice (a leaf or a whole section, at any depth): refused naming its path."""
    fields = VALID_FIELDS[command]
    base = _with(TRIAL_BASE if command == "train" else SWEEP_BASE, fields)
    base.setdefault("model", {})["trainable"] = "head"  # model.features applies to a head
    sections = sorted({p.rsplit(".", 1)[0] for p in fields if "." in p})

    def leaf(path: str) -> Case:
        key = path.rsplit(".", 1)[-1]
        return raw_case(command, emit_yaml(base, {path: f"{key}: {json.dumps(fields[path])}"}).encode(), path)

    def section(path: str) -> Case:
        key = path.rsplit(".", 1)[-1]
        node = base
        for part in path.split("."):
            node = node[part]
        return raw_case(command, emit_yaml(base, {path: f"{key}: {json.dumps(node)}"}).encode(), path)

    return st.one_of(st.sampled_from(sorted(fields)).map(leaf), st.sampled_from(sections).map(section))


def yaml11_cases(command: str) -> st.SearchStrategy[Case]:
    """A YAML 1.1 number or boolean written plainly in a number or boolean field: text under YAML 1.2."""
    fields = VALID_FIELDS[command]
    base = _with(TRIAL_BASE if command == "train" else SWEEP_BASE, fields)
    base.setdefault("model", {})["trainable"] = "head"

    def case(path: str, form: str) -> Case:
        key = path.rsplit(".", 1)[-1]
        value = f"[{form}]" if isinstance(fields[path], list) else form
        return raw_case(command, emit_yaml(base, {path: f"{key}: {value}"}).encode(), path)

    numbers = sorted(p for p, v in fields.items() if p not in BOOL_FIELDS and not isinstance(v, str))
    bools = sorted(p for p in fields if p in BOOL_FIELDS)
    return st.one_of(
        st.tuples(st.sampled_from(numbers), st.sampled_from(YAML11_NUMBERS)).map(lambda pf: case(*pf)),
        st.tuples(st.sampled_from(bools), st.sampled_from(YAML11_BOOLS)).map(lambda pf: case(*pf)),
    )


def special_file_cases(command: str) -> st.SearchStrategy[Case]:
    """A FIFO (no writer) or a device where the config or parameter file goes."""

    def case(target: str) -> Case:
        fifos = ("pipe.yaml",) if target == "pipe.yaml" else ()
        if command in ("train", "sweep"):
            return Case(("--config", target), "--config", fifos=fifos)
        return Case(_argv(command, {**LMO_FILE, "--params": target}), "--params", fifos=fifos)

    return st.sampled_from(["pipe.yaml", "/dev/zero", "/dev/null", "/dev/stdin"]).map(case)


def config_cases(command: str) -> st.SearchStrategy[Case]:
    fields = TRIAL_FIELDS if command == "train" else SWEEP_FIELDS
    conflicts = TRIAL_CONFLICTS if command == "train" else SWEEP_CONFLICTS
    values = st.one_of(
        [strategy.map(lambda v, p=path: yaml_case(command, {p: v}, p)) for path, strategy in fields.items()]
    )
    return st.one_of(
        values,
        st.sampled_from(conflicts).map(lambda c: yaml_case(command, c[0], c[1])),
        unknown_key_cases(command),
        not_mapping_cases(command),
        file_cases(command),
        duplicate_key_cases(command),
        yaml11_cases(command),
        special_file_cases(command),
    )


# --- the tests ------------------------------------------------------------------------------------

# Regressions: each of these once escaped as a crash (exit 1), a wrong field, or was accepted.
HUGE_INT = b"1" * 5000
DEEP = b"[" * 1000 + b"]" * 1000


@settings(FUZZ, max_examples=40)
@given(case=flag_cases("account"))
@example(case=flag_case("account", {**LAPLACE, "--u": "1.0", "--accountant": "prv"}, "--accountant"))
@example(case=flag_case("account", LMO_FILE, "--params", (("lmo.json", HUGE_INT),)))
@example(case=flag_case("account", LMO_FILE, "--params", (("lmo.json", b"[" * 100_000),)))
@example(case=flag_case("account", LMO_FILE, "--params", (("lmo.json", b'{"a1": NaN}'),)))
@example(case=flag_case("account", LMO_FILE, "--params", (("lmo.json", b"[1]"),)))
@example(
    case=flag_case(
        "account", LMO_FILE, "--params", (("lmo.json", json.dumps({**LMO_PARAMS, "a1": 1e308}).encode()),), detail="a1"
    )
)
@example(case=flag_case("account", LMO_FILE, "--params", (("lmo.json", params_twice("a1")),), detail="a1"))
def test_account_refuses_bad_flags(capsys: pytest.CaptureFixture[str], case: Case) -> None:
    assert_refused(capsys, "account", case)


@settings(FUZZ, max_examples=30)
@given(case=flag_cases("calibrate"))
@example(case=flag_case("calibrate", {"--mechanism": "laplace", "--accountant": "prv"}, "--accountant"))
def test_calibrate_refuses_bad_flags(capsys: pytest.CaptureFixture[str], case: Case) -> None:
    assert_refused(capsys, "calibrate", case)


@settings(FUZZ, max_examples=45)
@given(case=flag_cases("search"))
@example(case=flag_case("search", {"--out": ""}, "--out"))
@example(case=flag_case("search", {"--out": "x" * 300 + ".json"}, "--out"))
@example(case=flag_case("search", {"--out": "~no-such-user-lmodp/r.json"}, "--out"))
def test_search_refuses_bad_flags(capsys: pytest.CaptureFixture[str], case: Case) -> None:
    assert_refused(capsys, "search", case)


@settings(FUZZ, max_examples=40)
@given(case=flag_cases("audit"))
@example(case=flag_case("audit", {"--seed": str(2**64)}, "--seed"))
@example(case=flag_case("audit", {**LAPLACE, "--u": "1.0", "--accountant": "prv"}, "--accountant"))
@example(case=flag_case("audit", {**LMO_FILE, "--accountant": "pld"}, "--accountant"))
def test_audit_refuses_bad_flags(capsys: pytest.CaptureFixture[str], case: Case) -> None:
    assert_refused(capsys, "audit", case)


@settings(FUZZ, max_examples=80)
@given(case=config_cases("train"))
@example(case=yaml_case("train", {"training.threads": 10**20}, "training.threads"))
@example(case=yaml_case("train", {"privacy.params": {"sigma": 1.0, "foo": 2}}, "privacy.params.foo"))
@example(case=yaml_case("train", {"privacy.mechanism": "none", "privacy.params": {"sigma": 1.0}}, "privacy.params"))
@example(case=raw_case("train", b"- privacy\n"))
@example(case=raw_case("train", b"privacy: {mechanism: gaussian, epsilon: 8.0}\ntraining: {seed: " + HUGE_INT + b"}\n"))
@example(case=raw_case("train", DEEP))
@example(case=raw_case("train", b"privacy: {mechanism: gaussian, epsilon: 1.0, epsilon: 500.0}\n", "privacy.epsilon"))
@example(case=raw_case("train", b"privacy: {mechanism: gaussian, epsilon: 1:30}\n", "privacy.epsilon"))
@example(case=Case(("--config", "pipe.yaml"), "--config", fifos=("pipe.yaml",)))
def test_train_refuses_bad_config(capsys: pytest.CaptureFixture[str], case: Case) -> None:
    assert_refused(capsys, "train", case)


@settings(FUZZ, max_examples=80)
@given(case=config_cases("sweep"))
@example(case=yaml_case("sweep", {"privacy.epsilons": [True]}, "privacy.epsilons"))
@example(case=yaml_case("sweep", {"seeds": [0, True]}, "seeds"))
@example(case=yaml_case("sweep", {"learning_rates": [True]}, "learning_rates"))
@example(case=yaml_case("sweep", {"grid.gaussian.learning_rate": [True]}, "grid.gaussian.learning_rate"))
@example(case=yaml_case("sweep", {"grid.foo": {}}, "grid.foo"))
@example(case=yaml_case("sweep", {"training.threads": 10**9}, "training.threads"))
@example(case=raw_case("sweep", b""))
@example(case=raw_case("sweep", b"privacy: {epsilons: [1.0]}\nnon_private: yes\n", "non_private"))
@example(case=yaml_case("sweep", {"experiment": ".."}, "experiment"))
def test_sweep_refuses_bad_config(capsys: pytest.CaptureFixture[str], case: Case) -> None:
    assert_refused(capsys, "sweep", case)


def test_the_oracle_knows_valid_input() -> None:
    """The ranges behind every mutation accept the documented valid values (the fuzz cannot be vacuous)."""
    assert Num(1e-12, 1).accepts_text("1e-12") and Num(1e-12, 1).accepts_text("1")
    assert not Num(1e-12, 1).accepts_text("1e-13") and not PROBABILITY.accepts_text("nan")
    assert COUNT.accepts_text("3") and not COUNT.accepts_text("3.0") and not COUNT.accepts_text("0")
    assert Num(0, integer=True).accepts(2.0) and not Num(0, integer=True).accepts(True)
    assert not _epsilons_bad("0.5, 1,2") and _epsilons_bad("1,,-2") and _epsilons_bad(" , ")
    assert TrialConfig.from_dict(TRIAL_BASE).privacy.epsilon == 8.0
    assert SweepConfig.from_dict(SWEEP_BASE).privacy.epsilons == (1.0,)

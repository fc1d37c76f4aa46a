"""``lmo-dp predict --model URI (--text TEXT ... | --input FILE.csv [--text-column text]) [--output FILE] [--json]``.

Labels texts with a model a trial logged (``training.save_model``; :mod:`orchestrator.model_logging`):
``runs:/<run_id>/model``, ``models:/<model_id>`` (both read from the tracking store that
``MLFLOW_TRACKING_URI`` names, else the local default store) or a local MLflow model folder.
Nothing is downloaded: the base model the weights sit on is read from disk.

Prints, per text, the most probable label and its probability. With ``--input`` the CSV's rows
come back as CSV with ``label`` and ``probability`` columns added (on stdout, or written to
``--output``). ``--json`` prints one object: ``model``, ``model_id``, ``labels``, ``privacy`` (the
trial's guarantee from the model's metadata), ``selection`` (how the model was chosen) and
``predictions`` (``text``, ``label``, ``probability``, ``probabilities`` per label, and ``row`` for
CSV input). Bad arguments and inputs exit 2 with one line, before any model is loaded.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path
from typing import Any

from noise_search.errors import InputError, LmoDpError
from orchestrator.cli import add_json_flag

#: URI schemes MLflow resolves through the tracking store
STORE_SCHEMES = ("runs:/", "models:/")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="label texts with a model a trial logged (training.save_model)")
    p.add_argument(
        "--model",
        required=True,
        metavar="URI",
        help="runs:/<run_id>/model, models:/<model_id> (from the tracking store of MLFLOW_TRACKING_URI, "
        "else the local default store) or a local MLflow model folder",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", metavar="TEXT", help="a text to label (repeatable)")
    source.add_argument("--input", metavar="FILE", help="a CSV file with a header; one text per row")
    p.add_argument("--text-column", default="text", metavar="NAME", help="the CSV column holding the texts")
    p.add_argument(
        "--output",
        metavar="FILE",
        help="with --input: write the rows with label and probability to FILE (CSV) instead of stdout",
    )
    add_json_flag(p)
    p.set_defaults(handler=run, render=render)


def run(args: argparse.Namespace) -> dict[str, Any]:
    _check_model_arg(args.model)
    if args.output is not None and args.input is None:
        raise InputError("--output: only with --input (a CSV file)")
    if args.input is not None:
        header, rows = read_csv(args.input, args.text_column)
        texts = [r[args.text_column] for r in rows]
    else:
        header, rows = [], []
        texts = list(args.text)
        for t in texts:
            if "\x00" in t:
                raise InputError("--text: must not contain a NUL character")
    output = _check_output(args.output) if args.output else None
    model = load_model(args.model)
    from orchestrator.pyfunc_model import as_texts

    table = model.predict(as_texts(texts))
    result = _result(args.model, model, texts, table)
    if args.input is not None:
        result["input"] = args.input
        text = _csv_text(header, rows, table)
        for i, p in enumerate(result["predictions"]):
            p["row"] = i + 1
        if output is not None:
            _write_atomic(output, text)
            result["output"] = str(output)
        elif not args.json:
            result["csv"] = text  # what render prints
    return result


def _check_model_arg(uri: str) -> None:
    if "\x00" in uri:
        raise InputError("--model: must not contain a NUL character")
    if uri.startswith(STORE_SCHEMES):
        rest = uri.split(":/", 1)[1].strip("/")
        if not rest:
            raise InputError(f"--model: {uri!r} names no run or model (runs:/<run_id>/model or models:/<model_id>)")
        return
    if "://" in uri or uri.startswith(("models:", "runs:")):
        raise InputError(f"--model: {uri!r}: use runs:/<run_id>/model, models:/<model_id> or a local model folder")
    path = Path(uri)
    if not path.is_dir():
        raise InputError(f"--model: {uri} is not a model folder (no such directory)")
    if not (path / "MLmodel").is_file():
        raise InputError(f"--model: {uri} is not an MLflow model folder (no MLmodel file)")


def read_csv(path: str, column: str) -> tuple[list[str], list[dict[str, str]]]:
    """``(header, rows)`` of a CSV file with a header, every row holding ``column``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"--input: {path} does not exist")
    if not p.is_file():
        raise InputError(f"--input: {path} is not a regular file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"--input: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"--input: cannot read {path}: {exc.strerror or exc}") from None
    if "\x00" in text:
        raise InputError(f"--input: {path} contains a NUL character")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise InputError(f"--input: {path} is empty (a CSV header and at least one row are needed)")
        if len(set(header)) != len(header):
            raise InputError(f"--input: {path} line 1: the header names a column twice")
        if column not in header:
            raise InputError(f"--text-column: {column!r} is not a column of {path} (columns: {', '.join(header)})")
        rows = []
        for record in reader:
            line = reader.line_num
            if not record:
                continue
            if len(record) != len(header):
                raise InputError(f"--input: {path} line {line}: {len(record)} fields, the header has {len(header)}")
            rows.append(dict(zip(header, record, strict=True)))
    except csv.Error as exc:
        raise InputError(f"--input: {path} line {reader.line_num}: {exc}") from None
    if not rows:
        raise InputError(f"--input: {path} has a header but no rows")
    return header, rows


def _check_output(path: str) -> Path:
    out = Path(path)
    if out.is_dir():
        raise InputError(f"--output: {path} is a folder")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"--output: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"--output: folder {parent} is not writable")
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_model(uri: str) -> Any:
    """The pyfunc model at ``uri``; a run, model or folder that is not there is bad input (exit 2),
    a tracking store that cannot be reached a runtime failure (exit 1)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub: never download
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    if uri.startswith(STORE_SCHEMES):
        from orchestrator.tracking import Tracker

        tracker = Tracker(create=False)  # refuses a local default store that does not exist yet
        mlflow.set_tracking_uri(tracker.uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    except InputError:
        raise
    except MlflowException as exc:
        missing = exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
        message = f"--model: cannot load {uri}: {exc.message}"
        raise (InputError(message) if missing else LmoDpError(message)) from None
    except (OSError, ModuleNotFoundError) as exc:
        raise LmoDpError(f"--model: cannot load {uri}: {exc}") from None


def _metadata(model: Any) -> dict[str, Any]:
    meta = (model.metadata.metadata or {}).get("lmodp")
    if not isinstance(meta, dict):
        raise InputError("--model: not an lmo-dp model (its MLmodel metadata has no lmodp section)")
    return meta


def _selection(model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """How the model was chosen: the sweep's tags on the logged model when it is in a store."""
    model_id = getattr(model.metadata, "model_id", None)
    out: dict[str, Any] = {"note": meta.get("selection"), "selected": None, "cell": None}
    if model_id:
        from mlflow import MlflowClient

        from orchestrator.model_logging import CELL_TAG, SELECTED_TAG, SELECTION_TAG

        try:
            tags = MlflowClient().get_logged_model(model_id).tags
        except Exception:  # a local folder copied from another store: the metadata's note stands
            return out
        out["selected"] = tags.get(SELECTED_TAG) == "true" if SELECTED_TAG in tags else None
        out["cell"] = tags.get(CELL_TAG)
        out["note"] = tags.get(SELECTION_TAG) or out["note"]
    return out


def _result(uri: str, model: Any, texts: list[str], table: Any) -> dict[str, Any]:
    meta = _metadata(model)
    labels = [str(v) for v in meta.get("labels") or []]
    probs = [c for c in table.columns if c.startswith("p_")]
    predictions = [
        {
            "text": text,
            "label": str(table["label"].iloc[i]),
            "probability": float(table["probability"].iloc[i]),
            "probabilities": {c[2:]: float(table[c].iloc[i]) for c in probs},
        }
        for i, text in enumerate(texts)
    ]
    return {
        "model": uri,
        "model_id": getattr(model.metadata, "model_id", None),
        "mlflow_run_id": meta.get("mlflow_run_id"),
        "trial_key": meta.get("trial_key"),
        "labels": labels,
        "privacy": meta.get("privacy"),
        "selection": _selection(model, meta),
        "test_accuracy": (meta.get("metrics") or {}).get("test_accuracy"),
        "predictions": predictions,
    }


def _csv_text(header: list[str], rows: list[dict[str, str]], table: Any) -> str:
    buf = io.StringIO()
    extra = [c for c in ("label", "probability") if c not in header]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*header, *extra])
    for i, row in enumerate(rows):
        values = {**row, "label": str(table["label"].iloc[i]), "probability": f"{table['probability'].iloc[i]:.6f}"}
        writer.writerow([values[c] for c in (*header, *extra)])
    return buf.getvalue()


def privacy_line(privacy: dict[str, Any] | None) -> str:
    """The guarantee in one line; the epsilon spent rounded up (it stays an upper bound)."""
    if not privacy or privacy.get("epsilon_spent") is None:
        return "non-private (no privacy guarantee)"
    from orchestrator.report import upper_bound_text

    spent = upper_bound_text(privacy["epsilon_spent"])
    return (
        f"{privacy['mechanism']}: epsilon {spent} <= target {privacy['epsilon_target']:g} "
        f"at delta {privacy['delta']:g} ({privacy['accountant']}, q {privacy['sample_rate']:.4g}, "
        f"T {privacy['steps']})"
    )


def render(r: dict[str, Any]) -> str:
    if "csv" in r and "output" not in r:
        return r["csv"]
    lines = [f"model {r['model']}: {privacy_line(r.get('privacy'))}"]
    note = (r.get("selection") or {}).get("note")
    if note:
        lines.append(f"  {note}")
    if "output" in r:
        lines.append(f"{len(r['predictions'])} rows labelled: {r['output']}")
        return "\n".join(lines)
    for p in r["predictions"]:
        text = p["text"].replace("\n", " ")
        lines.append(f"{p['label']}\t{p['probability']:.4f}\t{text[:100]}{'...' if len(text) > 100 else ''}")
    return "\n".join(lines)

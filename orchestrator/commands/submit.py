"""``lmo-dp submit``: run an lmo-dp command as a job on a Ray cluster (Ray's job API)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from noise_search.errors import InputError
from orchestrator.cli import add_json_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="run an lmo-dp command on a Ray cluster through its job API",
        description=(
            "Submit `lmo-dp COMMAND ...` to the Ray cluster whose dashboard is at --address, with this "
            "checkout as the job's working directory. Example: lmo-dp submit --address "
            "http://127.0.0.1:8265 --follow -- sweep --config examples/sweep-tiny.yaml. Relative paths "
            "in COMMAND are relative to the project root. A Ray auth token is sent when one is found "
            "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) unless RAY_AUTH_MODE=disabled."
        ),
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="URL",
        help="the Ray cluster's dashboard / job API URL http://HOST:PORT, e.g. http://127.0.0.1:8265 "
        "(not the GCS address HOST:PORT that lmo-dp sweep --address takes) (default: $RAY_API_SERVER_ADDRESS)",
    )
    p.add_argument("--follow", action="store_true", help="stream the job's logs and wait for its final status")
    p.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="environment variable for the job (repeatable), e.g. MLFLOW_TRACKING_URI=http://mlflow:5000; "
        "credentials (names with PASSWORD, SECRET, TOKEN, ...) are refused: the job's metadata would show them, "
        "so they go in the nodes' ~/.lmodp/secrets.env",
    )
    p.add_argument("--submission-id", default=None, help="job id to use instead of a generated one")
    p.add_argument(
        "--working-dir",
        default=None,
        help="directory uploaded as the job's working directory (default: this lmo-dp checkout)",
    )
    add_json_flag(p)
    p.add_argument("command_args", nargs=argparse.REMAINDER, metavar="-- COMMAND ...", help="the lmo-dp command")
    p.set_defaults(handler=run, render=render)


def _command_args(args: argparse.Namespace) -> list[str]:
    command = list(args.command_args)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise InputError("COMMAND: missing; put the lmo-dp command after '--', e.g. -- account --mechanism ...")
    if command[0] == "submit":
        raise InputError("COMMAND: 'submit' cannot be submitted; give the command to run on the cluster")
    from orchestrator.cli import build_parser

    build_parser().parse_args(command)  # bad sub-commands fail here (exit 2), before anything starts
    return command


def _check_config_file(command: list[str], working_dir: Path) -> None:
    """The ``--config FILE`` of the submitted command must be a readable file here, before Ray is contacted.

    A relative ``FILE`` is looked up in ``working_dir``: the job runs there (Ray uploads it).
    """
    from orchestrator.cli import build_parser

    value = getattr(build_parser().parse_args(command), "config", None)
    if not value:
        return
    path = Path(value).expanduser()
    path = path if path.is_absolute() else working_dir / path
    if not path.is_file():
        raise InputError(f"--config: {value} is not a file (looked for {path}); the job would fail on the cluster")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise InputError(f"--config: cannot read {path}: {exc.strerror or exc}") from exc


def _working_dir(value: str | None) -> Path:
    from orchestrator.submit import project_root

    if value is None:
        return project_root()
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise InputError(f"--working-dir: {value} is not a directory")
    return path


def run(args: argparse.Namespace) -> dict:
    from orchestrator import submit as jobs

    command = _command_args(args)
    address = jobs.normalize_address(args.address)
    env_vars = jobs.parse_env(args.env)
    working_dir = _working_dir(args.working_dir)
    _check_config_file(command, working_dir)
    headers = jobs.auth_headers()
    version = jobs.check_dashboard(address, headers)
    client = jobs.job_client(address, headers)
    job_id = jobs.submit(client, command, working_dir=working_dir, env_vars=env_vars, submission_id=args.submission_id)
    result = {
        "job_id": job_id,
        "address": address,
        "ray_version": version,
        "entrypoint": jobs.entrypoint(command),
        "working_dir": str(working_dir),
        "ray_auth": "token" if headers else None,
        "status": None,
        "message": None,
        "result": None,
    }
    if not args.follow:
        result["status"] = str(client.get_job_status(job_id).value)
        return result
    print(f"lmo-dp submit: job {job_id} submitted to {address}; following its logs", file=sys.stderr)
    sink = sys.stderr if args.json else sys.stdout
    try:
        outcome = jobs.follow(client, job_id, sink)
    except KeyboardInterrupt:
        print(
            f"lmo-dp submit: stopped following; job {job_id} keeps running "
            f"(`{_ray_cli(result)} job stop --address {address} {job_id}` ends it)",
            file=sys.stderr,
        )
        raise
    result.update(status=outcome.status, message=outcome.message, result=jobs.last_json_object(outcome.logs))
    if outcome.status != "SUCCEEDED":
        args.exit_code = 1
        detail = f": {' '.join(outcome.message.split())}" if outcome.message else ""
        print(f"lmo-dp submit: failed: job {job_id} {outcome.status}{detail}", file=sys.stderr)
    return result


def _ray_cli(r: dict) -> str:
    """``ray`` as the user must type it: Ray's CLI sends the token only with ``RAY_AUTH_MODE=token`` set."""
    return "RAY_AUTH_MODE=token ray" if r.get("ray_auth") == "token" else "ray"


def render(r: dict) -> str:
    if r["status"] not in ("SUCCEEDED", "FAILED", "STOPPED"):
        ray = _ray_cli(r)
        return (
            f"submitted job {r['job_id']} to {r['address']} (status {r['status']})\n"
            f"  logs:   {ray} job logs --follow --address {r['address']} {r['job_id']}\n"
            f"  status: {ray} job status --address {r['address']} {r['job_id']}"
        )
    return f"job {r['job_id']} {r['status']}"

"""``lmo-dp check-cluster FILE [--json]``: a Ray cluster-launcher config checked offline.

Checks ``FILE`` the way ``ray up`` prepares it (Ray's defaults and schema, the node types; no AWS
call, no credentials: :func:`orchestrator.cluster.validate_cluster_config`) and refuses the
shipped placeholder values (:func:`orchestrator.cluster.check_edited`). A problem is one line
naming the field, exit 2. On success prints what the cluster will be: its node types and the
environment every node gets.
"""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.cli import add_json_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-cluster",
        help="check a Ray cluster-launcher config (cluster.yaml) offline before `ray up`",
        description="Validate FILE against Ray's launcher schema and defaults, offline (no AWS call), and "
        "refuse the placeholder values cluster.yaml ships with (the lines marked EDIT).",
    )
    p.add_argument("file", metavar="FILE", help="cluster launcher YAML, e.g. cluster.yaml")
    add_json_flag(p)
    p.set_defaults(handler=run, render=render)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from orchestrator.cluster import check_edited, node_environment, validate_cluster_config

    prepared = validate_cluster_config(args.file)
    check_edited(prepared)
    types = prepared["available_node_types"]
    return {
        "ok": True,
        "file": args.file,
        "cluster_name": prepared.get("cluster_name"),
        "provider": prepared["provider"].get("type"),
        "region": prepared["provider"].get("region"),
        "head_node_type": prepared["head_node_type"],
        "max_workers": prepared.get("max_workers"),
        "node_types": {
            name: {
                "instance_type": (t.get("node_config") or {}).get("InstanceType"),
                "min_workers": t.get("min_workers", 0),
                "max_workers": t.get("max_workers", 0),
                "resources": t.get("resources", {}),
            }
            for name, t in types.items()
        },
        "environment": node_environment(prepared),
    }


def render(r: dict[str, Any]) -> str:
    lines = [
        f"ok: {r['file']}: cluster {r['cluster_name']} on {r['provider']} ({r['region']}), head {r['head_node_type']}"
    ]
    for name, t in r["node_types"].items():
        lines.append(
            f"  {name}: {t['instance_type']}, {t['min_workers']}..{t['max_workers']} nodes, resources {t['resources']}"
        )
    for key in ("MLFLOW_TRACKING_URI", "LMODP_STORAGE_PATH"):
        if key in r["environment"]:
            lines.append(f"  {key}={r['environment'][key]}")
    return "\n".join(lines)

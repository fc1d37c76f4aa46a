"""Session-wide real servers for orchestrator end-to-end tests (see ``servers.py``).

* ``ray_cluster``: a two-node Ray cluster on loopback (head 127.0.0.2, worker 127.0.0.3, one CPU each),
  token authentication with a private token; ``ray_cluster.dashboard_url`` for ``lmo-dp submit``,
  ``ray_cluster.address`` for ``ray.init``, ``ray_cluster.client_env()`` for client processes.
* ``s3_server``: SeaweedFS S3 on 127.0.0.1 with a bucket and credentials of its own.
* ``mlflow_server``: ``mlflow server`` (SQLite backend) whose artifacts go to ``s3_server``, proxied.

Each starts on first use and stops at the end of the session, also when tests fail.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[servers.RayCluster]:
    with servers.ray_cluster(workers=1, num_cpus=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.S3Server]:
    base = tmp_path_factory.mktemp("s3")
    server = servers.start_with_retry(lambda: servers.start_s3_server(base, bucket="lmodp"), "S3 server")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, s3_server: servers.S3Server
) -> Iterator[servers.MlflowServer]:
    base = tmp_path_factory.mktemp("mlflow")
    server = servers.start_with_retry(
        lambda: servers.start_mlflow_server(base, s3_server, prefix="mlflow-artifacts"), "MLflow server"
    )
    try:
        yield server
    finally:
        server.stop()

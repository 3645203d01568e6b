"""Registry tests run against both stores fmpipe supports: the embedded sqlite file (the default)
and a real `mlflow server` on 127.0.0.1 backed by PostgreSQL (the deployment shape).

PostgreSQL itself is started by `.ci/run` (which exports FMPIPE_TEST_POSTGRES_URI); this session
creates a fresh database on it, starts `mlflow server` on that database, and stops the server (by
its PID's process group) and drops the database afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.core.credentials import HTTP_PASSWORD, HTTP_USER, PG_PASSWORD
from components.registry.connection import http_limits_env

PG_ENV = "FMPIPE_TEST_POSTGRES_URI"
PG_DEFAULT = "postgresql://fmpipe:fmpipe@127.0.0.1:5432/postgres"  # the role .ci/run creates


@dataclass(frozen=True)
class Store:
    kind: str  # sqlite | server
    uri: str
    client: MlflowClient


@pytest.fixture(autouse=True)
def _restore_mlflow_http_env() -> Iterator[None]:
    """The CLI and the steps set MLflow's HTTP limits with setdefault, and move a URI's credentials
    into the environment; don't leak either across tests."""
    saved = {k: os.environ.get(k) for k in [*http_limits_env(1, 1), HTTP_USER, HTTP_PASSWORD, PG_PASSWORD]}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    MlflowClient(uri, uri).search_registered_models()  # create the schema once
    return uri


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """A fresh database on the test PostgreSQL (SQLAlchemy URL, psycopg2 driver); dropped after."""
    import psycopg2
    from sqlalchemy.engine import make_url

    admin = os.environ.get(PG_ENV, PG_DEFAULT)
    try:
        conn = psycopg2.connect(admin, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        if PG_ENV in os.environ:
            raise
        pytest.skip(f"no PostgreSQL at {PG_DEFAULT} (`.ci/run` starts one, or set {PG_ENV}): "
                    f"{str(exc).strip().splitlines()[0]}")
    conn.autocommit = True
    name = f"fmpipe_test_{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(drivername="postgresql+psycopg2", database=name).render_as_string(
            hide_password=False)
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process we started in its own session, and its workers (same process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def server_uri(postgres_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on loopback over the PostgreSQL database."""
    work = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log_path = work / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres_db,
             "--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "2",
             # gunicorn, not the default uvicorn: uvicorn's keep-alive answers stall ~40 ms each on
             # loopback (Nagle vs delayed ACK), which made these tests 4x slower.
             "--gunicorn-opts", "--log-level warning"],
            cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # No background job runner: the registry does not need it and it costs CPU.
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                 "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        deadline = time.monotonic() + 120
        while not _healthy(uri):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = Path(log_path).read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow server did not come up on {uri}:\n{tail}")
            time.sleep(0.5)
        yield uri
    finally:
        stop_group(proc)


@pytest.fixture(params=["sqlite", "server"])
def store(request: pytest.FixtureRequest) -> Store:
    import mlflow

    uri = request.getfixturevalue(f"{request.param}_uri")
    mlflow.set_tracking_uri(uri)  # for code that uses the global client (the pipeline step)
    return Store(request.param, uri, MlflowClient(tracking_uri=uri, registry_uri=uri))


@pytest.fixture
def model() -> str:
    return f"reg-{uuid.uuid4().hex[:10]}"

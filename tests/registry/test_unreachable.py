"""A tracking server that is down or stops answering: a bounded wait, one clear line, no run left open."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import pytest

from components.core.config import load_params
from components.core.tracking import RunContext
from components.registry import step as registry_step
from components.registry.connection import RegistryUnreachableError
from pipelines.cli import main
from tests.conftest import REPO

FAST_FAIL = ["-S", "registry.server_timeout_s=2", "-S", "registry.server_retries=0"]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def stalling_server() -> Iterator[str]:
    """Healthy on /health, then silent on every API call: a server that stops answering mid-way."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path != "/health":
                release.wait(60)
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()


def _run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, float]:
    started = time.monotonic()
    code = main([*args, "--params", str(REPO / "params.yaml"), *FAST_FAIL])
    return code, capsys.readouterr().err, time.monotonic() - started


def test_a_silent_server_fails_the_cli_within_the_timeout(silent_port, capsys):
    uri = f"http://127.0.0.1:{silent_port}"
    code, err, took = _run(["promote", "m", "--version", "1", "--to", "production", "--reason", "r",
                            "-S", f"registry.tracking_uri={uri}"], capsys)
    assert code == 1 and took < 60  # a 2 s limit; generous bound: this checks "no hang"
    assert err.strip() == (f"fmpipe: error: cannot reach the MLflow tracking server at {uri} (no answer "
                           "within 2 s); is it running? (set registry.tracking_uri)")


def test_a_closed_port_fails_at_once(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when we call it
    code, err, took = _run(["status", "-S", f"registry.tracking_uri=http://127.0.0.1:{port}"], capsys)
    assert code == 1 and took < 60 and "(connection refused)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # ~30 s of real timeouts: make test-slow (CI runs it)
def test_a_server_that_stops_answering_mid_way_is_bounded_by_mlflow_timeouts(stalling_server, capsys):
    code, err, took = _run(["status", "-S", f"registry.tracking_uri={stalling_server}"], capsys)
    # Bounded by fmpipe's limits (timeout x retries, tens of seconds at most, depending on which
    # limits this process set first), where MLflow's defaults would retry for many minutes.
    # Generous on purpose: this checks "no hang", not speed.
    assert code == 1 and took < 120
    (line,) = err.strip().splitlines()
    assert line.startswith(f"fmpipe: error: the MLflow tracking server at {stalling_server} "
                           "stopped answering")


def test_the_pipeline_step_fails_fast_and_opens_no_run(silent_port):
    uri = f"http://127.0.0.1:{silent_port}"
    params = load_params(REPO / "params.yaml", ["registry.server_timeout_s=2"])
    ctx = RunContext(pipeline_run_id=uuid.uuid4().hex, tracking_uri=uri)
    started = time.monotonic()
    with pytest.raises(RegistryUnreachableError, match="cannot reach the MLflow tracking server"):
        registry_step.run_promote("1", params, ctx)
    assert time.monotonic() - started < 60 and mlflow.active_run() is None  # no hang (generous bound)


@pytest.mark.parametrize("command", [["run"], ["step", "ingest"]])
def test_a_pipeline_run_checks_the_server_before_any_work(command, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when we call it
    code = main([*command, "--params", str(REPO / "params.yaml"), *FAST_FAIL,
                 "-S", f"registry.tracking_uri=http://127.0.0.1:{port}"])
    out, err = capsys.readouterr()
    assert code == 1 and "(connection refused)" in err and len(err.strip().splitlines()) == 1
    assert "versioning data" not in out and "step ingest: done" not in out  # no work was done

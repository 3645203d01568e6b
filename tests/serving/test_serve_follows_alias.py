"""`fmpipe serve` as a user runs it, on loopback, against a real `mlflow server` of its own, under a
bounded load: promote and roll back while it runs (no failed request, each answer labelled with
the version that gave it), a broken version that is never swapped in, and the registry killed
(serving goes on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from components.registry.registry import BLESSED_TAG, PARITY_TAG, PRODUCTION, STAGING, promote, rollback
from components.registry.step import artifact_contract
from components.serving.loadtest import LoadResult, run_load
from tests.registry.conftest import _healthy, free_port, stop_group
from tests.registry.helpers import FAST

ACTOR = "user:test@serving-tests"
POLL_S = 0.5


def get_json(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **json.loads(exc.read())}
    except OSError:  # not listening yet
        return {}


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    """Wait for an event (a liveness bound, not a speed target)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_mlflow_server(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(work / "mlflow.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
         "--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--gunicorn-opts", "--log-level warning"],
        cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    wait_for("the mlflow server", lambda: _healthy(uri) or proc.poll() is not None, timeout=120)
    assert proc.poll() is None, (work / "mlflow.log").read_text()[-2000:]
    return proc, uri


def register(folder: Path, model: str) -> str:
    """A version as the pipeline registers it, with the gate tags evaluate and export would set."""
    from components.registry.registry import register_model

    with mlflow.start_run():
        version = register_model(folder, model, {BLESSED_TAG: "true", PARITY_TAG: "true"}, {},
                                  artifact_contract(folder))
    return version


def test_serve_follows_promotion_and_rollback_under_load(artifacts, tmp_path):
    registry, uri = start_mlflow_server(tmp_path)
    server = None
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("serving-test")
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        model = "serve-test"
        v1, v2, v3 = (register(artifacts[k], model) for k in ("one", "two", "broken"))
        for v in (v1, v2, v3):
            promote(model, v, STAGING, "staged", ACTOR, client=client, limits=FAST)
        promote(model, v1, PRODUCTION, "first", ACTOR, client=client, limits=FAST)

        (tmp_path / "params.yaml").write_text(
            f"registry:\n  tracking_uri: {uri}\n  server_timeout_s: 2\n  server_retries: 0\n")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "fmpipe"), "serve", model, "--port", str(port),
             "--poll-s", str(POLL_S), "--params", str(tmp_path / "params.yaml")],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("the server to be ready", lambda: get_json(f"{url}/ready").get("ready") is True
                 if server.poll() is None else pytest.fail(server.stdout.read().decode()))
        meta = get_json(f"{url}/metadata")
        assert (meta["version"], meta["alias"], meta["task"]) == (v1, PRODUCTION, "text")
        assert meta["torch_loaded"] is False
        assert meta["lineage"]["blessed"] == "true" and meta["labels"] == ["negative", "neutral", "positive"]

        bodies = [json.dumps({"inputs": [f"review number {i}: not bad at all"]}).encode() for i in range(50)]
        load, stop = LoadResult(), threading.Event()
        loader = threading.Thread(target=run_load, args=(f"{url}/predict", bodies),
                                  kwargs={"concurrency": 4, "count": 10**7, "duration_s": 300, "stop": stop,
                                          "result": load})
        loader.start()
        try:
            def answered_by(version: str, after: int) -> bool:
                return any(v == version for _, v in load.versions[after:])

            wait_for("answers", lambda: len(load.versions) > 20)
            mark = len(load.versions)
            moved = time.monotonic()
            promote(model, v2, PRODUCTION, "better", ACTOR, client=client, limits=FAST)
            wait_for(f"version {v2} answering", lambda: answered_by(v2, mark))
            print(f"promotion visible after {time.monotonic() - moved:.2f} s (poll {POLL_S} s)")

            mark = len(load.versions)
            rollback(model, ACTOR, "back", client=client, limits=FAST)
            wait_for(f"version {v1} answering again", lambda: answered_by(v1, mark))

            promote(model, v3, PRODUCTION, "broken on purpose", ACTOR, client=client, limits=FAST)
            wait_for("the broken version refused",
                     lambda: v3 in get_json(f"{url}/metadata")["following"]["refused"])
            meta = get_json(f"{url}/metadata")
            assert meta["version"] == v1 and "does not open" in meta["following"]["refused"][v3]

            stop_group(registry)  # the registry goes away; serving must not
            wait_for("the registry seen down",
                     lambda: not get_json(f"{url}/metadata")["following"]["registry_ok"])
            mark = len(load.versions)
            wait_for("answers with the registry down", lambda: len(load.versions) > mark + 20)
        finally:
            stop.set()
            loader.join(timeout=30)

        assert load.failures == [], load.failures[:5]
        versions = [v for _, v in load.versions]
        assert set(versions) == {v1, v2} and versions[0] == v1 and versions[-1] == v1
        assert get_json(f"{url}/ready") == {"ready": True, "model": model, "version": v1}
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert f'fmpipe_model_version{{alias="production",model="{model}",version="{v1}"}} 1.0' in metrics
        assert "fmpipe_registry_up 0.0" in metrics and "fmpipe_model_refusals_total 1.0" in metrics
        assert "fmpipe_model_swaps_total 3.0" in metrics  # v1, v2, v1 again
        served = float(next(line.split()[-1] for line in metrics.splitlines()
                            if line.startswith('fmpipe_requests_total{code="200"}')))
        assert served >= len(load.latencies_s)
        bad = urllib.request.Request(f"{url}/predict", b'{"inputs": [1]}')
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad, timeout=10)
        assert caught.value.code == 400
        assert json.loads(caught.value.read()) == {"error": "input 0 is int, not a text"}
    finally:
        if server is not None:
            stop_group(server)
        stop_group(registry)

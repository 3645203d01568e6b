"""A bounded load generator for `fmpipe serve` (used by bench/bench_serving.py and the tests).

Plain asyncio with keep-alive HTTP/1.1 connections, one request per write: the client costs little
CPU, which matters when it shares a 2-core machine with the server it measures. Each connection
sends its requests one after another; with `rate` the requests start on a fixed schedule (open
loop, as independent users would send them), else as fast as answers come (closed loop:
saturation). Bounded by a request count and a duration, whichever ends first.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)  # answered requests (status 200)
    versions: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, X-Model-Version)
    failures: list[str] = field(default_factory=list)       # status != 200, or no answer
    elapsed_s: float = 0.0
    inputs_per_request: int = 1

    def summary(self) -> dict[str, float]:
        lat = np.array(self.latencies_s) * 1000 if self.latencies_s else np.array([np.nan])
        return {"requests": len(self.latencies_s), "failures": len(self.failures),
                "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                "requests_per_s": len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0,
                "inputs_per_s": len(self.latencies_s) * self.inputs_per_request / self.elapsed_s
                if self.elapsed_s else 0.0}


def request_bytes(host: str, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    pairs = (line.partition(":") for line in lines[1:] if line)
    headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _connection(url: str, bodies: list[bytes], start: int, step: int, result: LoadResult,
                      t0: float, deadline: float, count: int, interval: float | None,
                      stop: threading.Event | None) -> None:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/predict"
    reader = writer = None
    i = start
    while i < count and time.perf_counter() < deadline and not (stop and stop.is_set()):
        if interval is not None:  # open loop: this request's slot in the schedule
            wait = t0 + i * interval - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
        body = bodies[i % len(bodies)]
        # Open loop: latency counts from the request's slot, so a server that falls behind is not
        # flattered by requests that started late (coordinated omission).
        sent = min(time.perf_counter(), t0 + i * interval) if interval is not None else time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
                writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(request_bytes(host, path, body))
            status, headers, payload = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.failures.append(f"no answer: {type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
        else:
            done = time.perf_counter()
            if status == 200:
                result.latencies_s.append(done - sent)
                result.versions.append((done - t0, headers.get("x-model-version", "")))
            else:
                result.failures.append(f"{status}: {payload[:200].decode(errors='replace')}")
        i += step
    if writer is not None:
        writer.close()


async def _run(url: str, bodies: list[bytes], concurrency: int, count: int, duration_s: float,
               rate: float | None, result: LoadResult, stop: threading.Event | None) -> LoadResult:
    t0 = time.perf_counter()
    interval = 1.0 / rate if rate else None
    deadline = t0 + duration_s
    await asyncio.gather(*(_connection(url, bodies, k, concurrency, result, t0, deadline, count, interval,
                                       stop) for k in range(concurrency)))
    result.elapsed_s = time.perf_counter() - t0
    return result


def run_load(url: str, bodies: list[bytes], *, concurrency: int = 1, count: int = 1000,
             duration_s: float = 10.0, rate: float | None = None, inputs_per_request: int = 1,
             stop: threading.Event | None = None, result: LoadResult | None = None) -> LoadResult:
    """Send up to `count` POSTs of `bodies` (cycled) to url over `concurrency` connections, for at
    most `duration_s` or until `stop` is set; `rate`: requests per second in all (open loop), else
    as fast as answered. Pass `result` to watch it fill from another thread."""
    result = result if result is not None else LoadResult()
    result.inputs_per_request = inputs_per_request
    return asyncio.run(_run(url, bodies, concurrency, count, duration_s, rate, result, stop))

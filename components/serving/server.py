"""`fmpipe serve`: an HTTP server (FastAPI on uvicorn) for the version an alias points at.

  POST /predict   {"inputs": [...]}: texts, or base64-encoded image or audio files; each input's label and
                  probability, and the version that answered (also in the X-Model-Version header)
  GET  /health    the process is alive
  GET  /ready     a model is loaded and answered its canaries (503 until then)
  GET  /metadata  model, version, alias, lineage tags, when loaded; following state and refusals
  GET  /metrics   Prometheus text: requests, errors, latency, batch sizes, the version served

Every error is a JSON object {"error": reason} with a 4xx/5xx status, never a traceback. The
model runs on its own runtime (onnxruntime / OpenVINO): torch is never imported here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from components.core.config import ServeConfig
from components.serving.live import AliasFollower, Batcher, LoadedModel, probabilities

log = logging.getLogger("fmpipe.serve")

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class BadRequest(Exception):
    """The request's own fault (400, 413): the message says which input and why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (several servers per process in tests)."""

    def __init__(self, model_name: str, alias: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("fmpipe_requests", "HTTP requests to /predict by status code", ["code"],
                                registry=r)
        self.errors = Counter("fmpipe_request_errors", "requests refused or failed, by reason", ["reason"],
                              registry=r)
        self.inputs = Counter("fmpipe_predicted_inputs", "inputs labelled", registry=r)
        self.latency = Histogram("fmpipe_request_latency_seconds", "time to answer /predict", registry=r,
                                 buckets=LATENCY_BUCKETS)
        self.batch = Histogram("fmpipe_batch_inputs", "inputs per model run (dynamic batching)", registry=r,
                               buckets=BATCH_BUCKETS)
        self.version = Gauge("fmpipe_model_version", "the version served (1 for the one serving now)",
                             ["model", "alias", "version"], registry=r)
        self.swaps = Counter("fmpipe_model_swaps", "versions swapped in", registry=r)
        self.refusals = Counter("fmpipe_model_refusals", "versions not swapped in (failed to load or their "
                                "canaries)", registry=r)
        self.registry_up = Gauge("fmpipe_registry_up", "1 when the last poll of the registry answered",
                                 registry=r)
        self.model_name, self.alias = model_name, alias

    def swapped(self, old: LoadedModel | None, new: LoadedModel) -> None:
        if old is not None:
            self.version.remove(self.model_name, self.alias, old.version)
        self.version.labels(self.model_name, self.alias, new.version).set(1)
        self.swaps.inc()

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def parse_inputs(body: bytes, task: str, cfg: ServeConfig) -> list:
    """The inputs of a /predict body, checked against the limits; BadRequest names what is wrong."""
    if len(body) > cfg.max_body_mb * 1024 * 1024:
        raise BadRequest(f"request body of {len(body)} bytes is over the limit of {cfg.max_body_mb:g} MB",
                         413)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON ({exc})") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest('expected a JSON object {"inputs": [...]}')
    inputs = payload["inputs"]
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('"inputs" must be a non-empty list')
    if len(inputs) > cfg.max_inputs:
        raise BadRequest(f"{len(inputs)} inputs in one request; the limit is {cfg.max_inputs}", 413)
    for i, item in enumerate(inputs):
        if not isinstance(item, str):
            kinds = {"text": "a text", "audio": "a base64-encoded audio file"}
            kind = kinds.get(task, "a base64-encoded image file")
            raise BadRequest(f"input {i} is {type(item).__name__}, not {kind}")
    if task == "text":
        for i, text in enumerate(inputs):
            if len(text) > cfg.max_text_chars:
                raise BadRequest(f"input {i} has {len(text)} characters; the limit is "
                                 f"{cfg.max_text_chars}", 413)
        return inputs
    if task == "audio":
        return [decode_clip(i, item) for i, item in enumerate(inputs)]
    return [decode_image(i, item) for i, item in enumerate(inputs)]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (a chunked upload declares no length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body is over the limit of {limit / 1024 / 1024:g} MB", 413)
        chunks.append(chunk)
    return b"".join(chunks)


MAX_IMAGE_PIXELS = 40_000_000  # a decoded image this large would stall the server: refused


MAX_CLIP_SECONDS = 600  # a longer clip would stall the server: refused (the model hears its loudest second)


def decode_clip(index: int, item: str) -> bytes:
    """A base64 audio file (WAV, FLAC, OGG), checked to decode here, so one bad clip cannot fail a batch."""
    import soundfile as sf

    try:
        data = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"input {index} is not base64") from None
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # libsndfile's errors for what it cannot read
        why = re.sub(r"Error opening <_io\.BytesIO object at 0x[0-9a-f]+>: ", "", str(exc))
        raise BadRequest(f"input {index} is not audio this model can read ({why})") from None
    if info.frames == 0:
        raise BadRequest(f"input {index} holds no samples")
    if info.duration > MAX_CLIP_SECONDS:
        raise BadRequest(f"input {index} lasts {info.duration:.0f} s; the limit is {MAX_CLIP_SECONDS} s", 413)
    return data


def decode_image(index: int, item: str) -> bytes:
    """A base64 image file, checked to decode here, so one bad image cannot fail a batch."""
    from PIL import Image

    try:
        data = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"input {index} is not base64") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:  # known from the header, before decoding
                raise BadRequest(f"input {index} is {image.width}x{image.height} pixels; the limit is "
                                 f"{MAX_IMAGE_PIXELS:,} pixels", 413)
            image.load()
    except BadRequest:
        raise
    except Exception as exc:  # Pillow raises several kinds for bad files
        why = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
        raise BadRequest(f"input {index} is not an image this model can read ({why})") from None
    return data


def create_app(follower: AliasFollower, cfg: ServeConfig, metrics: Metrics | None = None) -> FastAPI:
    """The app around a follower that already tracks the alias (its `current` is what serves)."""
    metrics = metrics or Metrics(follower.model_name, follower.alias)
    limit = int(cfg.max_body_mb * 1024 * 1024)
    batcher = Batcher(cfg.max_batch, cfg.max_wait_ms, on_batch=metrics.batch.observe)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        follower.stop()
        batcher.close()

    app = FastAPI(title="fmpipe serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.follower = batcher, metrics, follower

    def error(status: int, reason: str, message: str) -> JSONResponse:
        metrics.errors.labels(reason).inc()
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid request"}, status_code=400)

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        loaded = follower.current  # this request runs on this version to its end
        response = await _predict(request, loaded)
        metrics.requests.labels(str(response.status_code)).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _predict(request: Request, loaded: LoadedModel | None) -> Response:
        if loaded is None:
            return error(503, "not_ready", "no model loaded yet")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return error(413, "too_large", f"request body of {declared} bytes is over the limit of "
                         f"{cfg.max_body_mb:g} MB")
        try:
            body = await read_body(request, limit)
            if loaded.task == "text":
                inputs = parse_inputs(body, loaded.task, cfg)
            else:  # decoding images takes time: not on the event loop, which serves everyone
                inputs = await asyncio.to_thread(parse_inputs, body, loaded.task, cfg)
        except BadRequest as exc:
            return error(exc.status, "bad_request", str(exc))
        try:
            logits = await asyncio.wrap_future(batcher.submit(loaded, inputs))
        except Exception as exc:
            log.error("inference failed on version %s: %s: %s", loaded.version, type(exc).__name__, exc)
            return error(500, "inference", f"the model failed on this request ({type(exc).__name__})")
        probs = probabilities(logits)
        best = probs.argmax(axis=1)
        labels = loaded.model.labels
        body = {"model": loaded.model_name, "version": loaded.version, "alias": follower.alias,
                "predictions": [{"label": labels[b], "probability": round(float(p[b]), 6)}
                                for b, p in zip(best, probs, strict=True)]}
        metrics.inputs.inc(len(inputs))
        return Response(json.dumps(body), media_type="application/json",
                        headers={"X-Model-Version": loaded.version})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "alive"}

    @app.get("/ready")
    async def ready() -> Response:
        loaded = follower.current
        if loaded is None:
            return JSONResponse({"ready": False, "error": "no model loaded yet"}, status_code=503)
        if not batcher.alive:
            return JSONResponse({"ready": False, "error": "the model thread stopped"}, status_code=503)
        return JSONResponse({"ready": True, "model": loaded.model_name, "version": loaded.version})

    @app.get("/metadata")
    async def metadata() -> dict:
        loaded = follower.current
        return {**(loaded.metadata() if loaded else {"model": follower.model_name, "version": None}),
                "alias": follower.alias, "poll_s": follower.poll_s, "following": follower.snapshot(),
                "torch_loaded": "torch" in sys.modules}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.registry_up.set(1 if follower.state.registry_ok else 0)
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def serve(follower: AliasFollower, cfg: ServeConfig, host: str, port: int) -> None:
    """Run the server until interrupted (the follower has loaded the first version)."""
    import uvicorn

    metrics = Metrics(follower.model_name, follower.alias)
    if follower.current is not None:
        metrics.swapped(None, follower.current)
    follower.on_change(metrics.swapped)
    follower.on_refused(lambda version, why: metrics.refusals.inc())
    app = create_app(follower, cfg, metrics)
    follower.start()
    # uvloop and httptools where installed (they are, with fmpipe): the lowest overhead per request.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")

"""What `fmpipe serve` keeps alive: the version an alias points at, following the alias as it moves,
and a batcher that groups concurrent requests into one run of the model.

- `load_version` downloads a version's ONNX artifact, opens it with its own runtime (no torch) and
  asks it its canaries; a version that fails is never served.
- `AliasFollower` polls the registry; when the alias moves it loads the new version beside the old
  one and swaps a single reference. A request holds the `LoadedModel` it started with, so requests in
  flight finish on it. A registry that does not answer leaves the current model serving.
- `Batcher` runs on one thread: it takes every request waiting (up to `max_batch` inputs) and runs
  them as one batch per model; while a batch runs, the next one gathers. With `max_wait_ms` it also
  waits that long for more, but only while requests are arriving together (the last batch held more
  than one), so a lone client never waits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.serving.serving import SERVING_FILE, OnnxClassifier, canary_problem, open_classifier

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("fmpipe.serve")

# Lineage tags /metadata shows, where the version has them.
METADATA_TAGS = ("fmpipe.data_source", "fmpipe.data_md5", "fmpipe.git_commit", "fmpipe.pipeline_run_id",
                 "fmpipe.base_model", "fmpipe.task", "fmpipe.params_digest", "fmpipe.blessed",
                 "fmpipe.parity_passed")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LoadedModel:
    """One version, opened and checked: what a request runs on from start to end."""

    model_name: str
    version: str
    model: OnnxClassifier
    task: str
    tags: dict[str, str]
    loaded_at: str
    folder: Path

    def metadata(self) -> dict[str, Any]:
        return {"model": self.model_name, "version": self.version, "task": self.task,
                "labels": self.model.labels, "runtime": self.model.session.backend,
                "loaded_at": self.loaded_at,
                "lineage": {k.removeprefix("fmpipe."): v for k, v in self.tags.items() if k in METADATA_TAGS},
                "metrics": {k.removeprefix("metric."): v for k, v in self.tags.items()
                            if k.startswith("metric.")}}


class VersionRefused(Exception):
    """A version that cannot be served: it does not download, open, or answer its canaries."""


def download_version(client: MlflowClient, model_name: str, version: str, dst: Path) -> Path:
    """The folder of a version's fmpipe ONNX artifact (the one holding serving.json), downloaded."""
    import mlflow

    # Through the client, not a `models:/` URI: that would need the process-wide registry URI.
    source = client.get_model_version_download_uri(model_name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                     tracking_uri=client.tracking_uri))
    found = sorted(local.rglob(SERVING_FILE))
    if not found:
        raise VersionRefused(f"{model_name} version {version} holds no fmpipe ONNX artifact")
    return found[0].parent


def load_version(client: MlflowClient, model_name: str, version: str, work: Path,
                 threads: int = 0) -> LoadedModel:
    """Download, open and canary-check one version (VersionRefused says why it cannot serve)."""
    folder = work / f"v{version}-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    try:
        tags = dict(client.get_model_version(model_name, version).tags)
        model_dir = download_version(client, model_name, version, folder)
        try:
            model = open_classifier(model_dir, intra_op_threads=threads)
        except Exception as exc:
            raise VersionRefused(f"version {version} does not open: {type(exc).__name__}: "
                                 f"{str(exc).strip()[:300]}") from None
        problem = canary_problem(model, model_dir)
        if problem:
            raise VersionRefused(f"version {version}: {problem}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return LoadedModel(model_name, str(version), model, model.config.get("task", "text"), tags,
                       utc_now(), folder)


@dataclass
class FollowState:
    """What /metadata reports about following the alias."""

    registry_ok: bool = True
    registry_error: str = ""
    last_poll: str = ""
    alias_version: str | None = None          # where the alias pointed at the last good poll
    refused: dict[str, str] = field(default_factory=dict)  # version -> why it was not swapped in
    load_error: str = ""  # the last load that failed for a passing reason (retried at the next poll)
    swaps: list[dict[str, str]] = field(default_factory=list)  # {"from", "to", "at"}


class AliasFollower:
    """Keeps `current` on the version `alias` of `model_name` points at."""

    def __init__(self, client: MlflowClient, model_name: str, alias: str, poll_s: float, work: Path,
                 threads: int = 0) -> None:
        self.client, self.model_name, self.alias = client, model_name, alias
        self.poll_s, self.work, self.threads = poll_s, work, threads
        self.current: LoadedModel | None = None
        self.state = FollowState()
        self.lock = threading.Lock()  # guards `state` between the poll thread and /metadata
        self._on_change: list[Callable[[LoadedModel | None, LoadedModel], None]] = []
        self._on_refused: list[Callable[[str, str], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> None:
        """Ask where the alias points; load and swap in a new version that passes its checks."""
        try:
            version = str(self.client.get_model_version_by_alias(self.model_name, self.alias).version)
        except Exception as exc:  # unreachable, or the alias was removed: keep serving what we have
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            if self.state.registry_ok or first != self.state.registry_error:
                log.warning("registry: %s; still serving version %s", first,
                            self.current.version if self.current else "none")
            with self.lock:
                self.state.registry_ok, self.state.registry_error = False, first
            return
        with self.lock:
            self.state.registry_ok, self.state.registry_error = True, ""
            self.state.last_poll, self.state.alias_version = utc_now(), version
        current = self.current
        if (current and current.version == version) or version in self.state.refused:
            return
        try:
            loaded = load_version(self.client, self.model_name, version, self.work, self.threads)
        except VersionRefused as exc:  # the version itself is bad: not tried again until the alias moves
            with self.lock:
                self.state.refused[version] = str(exc)
            log.error("not serving %s version %s: %s; still serving version %s", self.model_name, version,
                      exc, current.version if current else "none")
            for callback in self._on_refused:
                callback(version, str(exc))
            return
        except Exception as exc:  # a download cut short, the registry going away: the next poll retries
            with self.lock:
                self.state.load_error = f"version {version}: {type(exc).__name__}: {str(exc)[:300]}"
            log.warning("could not load %s version %s (%s: %s); retrying at the next poll", self.model_name,
                        version, type(exc).__name__, exc)
            return
        self.current = loaded  # the swap: one reference; requests hold the model they started on
        with self.lock:
            self.state.load_error = ""
            self.state.swaps.append({"from": current.version if current else "", "to": version,
                                     "at": loaded.loaded_at})
        log.info("serving %s version %s (alias %s)%s", self.model_name, version, self.alias,
                 f", was version {current.version}" if current else "")
        for callback in self._on_change:
            callback(current, loaded)
        if current is not None:
            # Its session stays in memory for requests still running on it; only the files go.
            shutil.rmtree(current.folder, ignore_errors=True)

    def on_change(self, callback: Callable[[LoadedModel | None, LoadedModel], None]) -> None:
        """Call callback(old, new) after each swap."""
        self._on_change.append(callback)

    def on_refused(self, callback: Callable[[str, str], None]) -> None:
        """Call callback(version, why) when a version is not swapped in."""
        self._on_refused.append(callback)

    def snapshot(self) -> dict[str, Any]:
        """The following state as plain data, consistent (for /metadata)."""
        with self.lock:
            return json.loads(json.dumps(asdict(self.state)))

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.poll_s):
                try:
                    self.poll_once()
                except Exception:  # never let the follower die: the next poll tries again
                    log.exception("alias follower")

        self._thread = threading.Thread(target=loop, name="fmpipe-alias-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)


@dataclass
class _Job:
    loaded: LoadedModel
    inputs: list
    future: Future


class Batcher:
    """Groups concurrent requests into batches of up to `max_batch` inputs, run on one thread."""

    def __init__(self, max_batch: int = 32, max_wait_ms: float = 0.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._on_batch = on_batch
        self._last_size = 1
        self._thread = threading.Thread(target=self._loop, name="fmpipe-batcher", daemon=True)
        self._thread.start()

    def submit(self, loaded: LoadedModel, inputs: list) -> Future:
        """A future of the logits of `inputs` on `loaded` (the model the request started with)."""
        future: Future = Future()
        self._queue.put(_Job(loaded, inputs, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _gather(self, first: _Job) -> list[_Job]:
        jobs, count = [first], len(first.inputs)
        deadline = time.monotonic() + (self.max_wait_s if self._last_size > 1 else 0.0)
        while count < self.max_batch:
            try:
                left = deadline - time.monotonic()
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # close after this batch
                break
            jobs.append(job)
            count += len(job.inputs)
        self._last_size = len(jobs)
        return jobs

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while (first := self._queue.get()) is not None:
            try:
                # A request given up on (its client went away) is not run.
                jobs = [job for job in self._gather(first) if job.future.set_running_or_notify_cancel()]
                groups: dict[int, list[_Job]] = {}
                for job in jobs:  # one run per model: a swap mid-queue splits the batch
                    groups.setdefault(id(job.loaded), []).append(job)
                for group in groups.values():
                    self._run(group)
            except Exception:  # never let the model thread die: every later request would hang
                log.exception("batcher")

    def _run(self, jobs: list[_Job]) -> None:
        model = jobs[0].loaded.model
        inputs = [item for job in jobs for item in job.inputs]
        if self._on_batch:
            with contextlib.suppress(Exception):
                self._on_batch(len(inputs))
        try:
            logits = model.logits(inputs, batch_size=max(self.max_batch, 1))
        except Exception as exc:
            if len(jobs) == 1:
                _settle(jobs[0].future, exception=exc)
                return
            for job in jobs:  # one bad input must not fail its batch-mates: run each alone
                self._run([job])
            return
        start = 0
        for job in jobs:
            _settle(job.future, result=logits[start : start + len(job.inputs)])
            start += len(job.inputs)


def _settle(future: Future, result: Any = None, exception: BaseException | None = None) -> None:
    """Give a future its outcome, unless it is already done (cancelled meanwhile)."""
    with contextlib.suppress(InvalidStateError):
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)


def probabilities(logits: np.ndarray) -> np.ndarray:
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)

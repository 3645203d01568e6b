"""Run the DAG on this machine with kfp.local (the embedded default orchestrator)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from components.core.config import Params
from components.core.errors import FmpipeError
from components.core.process import RUN_PID_ENV
from components.core.tracking import ERROR_TAG, RunContext, finish_pipeline_run, parent_run_id


class ConsoleFilter(io.TextIOBase):
    """Everything the steps print goes to the log file; the console gets only fmpipe's own lines.

    kfp.local echoes each task's full executor input and library chatter; a person watching a
    run wants progress and errors. kfp's own task status lines (on stderr) pass untouched.
    """

    KEEP = ("[fmpipe]", "fmpipe: error")

    def __init__(self, log: TextIO, console: TextIO) -> None:
        self.log, self.console, self.pending = log, console, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if any(mark in line for mark in self.KEEP):
                self.console.write(line.strip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()


@dataclass
class RunOutcome:
    ctx: RunContext
    succeeded: bool
    error: str | None = None
    outputs_dir: Path | None = None
    log_file: Path | None = None
    parent_run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


LOCAL_IMAGE = "localhost/fmpipe/python-components:0.1.0"  # what `make image` builds, as podman names it


def container_runner(project: Path) -> Any:
    """kfp.local's DockerRunner on a Docker-compatible engine (podman's `system service`, found
    through DOCKER_HOST): every step runs in the component image, with the project mounted at its
    own path (its code, data, MLflow store, DVC cache and run outputs), so a step reads and writes
    what a subprocess step would. One line when the engine or the image is missing."""
    import kfp.local

    from components.core.image import COMPONENT_IMAGE

    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no engine, no socket, no permission: all one line
        raise FmpipeError(f"--runner container needs a Docker-compatible engine ({type(exc).__name__}): "
                          "start podman's with `make podman-service`, and set DOCKER_HOST as it says"
                          ) from None
    try:
        tags = {tag for image in client.images.list() for tag in image.tags}
    finally:
        client.close()
    if COMPONENT_IMAGE not in tags:
        raise FmpipeError(f"the component image {COMPONENT_IMAGE} is not on the engine at "
                          f"{os.environ.get('DOCKER_HOST', 'its default socket')}: `make image` builds it")
    mounts = [docker.types.Mount(str(project), str(project), type="bind")]
    for shared in (Path("/usr/share/datasets"),):  # Debian's data sets (Fashion-MNIST), read-only
        if shared.is_dir():
            mounts.append(docker.types.Mount(str(shared), str(shared), type="bind", read_only=True))
    return kfp.local.DockerRunner(
        mounts=mounts, working_dir=str(project), network_mode="host", user=f"{os.getuid()}:{os.getgid()}",
        # The mounted code, not the copy baked into the image: the run is of this checkout.
        environment={"PYTHONPATH": str(project), "HOME": "/tmp"})


def run_locally(source: Path, params: Params, ctx: RunContext, work_dir: Path,
                runner: str = "subprocess", project: Path | None = None) -> RunOutcome:
    """Run every step as a local subprocess (or, runner="container", in the component image through
    a local engine); return what happened (never raises on step failure)."""
    import kfp.local
    import mlflow

    from pipelines.dag import build_pipeline

    engine = (container_runner(project or Path.cwd()) if runner == "container"
              else kfp.local.SubprocessRunner(use_venv=False))

    outputs = work_dir / "outputs"
    # kfp.local leaks a temp dir per task: keep them in one place we delete afterwards.
    tmp = work_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    old_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)
    os.environ[RUN_PID_ENV] = str(os.getpid())  # each step ends when this process does
    tempfile.tempdir = None
    kfp.local.init(runner=engine, pipeline_root=str(outputs), raise_on_error=True)
    error = None
    log_file = work_dir / "pipeline.log"
    try:
        with open(log_file, "w") as log, contextlib.redirect_stdout(ConsoleFilter(log, sys.stdout)):
            build_pipeline(params)(source=str(source), params_json=params.to_json(),
                                   ctx_json=ctx.to_json())
    except RuntimeError as exc:
        error = str(exc)
    except Exception as exc:
        if runner != "container" or type(exc).__module__.split(".")[0] != "docker":
            raise
        # The engine refused a step's container: one line, and the run ends FAILED, not KILLED.
        error = f"the container engine refused a step: {getattr(exc, 'explanation', None) or exc}"
    except BaseException:
        # Ctrl-C (which stops the step's process too) or a SIGTERM: nothing may stay RUNNING.
        (work_dir / FINISHED_MARKER).write_text("KILLED\n")
        with contextlib.suppress(Exception):
            finish_pipeline_run(ctx, "KILLED")
        raise
    finally:
        os.environ.pop(RUN_PID_ENV, None)
        if old_tmp is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_tmp
        tempfile.tempdir = None
        shutil.rmtree(tmp, ignore_errors=True)

    (work_dir / FINISHED_MARKER).write_text("FAILED\n" if error else "FINISHED\n")
    finish_pipeline_run(ctx, "FAILED" if error else "FINISHED")
    outcome = RunOutcome(ctx=ctx, succeeded=error is None, outputs_dir=outputs, log_file=log_file)
    outcome.parent_run_id = parent_run_id(ctx, create=False)
    if outcome.parent_run_id:
        run = mlflow.MlflowClient().get_run(outcome.parent_run_id)
        outcome.metrics, outcome.tags = dict(run.data.metrics), dict(run.data.tags)
    if error:
        # The failing step recorded a clear reason on the run; prefer it to kfp's generic text.
        outcome.error = outcome.tags.get(ERROR_TAG) or error.splitlines()[0]
    return outcome


FINISHED_MARKER = "finished"   # written in a run's folder when the run has ended
STALE_AFTER_S = 2 * 24 * 3600  # an unfinished run not written to for this long was killed


def prune_old_runs(runs_dir: Path, keep: int, current: Path | None = None) -> list[Path]:
    """Delete the outputs (model, ONNX files, splits, checkpoints) of every finished run but the
    newest `keep`, so scheduled runs don't fill the disk; each run's pipeline.log stays. A run
    still going is never touched: only runs that wrote their `finished` marker, or whose folder
    nobody wrote to for two days (killed). The registered versions live in MLflow, not here.
    Returns the run folders pruned."""
    def last_written(run: Path) -> float:
        marks = (run, run / "pipeline.log", run / FINISHED_MARKER)
        return max(path.stat().st_mtime for path in marks if path.exists())

    if keep <= 0 or not runs_dir.is_dir():
        return []
    now = time.time()
    ended = [d for d in runs_dir.iterdir() if (d / "outputs").is_dir() and d != current
             and ((d / FINISHED_MARKER).exists() or now - last_written(d) > STALE_AFTER_S)]
    ended.sort(key=last_written, reverse=True)
    for run in ended[keep:]:
        shutil.rmtree(run / "outputs", ignore_errors=True)
    return ended[keep:]

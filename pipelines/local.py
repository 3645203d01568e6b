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
from typing import TextIO

from components.core.config import Params
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


def run_locally(source: Path, params: Params, ctx: RunContext, work_dir: Path) -> RunOutcome:
    """Run every step as a local subprocess; return what happened (never raises on step failure)."""
    import kfp.local
    import mlflow

    from pipelines.dag import build_pipeline

    outputs = work_dir / "outputs"
    # kfp.local leaks a temp dir per task: keep them in one place we delete afterwards.
    tmp = work_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    old_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)
    os.environ[RUN_PID_ENV] = str(os.getpid())  # each step ends when this process does
    tempfile.tempdir = None
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(outputs),
                   raise_on_error=True)
    error = None
    log_file = work_dir / "pipeline.log"
    try:
        with open(log_file, "w") as log, contextlib.redirect_stdout(ConsoleFilter(log, sys.stdout)):
            build_pipeline(params)(source=str(source), params_json=params.to_json(),
                                   ctx_json=ctx.to_json())
    except RuntimeError as exc:
        error = str(exc)
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

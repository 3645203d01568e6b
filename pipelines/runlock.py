"""One `fmpipe run` at a time in a repository, and the clean-up after a run that was killed outright.

Two scheduled runs in one repository would share data/<name>, DVC's lock and the checkpoint
folder. The lock is an flock on .fmpipe/run.lock, so the kernel releases it however its holder
ends, SIGKILL included. The holder writes who it is into the file and empties it when it ends
normally; a record still there when the next run takes the lock means that run was killed before
it could clean up (SIGKILL, the OOM killer, a power cut), and the next run finishes the job: its
MLflow runs are marked KILLED instead of staying RUNNING forever, and its temp folder goes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from components.core.errors import FmpipeError

LOCK_FILE = Path(".fmpipe") / "run.lock"
BUSY_EXIT = 75  # sysexits' EX_TEMPFAIL: "try again later", what a scheduler should read it as


class RunBusy(FmpipeError):
    """Another `fmpipe run` holds this repository's run lock."""

    exit_code = BUSY_EXIT


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode(errors="replace").strip()
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


def _write(fd: int, record: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())
    os.fsync(fd)


def describe(record: dict) -> str:
    """'run 1a2b3c4d (pid 123 on host, started 2026-11-28 23:10)' from a lock record."""
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.get("started", 0)))
    return (f"run {str(record.get('run_id', '?'))[:8]} (pid {record.get('pid', '?')} on "
            f"{record.get('host', '?')}, started {started})")


@contextlib.contextmanager
def run_lock(root: Path, record: dict, wait: bool = False) -> Iterator[dict]:
    """Hold the repository's run lock for the body; yield the record a killed run left behind
    ({} when the last run ended normally). Without `wait`, a held lock raises RunBusy at once."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe(_read(fd))
            if not wait:
                raise RunBusy(f"another fmpipe run is going in {root}: {holder}; pass --wait to "
                              "start when it ends") from None
            print(f"[fmpipe] waiting for {holder} to end ...", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        left_behind = _read(fd)
        _write(fd, {**record, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        try:
            yield left_behind
        finally:
            os.ftruncate(fd, 0)  # ended normally (Ctrl-C and SIGTERM included): nothing to clean up
    finally:
        os.close(fd)  # releases the flock


def run_state(root: Path) -> tuple[str, dict]:
    """("going" | "killed" | "none", the lock record) for `fmpipe status`; reads, never locks (a
    probe that took the lock could make a run starting at that instant exit busy)."""
    path = root / LOCK_FILE
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "none", {}
    if not record:
        return "none", {}
    if record.get("host") != socket.gethostname():
        return "going", record  # another machine's process: assume it is alive
    try:
        os.kill(int(record.get("pid", 0)), 0)
    except ProcessLookupError:
        return "killed", record
    except (PermissionError, ValueError, OverflowError):
        pass
    return "going", record


def clean_up_killed_run(record: dict) -> str:
    """Finish what a killed run could not: mark its MLflow runs (pipeline and steps) still RUNNING
    as KILLED, write its `finished` marker, remove its temp folder. Returns a line saying so."""
    from pipelines.local import FINISHED_MARKER

    done = []
    run_dir = Path(record["run_dir"]) if record.get("run_dir") else None
    if run_dir is not None and run_dir.is_dir():
        if not (run_dir / FINISHED_MARKER).exists():
            (run_dir / FINISHED_MARKER).write_text("KILLED\n")
        if (run_dir / "tmp").exists():
            shutil.rmtree(run_dir / "tmp", ignore_errors=True)
            done.append("its temp folder removed")
    if record.get("run_id") and record.get("tracking_uri"):
        try:
            marked = _mark_killed(record["tracking_uri"], record.get("experiment", "fmpipe"),
                                  record["run_id"])
            done.insert(0, f"{marked} MLflow run(s) left RUNNING marked KILLED")
        except Exception as exc:  # the store may be gone or down: the new run must not fail on it
            done.insert(0, f"its MLflow runs could not be marked ({type(exc).__name__})")
    return (f"{describe(record)} was killed before it ended"
            + (": " + ", ".join(done) if done else ""))


def _mark_killed(tracking_uri: str, experiment: str, pipeline_run_id: str) -> int:
    import mlflow

    from components.core.tracking import PIPELINE_RUN_TAG

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    running = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}' and attributes.status = 'RUNNING'")
    for run in running:
        client.set_terminated(run.info.run_id, status="KILLED")
    return len(running)

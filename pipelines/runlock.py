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
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from components.core.errors import FmpipeError
from components.core.process import RUN_PID_ENV, started_at

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


@dataclass
class HeldLock:
    """The run lock while held: `killed` lists the runs killed before they could clean up (oldest
    first); they stay in the lock file until `cleaned()`, so a clean-up that fails or is itself
    killed is tried again by the next run."""

    fd: int
    record: dict
    killed: list[dict] = field(default_factory=list)

    def cleaned(self) -> None:
        self.killed = []
        self.record.pop("killed", None)
        _write(self.fd, self.record)


@contextlib.contextmanager
def run_lock(root: Path, record: dict, wait: bool = False) -> Iterator[HeldLock]:
    """Hold the repository's run lock for the body. Without `wait`, a held lock raises RunBusy at
    once; with it, this waits for the holder to end."""
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
        left = _read(fd)
        # What is left is a run that never ended normally, plus the runs it had not cleaned up yet.
        killed = [*left.pop("killed", []), *([left] if left else [])]
        mine = {**record, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        held = HeldLock(fd, {**mine, "killed": killed} if killed else mine, killed)
        _write(fd, held.record)
        try:
            yield held
        finally:
            # Ended normally (Ctrl-C and SIGTERM included): only what is still to clean up stays.
            if held.killed:
                _write(fd, {"killed": held.killed})
            else:
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _alive(record: dict) -> bool:
    """Whether the run in `record` is still going (a reused pid is not that run)."""
    if record.get("host") != socket.gethostname():
        return True  # another machine's process: assume it is
    pid = int(record.get("pid") or 0)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = started_at(pid)
    return started is None or started <= float(record.get("started", 0)) + 5


def run_state(root: Path) -> tuple[str, dict]:
    """("going" | "killed" | "none", the run's record) for `fmpipe status`; reads, never locks (a
    probe that took the lock could make a run starting at that instant exit busy)."""
    try:
        record = json.loads((root / LOCK_FILE).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "none", {}
    if record.get("pid") and _alive(record):
        return "going", record
    killed = [*record.get("killed", []), *([record] if record.get("pid") else [])]
    return ("killed", killed[-1]) if killed else ("none", {})


def stop_leftover_processes(record: dict, grace_s: float = 5.0) -> int:
    """Processes the killed run started (steps, torchrun workers) still running: they carry its pid
    in FMPIPE_RUN_PID. Give them `grace_s` to go (each step watches for its run), then SIGTERM
    them, so nothing trains on beside the next run. Returns how many had to be stopped."""
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return 0
    mark = f"{RUN_PID_ENV}={record['pid']}".encode()

    def leftovers() -> list[int]:
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if mark in environ.read_bytes().split(b"\0"):
                    found.append(int(environ.parent.name))
            except (OSError, ValueError):
                continue
        return [pid for pid in found if pid != os.getpid()]

    deadline = time.monotonic() + grace_s
    while (pids := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    return len(pids)


def clean_up_killed_run(record: dict) -> tuple[str, bool]:
    """Finish what a killed run could not: stop processes it left, mark its MLflow runs (pipeline
    and steps) still RUNNING as KILLED, write its `finished` marker, remove its temp folder.
    Returns a line saying so, and whether all of it was done (False: try again next run)."""
    from components.core.tracking import end_running_runs
    from pipelines.local import FINISHED_MARKER

    done, complete = [], True
    if stopped := stop_leftover_processes(record):
        done.append(f"{stopped} process(es) it left stopped")
    if record.get("run_id") and record.get("tracking_uri"):
        try:
            marked = end_running_runs(record["tracking_uri"], record.get("experiment", "fmpipe"),
                                      record["run_id"], "KILLED")
            done.append(f"{marked} MLflow run(s) left RUNNING marked KILLED")
        except Exception as exc:  # the store may be down: the new run must not fail on it
            done.append(f"its MLflow runs could not be marked yet ({type(exc).__name__}; the next "
                        "run tries again)")
            complete = False
    run_dir = Path(record["run_dir"]) if record.get("run_dir") else None
    if run_dir is not None and run_dir.is_dir():
        if not (run_dir / FINISHED_MARKER).exists():
            (run_dir / FINISHED_MARKER).write_text("KILLED\n")
        if (run_dir / "tmp").exists():
            shutil.rmtree(run_dir / "tmp", ignore_errors=True)
            done.append("its temp folder removed")
    line = f"{describe(record)} was killed before it ended" + (": " + ", ".join(done) if done else "")
    return line, complete

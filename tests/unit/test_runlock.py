"""One `fmpipe run` at a time per repository; a killed run is cleaned up by the next one; a step's
process ends with the run that started it. Real processes, real flock, real SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

from components.core.process import proc_stat
from components.core.tracking import KIND_TAG, PIPELINE_RUN_TAG
from pipelines.local import FINISHED_MARKER
from pipelines.runlock import (
    BUSY_EXIT,
    LOCK_FILE,
    RunBusy,
    clean_up_killed_run,
    run_lock,
    run_state,
    stop_leftover_processes,
)

REPO = Path(__file__).resolve().parents[2]


def hold_lock_in_child(root: Path, seconds: float, record: dict) -> subprocess.Popen:
    """A process that takes the run lock, says 'held', holds it `seconds`, then writes 'released'."""
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from pipelines.runlock import run_lock
        with run_lock(Path({str(root)!r}), {record!r}):
            print("held", flush=True)
            time.sleep({seconds})
            Path({str(root)!r}, "released").write_text("yes")
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def is_gone(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is None or fields[0] in ("Z", "X")  # a zombie nobody reaped has ended all the same


def test_a_second_run_stops_at_once_and_names_the_one_going(tmp_path):
    with run_lock(tmp_path, {"run_id": "aaaabbbbcccc"}), pytest.raises(RunBusy) as busy:
        with run_lock(tmp_path, {"run_id": "ddddeeeeffff"}):
            pytest.fail("two runs held the lock at once")
    message = str(busy.value)
    assert "run aaaabbbb" in message and f"pid {os.getpid()}" in message and "--wait" in message
    assert busy.value.exit_code == BUSY_EXIT == 75


def test_a_run_that_ended_normally_leaves_nothing_to_clean_up(tmp_path):
    with run_lock(tmp_path, {"run_id": "first"}) as lock:
        assert lock.killed == []
    assert (tmp_path / LOCK_FILE).read_text() == ""
    with run_lock(tmp_path, {"run_id": "second"}) as lock:
        assert lock.killed == []


def test_wait_queues_behind_the_run_going(tmp_path, capsys):
    holder = hold_lock_in_child(tmp_path, 2.0, {"run_id": "holder00"})
    with run_lock(tmp_path, {"run_id": "waiter00"}, wait=True):
        assert (tmp_path / "released").exists(), "took the lock while the other run still held it"
    assert holder.wait(timeout=30) == 0
    assert "waiting for run holder00" in capsys.readouterr().out


def test_the_run_after_a_sigkilled_one_finds_its_record_and_cleans_up(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("fmpipe", artifact_location=str(tmp_path / "artifacts"))
    tags = {PIPELINE_RUN_TAG: "killed0run"}
    parent = client.create_run(exp, tags={**tags, KIND_TAG: "pipeline"}).info.run_id
    step = client.create_run(exp, tags={**tags, KIND_TAG: "step"}).info.run_id
    other = client.create_run(exp, tags={PIPELINE_RUN_TAG: "another"}).info.run_id  # still going
    run_dir = tmp_path / "runs" / "killed0run"
    (run_dir / "tmp" / "kfp-task").mkdir(parents=True)

    record = {"run_id": "killed0run", "run_dir": str(run_dir), "tracking_uri": uri, "experiment": "fmpipe"}
    assert run_state(tmp_path) == ("none", {})
    holder = hold_lock_in_child(tmp_path, 60, record)
    assert run_state(tmp_path)[0] == "going"  # what `fmpipe status` shows
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    state, left = run_state(tmp_path)
    assert state == "killed" and left["run_id"] == "killed0run"
    with run_lock(tmp_path, {"run_id": "next"}) as lock:
        (killed,) = lock.killed
        assert killed["run_id"] == "killed0run" and killed["pid"] == holder.pid
        line, complete = clean_up_killed_run(killed)
        lock.cleaned()
    assert complete and "run killed0r" in line and "was killed before it ended" in line
    assert "2 MLflow run(s) left RUNNING marked KILLED" in line and "temp folder removed" in line
    assert [client.get_run(r).info.status for r in (parent, step, other)] == ["KILLED", "KILLED", "RUNNING"]
    assert (run_dir / FINISHED_MARKER).read_text() == "KILLED\n" and not (run_dir / "tmp").exists()
    with run_lock(tmp_path, {"run_id": "after"}) as lock:
        assert lock.killed == []  # cleaned up once, not again
    assert run_state(tmp_path) == ("none", {})


def test_a_clean_up_that_could_not_finish_is_tried_again_by_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    record = {"run_id": "r1", "tracking_uri": "http://127.0.0.1:9/", "run_dir": str(tmp_path / "none")}
    holder = hold_lock_in_child(tmp_path, 60, record)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with run_lock(tmp_path, {"run_id": "second"}) as lock:
        line, complete = clean_up_killed_run(lock.killed[0])
        assert not complete and "could not be marked yet" in line  # the store is down: no cleaned()
    assert run_state(tmp_path) == ("killed", lock.killed[0])
    with run_lock(tmp_path, {"run_id": "third"}) as lock:
        assert [r["run_id"] for r in lock.killed] == ["r1"]  # still there, not lost


def test_processes_a_killed_run_left_are_stopped_before_the_next_run_starts(tmp_path):
    """A step that outlived its run (it would train beside the next one) carries the run's pid in
    FMPIPE_RUN_PID; the clean-up gives it a grace period, then stops it."""
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             env={**os.environ, "FMPIPE_RUN_PID": "4194301"})
    try:
        # Until the child has exec'd, /proc shows the parent's environment: wait for its own (a
        # loaded machine can take a moment; the test once failed in CI on this race).
        environ, deadline = Path(f"/proc/{stray.pid}/environ"), time.monotonic() + 30
        while b"FMPIPE_RUN_PID=4194301" not in environ.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        record = {"run_id": "gone", "pid": 4194301, "host": socket.gethostname()}
        assert stop_leftover_processes(record, grace_s=0.5) == 1
        assert stray.wait(timeout=10) == -signal.SIGTERM
    finally:
        stray.kill()


def test_a_step_and_what_it_started_end_when_the_run_that_started_it_is_sigkilled(tmp_path):
    """What kfp.local's SubprocessRunner does: the run's process starts the step under `sh -c`.
    With the run SIGKILLed, the step (which called exit_on_user_error) must not go on as an
    orphan, nor must the processes it started (torchrun and its workers, when training spreads)."""
    pids = tmp_path / "pids"
    child = ("import os, subprocess, sys, time\n"
             "from components.core.errors import exit_on_user_error\n"
             "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
             f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{worker.pid}}')\n"
             "exit_on_user_error(time.sleep, 600)\n")
    run = textwrap.dedent(f"""
        import os, shlex, subprocess, sys, time
        os.environ["FMPIPE_RUN_PID"] = str(os.getpid())
        subprocess.Popen(["sh", "-c", shlex.join([sys.executable, "-c", {child!r}]) + "; true"])
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", run], cwd=REPO)
    deadline = time.monotonic() + 30
    while not (pids.exists() and len(pids.read_text().split()) == 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # let the step start its watcher
    step_pid, worker_pid = map(int, pids.read_text().split())
    assert not is_gone(step_pid) and not is_gone(worker_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20  # the watcher looks once a second
    while not (is_gone(step_pid) and is_gone(worker_pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in (step_pid, worker_pid) if not is_gone(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "the step or its worker went on running after the run was killed"


def test_the_guard_does_nothing_inside_the_run_process_itself():
    """Called in the run's own process (tests do that), it must not take itself for an orphan."""
    code = ("import os, time\n"
            "os.environ['FMPIPE_RUN_PID'] = str(os.getpid())\n"
            "from components.core.process import end_with_parent\n"
            "end_with_parent(poll_s=0.1)\n"
            "time.sleep(1.0)\n"
            "print('alive')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "alive"

"""One `fmpipe run` at a time per repository; a killed run is cleaned up by the next one; a step's
process ends with the run that started it. Real processes, real flock, real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

from components.core.tracking import KIND_TAG, PIPELINE_RUN_TAG
from pipelines.local import FINISHED_MARKER
from pipelines.runlock import BUSY_EXIT, LOCK_FILE, RunBusy, clean_up_killed_run, run_lock, run_state

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
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie nobody reaped has ended all the same


def test_a_second_run_stops_at_once_and_names_the_one_going(tmp_path):
    with run_lock(tmp_path, {"run_id": "aaaabbbbcccc"}), pytest.raises(RunBusy) as busy:
        with run_lock(tmp_path, {"run_id": "ddddeeeeffff"}):
            pytest.fail("two runs held the lock at once")
    message = str(busy.value)
    assert "run aaaabbbb" in message and f"pid {os.getpid()}" in message and "--wait" in message
    assert busy.value.exit_code == BUSY_EXIT == 75


def test_a_run_that_ended_normally_leaves_nothing_to_clean_up(tmp_path):
    with run_lock(tmp_path, {"run_id": "first"}) as killed:
        assert killed == {}
    assert (tmp_path / LOCK_FILE).read_text() == ""
    with run_lock(tmp_path, {"run_id": "second"}) as killed:
        assert killed == {}


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
    with run_lock(tmp_path, {"run_id": "next"}) as killed:
        assert killed["run_id"] == "killed0run" and killed["pid"] == holder.pid
        line = clean_up_killed_run(killed)
    assert "run killed0r" in line and "was killed before it ended" in line
    assert "2 MLflow run(s) left RUNNING marked KILLED" in line and "temp folder removed" in line
    assert [client.get_run(r).info.status for r in (parent, step, other)] == ["KILLED", "KILLED", "RUNNING"]
    assert (run_dir / FINISHED_MARKER).read_text() == "KILLED\n" and not (run_dir / "tmp").exists()
    with run_lock(tmp_path, {"run_id": "after"}) as killed:
        assert killed == {}  # cleaned up once, not again
    assert run_state(tmp_path) == ("none", {})


def test_clean_up_survives_a_tracking_store_that_is_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    record = {"run_id": "r", "tracking_uri": "http://127.0.0.1:9/", "run_dir": str(tmp_path / "none")}
    assert "its MLflow runs could not be marked" in clean_up_killed_run(record)


def test_a_step_process_ends_when_the_run_that_started_it_is_sigkilled(tmp_path):
    """What kfp.local's SubprocessRunner does: the run's process starts the step under `sh -c`.
    With the run SIGKILLed, the step (which called exit_on_user_error) must not go on as an orphan."""
    pid_file = tmp_path / "step.pid"
    child = ("import os, time\n"
             "from components.core.errors import exit_on_user_error\n"
             f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
             "exit_on_user_error(time.sleep, 600)\n")
    run = textwrap.dedent(f"""
        import os, shlex, subprocess, sys, time
        os.environ["FMPIPE_RUN_PID"] = str(os.getpid())
        subprocess.Popen(["sh", "-c", shlex.join([sys.executable, "-c", {child!r}]) + "; true"])
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", run], cwd=REPO)
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # let the step start its watcher
    step_pid = int(pid_file.read_text())
    assert not is_gone(step_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20  # the watcher looks once a second
    while not is_gone(step_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    gone = is_gone(step_pid)
    if not gone:
        os.kill(step_pid, signal.SIGKILL)
    assert gone, "the step went on running after its run was killed"


def test_the_guard_does_nothing_inside_the_run_process_itself(monkeypatch):
    from components.core.errors import RUN_PID_ENV, end_with_parent

    monkeypatch.setenv(RUN_PID_ENV, str(os.getpid()))
    end_with_parent()  # would SIGTERM this process if it mistook itself for an orphaned step

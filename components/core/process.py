"""Steps that end with the local run that started them (Linux /proc; a no-op elsewhere).

A SIGKILLed `fmpipe run` (OOM killer, `kill -9`) gets no chance to stop the step it is running.
kfp.local starts each step under `sh -c`, so the run is the step's grandparent and a parent-death
signal would not reach it: the step watches its ancestors instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

RUN_PID_ENV = "FMPIPE_RUN_PID"  # set by a local `fmpipe run` for the step processes it starts


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (0 state, 1 ppid, 19 start time in
    clock ticks since boot), or None when the process is gone or /proc can't tell."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), or None when unknown."""
    fields = proc_stat(pid)
    try:
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError, StopIteration):
        return None


def _has_ancestor(pid: int) -> bool | None:
    """Whether `pid` is this process's parent, grandparent, ...; None when /proc can't tell."""
    current = os.getppid()
    for _ in range(64):
        if current == pid:
            return True
        if current <= 1:
            return False
        fields = proc_stat(current)
        if fields is None or not fields[1].isdigit():
            return None
        current = int(fields[1])
    return None


def _stop_with_descendants() -> None:
    """SIGTERM the processes this one started (e.g. torchrun and its workers), then itself."""
    parents = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        fields = proc_stat(int(name))
        if fields is not None and fields[1].isdigit():  # else it ended meanwhile
            parents[int(name)] = int(fields[1])
    me = os.getpid()
    family, frontier = [], [me]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        family += children
        frontier = children
    for pid in family:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    os.kill(me, signal.SIGTERM)


def end_with_parent(poll_s: float = 1.0) -> None:
    """In a step started by a local `fmpipe run`: end this process, and the processes it started,
    once that run's process is gone. A watcher thread checks every `poll_s` seconds, and stops
    watching if /proc can't tell."""
    parent = os.environ.get(RUN_PID_ENV)
    if not parent or str(os.getpid()) == parent or not os.path.exists("/proc/self/stat"):
        return  # on a cluster the pod ends with its launcher; in the run's own process, nothing to do

    def watch() -> None:
        while (alive := _has_ancestor(int(parent))) is True:
            time.sleep(poll_s)
        if alive is False:
            _stop_with_descendants()

    threading.Thread(target=watch, name="fmpipe-run-watch", daemon=True).start()

"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""


class FmpipeError(Exception):
    """A problem the user can fix (bad params, bad data, a missing file)."""


class ConfigError(FmpipeError):
    """A value in params.yaml or an override is invalid."""


class DataError(FmpipeError):
    """Input data cannot be read or fails a rule.

    The message names the file, the column and the rule that failed.
    """

    def __init__(self, file: str, column: str | None, rule: str, detail: str) -> None:
        self.file, self.column, self.rule, self.detail = file, column, rule, detail
        where = f"column '{column}'" if column else "table"
        super().__init__(f"{file}: {where}: rule '{rule}' failed: {detail}")


class GateError(FmpipeError):
    """A quality gate refused to let a model through (not blessed, parity failed)."""


RUN_PID_ENV = "FMPIPE_RUN_PID"  # set by a local `fmpipe run` for the step processes it starts


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc (Linux)."""
    import os

    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    parents[int(name)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
    return parents


def _has_ancestor(pid: int) -> bool | None:
    """Whether `pid` is this process's parent, grandparent, ...; None when /proc can't tell."""
    import os

    current = os.getppid()
    for _ in range(64):
        if current == pid:
            return True
        if current <= 1:
            return False
        try:
            with open(f"/proc/{current}/stat") as stat:
                current = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def _stop_with_descendants() -> None:
    """SIGTERM the processes this one started (e.g. torchrun and its workers), then itself."""
    import contextlib
    import os
    import signal

    parents, me = _parents(), os.getpid()
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
    once that run's process is gone, so a SIGKILLed run does not leave its step training on as an
    orphan. kfp.local starts the step under a shell, so the run is an ancestor, not the parent: a
    watcher thread checks every second (and stops watching if /proc can't tell)."""
    import os
    import threading
    import time

    parent = os.environ.get(RUN_PID_ENV)
    if not parent or str(os.getpid()) == parent or not os.path.exists("/proc/self/stat"):
        return  # on a cluster the pod ends with its launcher; in the run's own process, nothing to do

    def watch() -> None:
        while (alive := _has_ancestor(int(parent))) is True:
            time.sleep(poll_s)
        if alive is False:
            _stop_with_descendants()

    threading.Thread(target=watch, name="fmpipe-run-watch", daemon=True).start()


def exit_on_user_error(fn, *args, **kwargs):  # noqa: ANN001, ANN201 - thin wrapper
    """Run fn; a user-fixable error prints one line and exits 1 instead of a traceback.

    Used by the KFP component bodies, whose subprocess output the user sees; the step's process
    ends with the `fmpipe run` that started it.
    """
    import sys

    end_with_parent()
    try:
        return fn(*args, **kwargs)
    except FmpipeError as exc:
        print(f"fmpipe: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None

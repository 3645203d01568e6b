"""Promotions in processes of their own, for the race and crash tests.

The processes come from a forkserver that imported MLflow once, so each starts in milliseconds
instead of paying two seconds of imports; each opens its own client and connections.

  crash: promote once, SIGKILL ourselves at checkpoint `point`
  race:  one production promotion of `version`, expecting `expected`
  chain: `rounds` production promotions of random versions, each expecting whatever is there
race and chain report "ready" once connected and start on "go" (so that all start together).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from multiprocessing.connection import Connection
from typing import Any

from mlflow import MlflowClient

from components.core.errors import FmpipeError
from components.registry.history import ConcurrentChangeError, aliases
from components.registry.registry import PRODUCTION, promote
from tests.registry.helpers import FAST

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["mlflow", "mlflow.store.model_registry.rest_store",
                                 "mlflow.store.model_registry.sqlalchemy_store", __name__])


def start(mode: str, uri: str, model: str, **kwargs: Any) -> tuple[multiprocessing.Process, Connection]:
    here, there = _context.Pipe()
    proc = _context.Process(target=_main, args=(there, mode, uri, model, kwargs), daemon=True)
    proc.start()
    there.close()
    return proc, here


def _kill_at(point: str):  # noqa: ANN202 - a checkpoint callback
    def checkpoint(reached: str) -> None:
        if reached == point:
            os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint


def _main(conn: Connection, mode: str, uri: str, model: str, kw: dict[str, Any]) -> None:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    actor = f"user:worker-{os.getpid()}"
    if mode == "crash":
        promote(model, kw["version"], kw["alias"], "crash test", actor, expected=kw["expected"],
                client=client, limits=FAST, checkpoint=_kill_at(kw["point"]))
        conn.send({"crashed": False})
        return
    aliases(client, model)  # the first request pays for lazy imports and the HTTP session
    conn.send("ready")
    conn.recv()
    if mode == "race":
        try:
            move = promote(model, kw["version"], PRODUCTION, f"race {kw['version']}", actor,
                           expected=kw["expected"], client=client, limits=FAST)
            conn.send({"version": kw["version"], "ok": True, "seq": move.seq})
        except FmpipeError as exc:
            conn.send({"version": kw["version"], "ok": False, "cas": isinstance(exc, ConcurrentChangeError),
                       "error": str(exc)})
        return
    done, conflicts = [], 0
    for _ in range(kw["rounds"]):
        current = aliases(client, model).get(PRODUCTION)
        version = random.choice([v for v in kw["versions"] if v != current])
        try:
            move = promote(model, version, PRODUCTION, f"chain {version}", actor, expected=current,
                           client=client, limits=FAST)
        except ConcurrentChangeError:
            conflicts += 1
            continue
        if move.seq is not None:  # None: another worker had just put that version there
            done.append(move.seq)
    conn.send({"done": done, "conflicts": conflicts})

"""Alias moves with compare-and-set and a durable history, both kept in the MLflow registry itself.

MLflow has no transactions across calls and records no history of alias moves. fmpipe builds both
from one primitive that is atomic in every backend (sqlite, PostgreSQL, the REST server): creating
a registered model whose name is taken fails with RESOURCE_ALREADY_EXISTS.

A move of `alias` on model M takes history slot n = (last entry of M) + 1:

  1. claim   create the registered model `M.fmpipe-claim-<n>` carrying the intent (alias, version,
             the version it expects to replace, who, why, which process). One process holds slot n.
  2. check   the alias still points at the expected version (compare-and-set), else record the
             refusal in slot n and fail.
  3. arm     tag the claim `armed`: from here on the alias may have moved.
  4. move    set the alias.
  5. record  write M's tag `fmpipe.history.<n>` (one JSON entry), then delete the claim.

Every claimed slot ends with an entry (done, refused or interrupted), so a slot is never reused
and nothing done late on an old slot can touch a newer one. A claim whose process is gone (its
pid is dead on this host, or it is older than the lease) is settled by whoever meets it next,
always the same way: if it was armed and the alias shows its version, the move happened and is
recorded as done; otherwise it is recorded as interrupted, with the alias untouched. So after a
crash at any point the alias and the history agree.

What this cannot rule out: a process that stalls for longer than the lease between two of its own
calls and then resumes (the registry offers no fencing). The lease (minutes) dwarfs a move (~1 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from components.core.errors import FmpipeError

if TYPE_CHECKING:
    from mlflow import MlflowClient

HISTORY_PREFIX = "fmpipe.history."
CLAIM_INFIX = ".fmpipe-claim-"
CLAIM_TAG = "fmpipe.claim"
ARMED_TAG = "fmpipe.armed"
DONE, REFUSED, INTERRUPTED = "done", "refused", "interrupted"
MAX_REASON_CHARS = 2000
CHECKPOINTS = ("claimed", "armed", "moved", "recorded")  # where tests kill a mover

Checkpoint = Callable[[str], None]


class ConcurrentChangeError(FmpipeError):
    """The alias no longer points where the caller expected (compare-and-set failed)."""


class PromotionBusyError(FmpipeError):
    """Another promotion of the same model held the lock for longer than we were willing to wait."""


@dataclass(frozen=True)
class Entry:
    """One alias move as fmpipe records it (the JSON value of a `fmpipe.history.<n>` model tag)."""

    seq: int
    alias: str
    version: str
    previous: str | None  # the version the alias was on before (None: it was not set)
    action: str           # promote | rollback
    actor: str            # user:<name>@<host> or pipeline:<run id>
    reason: str
    at: str               # when the move was made, ISO 8601 UTC
    state: str            # done | refused (compare-and-set failed) | interrupted (mover stopped)
    source: str = ""      # cross-model promotion: the "<model>/<version>" this version was copied from
    note: str = ""        # e.g. where the alias was instead, who settled it after the mover stopped

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Entry:
        raw = json.loads(text)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass(frozen=True)
class Claim:
    """What the claim model carries: the intended entry and the process that made it."""

    entry: Entry
    host: str
    pid: int
    token: str
    started: float  # epoch seconds on the mover's clock
    armed: bool = False

    def tags(self) -> dict[str, str]:
        body = {"entry": asdict(self.entry), "host": self.host, "pid": self.pid,
                "token": self.token, "started": self.started}
        return {CLAIM_TAG: json.dumps(body, sort_keys=True)}

    def is_stale(self, lease_s: float, now: float) -> bool:
        if now - self.started > lease_s:
            return True
        return self.host == host_id() and not _pid_alive(self.pid)


def history_key(seq: int) -> str:
    return f"{HISTORY_PREFIX}{seq:06d}"


def claim_name(model: str, seq: int) -> str:
    return f"{model}{CLAIM_INFIX}{seq:06d}"


def is_claim_name(name: str) -> bool:
    head, sep, tail = name.rpartition(CLAIM_INFIX)
    return bool(head and sep and tail.isdigit())


def host_id() -> str:
    """This machine and PID namespace: a pid is only meaningful there (containers share hostnames)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


def get_model(client: MlflowClient, model: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(model)
    except MlflowException as exc:
        if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise FmpipeError(f"no registered model named '{model}' in the registry") from None
        raise


def alias_map(registered_model: Any) -> dict[str, str]:
    """alias -> version, as a string (sqlite returns ints, the REST server strings)."""
    return {a: str(v) for a, v in registered_model.aliases.items()}


def aliases(client: MlflowClient, model: str) -> dict[str, str]:
    return alias_map(get_model(client, model))


def parse_history(tags: dict[str, str]) -> list[Entry]:
    entries = []
    for key, value in tags.items():
        if key.startswith(HISTORY_PREFIX):
            try:
                entries.append(Entry.from_json(value))
            except (TypeError, ValueError) as exc:
                raise FmpipeError(f"registered-model tag {key} is not a valid fmpipe history entry "
                                  f"({exc}); it was edited by hand?") from None
    return sorted(entries, key=lambda e: e.seq)


def last_seq(tags: dict[str, str]) -> int:
    return max((int(k[len(HISTORY_PREFIX):]) for k in tags if k.startswith(HISTORY_PREFIX)), default=0)


def _history_tags(client: MlflowClient, model: str) -> dict[str, str]:
    return dict(get_model(client, model).tags)


def _read_claim(client: MlflowClient, name: str) -> Claim | None:
    """The claim model `name`, or None if there is none (or it is not one of ours)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as exc:
        if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    try:
        body = json.loads(tags[CLAIM_TAG])
        return Claim(Entry(**body["entry"]), body["host"], int(body["pid"]), body["token"],
                     float(body["started"]), armed=tags.get(ARMED_TAG) == "true")
    except (KeyError, TypeError, ValueError):
        return None


def _delete_quietly(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(name)
    except MlflowException as exc:
        if _code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise


def _settle(client: MlflowClient, model: str, seq: int, claim: Claim, settled_by: str) -> Entry | None:
    """Record what a stopped mover's claim did, decided from the alias alone; then drop the claim.

    The alias is read before the history: if the alias has moved on since (a later move), the
    slot was recorded before that move, and we see it and write nothing.
    """
    moved = claim.armed and aliases(client, model).get(claim.entry.alias) == claim.entry.version
    entry = None
    if last_seq(_history_tags(client, model)) < seq:
        entry = replace(claim.entry, seq=seq, state=DONE if moved else INTERRUPTED,
                        note=f"the mover stopped; settled by {settled_by} at {utc_now()}")
        client.set_registered_model_tag(model, history_key(seq), entry.to_json())
    _delete_quietly(client, claim_name(model, seq))
    return entry


def settle_stopped(client: MlflowClient, model: str, settled_by: str, lease_s: float) -> Any:
    """Settle the claim of a mover that stopped (crash, kill); readers call this before reading.

    Returns the registered model (tags, aliases) as it is afterwards.
    """
    registered = get_model(client, model)
    last = last_seq(registered.tags)
    if last and _read_claim(client, claim_name(model, last)):
        _delete_quietly(client, claim_name(model, last))  # the mover stopped after recording
    settled = False
    while True:
        claim = _read_claim(client, claim_name(model, last + 1))
        if claim is None or not claim.is_stale(lease_s, time.time()):
            return get_model(client, model) if settled else registered
        _settle(client, model, last + 1, claim, settled_by)
        settled, last = True, last + 1


def read_history(client: MlflowClient, model: str, settled_by: str, lease_s: float) -> list[Entry]:
    return parse_history(settle_stopped(client, model, settled_by, lease_s).tags)


def _acquire(client: MlflowClient, model: str, intent: Entry, last_seen: int, wait_s: float,
             lease_s: float) -> tuple[int, Claim, str | None]:
    """Claim the next history slot, settling a stopped mover's claim on the way.

    Returns the slot, our claim, and the version the alias is on, read while holding the slot.
    """
    from mlflow.exceptions import MlflowException

    deadline = time.monotonic() + wait_s
    token = uuid.uuid4().hex
    seq = last_seen + 1
    while True:
        name = claim_name(model, seq)
        claim = Claim(replace(intent, at=utc_now()), host_id(), os.getpid(), token, time.time())
        try:
            client.create_registered_model(
                name, tags=claim.tags(),
                description=f"fmpipe: a move of '{intent.alias}' on {model} in progress "
                            "(removed when done; do not edit)")
        except MlflowException as exc:
            # DOES_NOT_EXIST: the holder deleted it while the server was reporting the conflict.
            if _code(exc) not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
            other = _read_claim(client, name)
            if other is not None and other.token == token:  # our own create, retried by the HTTP layer
                claim = other
            elif other is not None and other.is_stale(lease_s, time.time()):
                _settle(client, model, seq, other, intent.actor)
                seq = last_seq(_history_tags(client, model)) + 1
                continue
            elif other is not None:
                if time.monotonic() > deadline:
                    raise PromotionBusyError(
                        f"another move on {model} is in progress ('{other.entry.alias}' -> version "
                        f"{other.entry.version} by {other.entry.actor}, since {other.entry.at}); "
                        f"waited {wait_s:g} s, try again") from None
                time.sleep(random.uniform(0.05, 0.25))
                seq = last_seq(_history_tags(client, model)) + 1
                continue
            else:
                seq = last_seq(_history_tags(client, model)) + 1
                continue
        held = get_model(client, model)
        last = last_seq(held.tags)
        if last >= seq:  # a late claim on a slot that was recorded meanwhile
            _delete_quietly(client, name)
            seq = last + 1
            continue
        return seq, claim, alias_map(held).get(intent.alias)


SAME_AS_EXPECTED: Any = object()  # move_alias(previous=...): record `expected` as the previous version


def _no_checkpoint(point: str) -> None:
    pass


def move_alias(
    client: MlflowClient, model: str, alias: str, version: str, expected: str | None, *,
    action: str, actor: str, reason: str, source: str = "", wait_s: float = 30.0,
    lease_s: float = 120.0, checkpoint: Checkpoint | None = None, last_seen: int | None = None,
    previous: str | None = SAME_AS_EXPECTED,
) -> Entry:
    """Point `alias` at `version` if it still points at `expected`; record the move in history.

    Raises ConcurrentChangeError when the alias points elsewhere, PromotionBusyError when another
    move of this model does not finish within `wait_s`. `checkpoint` is called at each point named
    in CHECKPOINTS (tests kill the process there). `last_seen`: the last history slot the caller
    read (saves a call; any stale value only costs a retry). `previous`: the version the entry says
    the alias held before, when that is not `expected` (adopting a move made outside fmpipe).
    """
    checkpoint = checkpoint or _no_checkpoint
    if last_seen is None:
        last_seen = last_seq(_history_tags(client, model))
    previous = expected if previous is SAME_AS_EXPECTED else previous
    intent = Entry(seq=0, alias=alias, version=str(version), previous=previous, action=action,
                   actor=actor, reason=reason[:MAX_REASON_CHARS], at="", state="claimed", source=source)
    seq, claim, current = _acquire(client, model, intent, last_seen, wait_s, lease_s)
    name, started = claim_name(model, seq), claim.started
    armed = False
    try:
        checkpoint("claimed")
        if current != expected:
            refused = replace(claim.entry, seq=seq, state=REFUSED, note=f"it was on {_describe(current)}")
            client.set_registered_model_tag(model, history_key(seq), refused.to_json())
            raise ConcurrentChangeError(
                f"'{alias}' of {model} is on {_describe(current)}, not on {_describe(expected)} as this "
                f"move expected; nothing changed: check `fmpipe history {model}` and retry")
        _check_lease(started, lease_s)
        client.set_registered_model_tag(name, ARMED_TAG, "true")
        armed = True
        checkpoint("armed")
        _check_lease(started, lease_s)
        client.set_registered_model_alias(model, alias, str(version))
        checkpoint("moved")
        entry = replace(claim.entry, seq=seq, state=DONE, at=utc_now())
        client.set_registered_model_tag(model, history_key(seq), entry.to_json())
        checkpoint("recorded")
    except ConcurrentChangeError:
        with contextlib.suppress(Exception):  # the slot is recorded; a leftover claim is harmless
            _delete_quietly(client, name)
        raise
    except BaseException:
        # Settle as any later reader would; if the server is gone, a reader will once it is back.
        with contextlib.suppress(Exception):
            _settle(client, model, seq, replace(claim, armed=armed), actor)
        raise
    with contextlib.suppress(Exception):  # the slot is recorded; a leftover claim is harmless
        _delete_quietly(client, name)
    return entry


def _check_lease(started: float, lease_s: float) -> None:
    # Past half the lease a reader may soon treat this move as dead: stop before changing anything.
    if time.time() - started > lease_s / 2:
        raise PromotionBusyError(f"this move took longer than half the lease ({lease_s:g} s); "
                                 "nothing was changed, try again")


def _describe(version: str | None) -> str:
    return "no version" if version is None else f"version {version}"


def rollback_target(entries: list[Entry], alias: str) -> tuple[str | None, str | None]:
    """(version the history says `alias` is on, the version it held before that one).

    Replays the done moves of `alias`: a promotion pushes the version it replaced, a rollback pops
    it; so successive rollbacks walk back through earlier versions instead of toggling.
    """
    stack: list[str] = []
    current: str | None = None
    for entry in entries:
        if entry.alias != alias or entry.state != DONE:
            continue
        if entry.action == "rollback":
            if stack:
                stack.pop()
        elif entry.previous is not None:
            stack.append(entry.previous)
        current = entry.version
    return current, (stack[-1] if stack else None)

"""The two-person rule for `production`: one person requests the move, another approves it.

A model follows the rule when its params say `registry.production_approval: true` (the register
step then records it on the registered model as `fmpipe.production_approval`, so a promote run
with other params is held to it too). Then:

  fmpipe promote MODEL --version N --to production --request --reason "..."   records a request
  fmpipe approve MODEL REQUEST_ID [--reason "..."]   another identity: the alias moves
  fmpipe reject  MODEL REQUEST_ID --reason "..."     anyone, the requester too (a withdrawal)

A request is a tag of the registered model (`fmpipe.request.<id>`, one JSON object). It carries
the version production was on when it was made: approval moves the alias only from there, through
the same compare-and-set as every move, so a reviewer never approves a change to a state that no
longer holds. Gates are checked when the request is made and again at approval. Requests expire
after `registry.approval_ttl_h`. A direct promotion to production is refused; `fmpipe rollback`
is not (it restores a version that was approved before, and is what an incident needs).

Identity is the actor fmpipe records: FMPIPE_ACTOR where set (a CI system's authenticated user),
else `user:<login>@<host>`; the host is ignored, so one person on two machines is one identity.
The rule is as strong as those identities: on a shared login it separates nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from components.core.errors import FmpipeError, GateError
from components.registry.history import MAX_REASON_CHARS, alias_map, settle_stopped, utc_now
from components.registry.registry import (
    PRODUCTION,
    AliasMove,
    MoveLimits,
    check_gates,
    check_no_drift,
    promote,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

REQUEST_PREFIX = "fmpipe.request."
PENDING, APPROVING, APPROVED, REJECTED, EXPIRED = "pending", "approving", "approved", "rejected", "expired"


@dataclass(frozen=True)
class Request:
    id: str
    alias: str
    version: str
    expected: str | None  # where the alias was when requested; approval moves it only from there
    requester: str
    reason: str
    at: str
    expires: str
    state: str = PENDING
    decided_by: str = ""
    decided_at: str = ""
    decision: str = ""    # the approver's or rejecter's reason
    started_by: str = ""  # a pipeline's request: who started the run (may not approve it either)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Request:
        raw = json.loads(text)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.state == PENDING and (now or datetime.now(UTC)) >= _parse(self.expires)

    def shown_state(self) -> str:
        return EXPIRED if self.is_expired() else self.state


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def identity(actor: str) -> str:
    """The person behind an actor string: `user:alice@host1` and `user:alice@host2` are one."""
    return actor.split("@", 1)[0] if actor.startswith("user:") else actor


def requests(registered: Any) -> list[Request]:
    """Every promotion request of a registered model, oldest first."""
    found = [Request.from_json(v) for k, v in registered.tags.items() if k.startswith(REQUEST_PREFIX)]
    return sorted(found, key=lambda r: (r.at, r.id))


def request_promotion(
    model_name: str, version: str, reason: str, actor: str, ttl_h: float, *,
    alias: str = PRODUCTION, client: MlflowClient, lease_s: float = MoveLimits().lease_s,
    started_by: str = "",
) -> Request:
    """Record a request to move `alias` to `version` (gates checked now and again at approval)."""
    version = str(version)
    registered = settle_stopped(client, model_name, actor, lease_s)
    check_gates(client, model_name, version, alias, registered)
    check_no_drift(registered, model_name, alias)
    current = alias_map(registered).get(alias)
    if current == version:
        raise FmpipeError(f"'{alias}' of {model_name} is already on version {version}; nothing to request")
    for other in requests(registered):
        if other.shown_state() == PENDING and other.alias == alias and other.version == version:
            raise FmpipeError(f"request {other.id} by {other.requester} already asks for version {version} "
                              f"in '{alias}'; approve or reject it")
    now = datetime.now(UTC)
    request = Request(id=uuid.uuid4().hex[:8], alias=alias, version=version, expected=current,
                      requester=actor, reason=reason[:MAX_REASON_CHARS], at=utc_now(),
                      expires=(now + timedelta(hours=ttl_h)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      started_by=started_by)
    client.set_registered_model_tag(model_name, REQUEST_PREFIX + request.id, request.to_json())
    return request


def decide(
    model_name: str, request_id: str, actor: str, *, approve: bool, reason: str = "",
    client: MlflowClient, limits: MoveLimits | None = None,
) -> tuple[Request, AliasMove | None]:
    """Approve (a different identity than the requester; the alias moves) or reject a request."""
    limits = limits or MoveLimits()
    registered = settle_stopped(client, model_name, actor, limits.lease_s)
    request = next((r for r in requests(registered) if r.id == request_id), None)
    if request is None:
        raise FmpipeError(f"{model_name} has no promotion request {request_id} (see fmpipe history "
                          f"{model_name})")
    if request.state != PENDING:
        raise FmpipeError(f"request {request_id} was already {request.state} by {request.decided_by} at "
                          f"{request.decided_at}")
    if request.is_expired():
        _record(client, model_name, replace(request, state=EXPIRED, decided_at=request.expires))
        raise FmpipeError(f"request {request_id} expired at {request.expires}; request the move again")
    move = None
    decided = replace(request, state=APPROVED if approve else REJECTED, decided_by=actor,
                      decided_at=utc_now(), decision=reason[:MAX_REASON_CHARS])
    if approve:
        authors = {identity(request.requester), identity(request.started_by or request.requester)}
        if identity(actor) in authors:
            raise GateError(f"the two-person rule: {identity(actor)} made (or started the run that made) "
                            f"request {request_id}, so someone else must approve it")
        why = (f"{request.reason} (requested by {request.requester} as request {request.id}"
               + (f"; approved: {reason})" if reason else "; approved)"))
        # Decided before the move: the request can never be approved twice; if the move fails
        # (production moved since, a gate), the request goes back to pending.
        _record(client, model_name, replace(decided, state=APPROVING))
        try:
            move = promote(model_name, request.version, request.alias, why, actor, expected=request.expected,
                           client=client, limits=limits, approval=request.id)
        except BaseException:
            _record(client, model_name, request)
            raise
    _record(client, model_name, decided)
    return decided, move


def _record(client: MlflowClient, model_name: str, request: Request) -> None:
    client.set_registered_model_tag(model_name, REQUEST_PREFIX + request.id, request.to_json())

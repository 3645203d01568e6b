"""Races and crashes, with real processes: the alias and the history must always agree.

Workers are separate processes (tests/registry/worker.py, forked from a server process that imported
MLflow once), each with its own client, talking to the same store: the sqlite file, or the
`mlflow server` on PostgreSQL (whose two workers serve them).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import pytest
from mlflow import MlflowClient

from components.registry.history import (
    CHECKPOINTS,
    CLAIM_INFIX,
    DONE,
    INTERRUPTED,
    REFUSED,
    Claim,
    ConcurrentChangeError,
    Entry,
    PromotionBusyError,
    aliases,
    claim_name,
    host_id,
    move_alias,
    read_history,
)
from components.registry.registry import PRODUCTION, STAGING, MoveLimits, promote, rollback
from tests.registry import worker
from tests.registry.helpers import ACTOR, FAST, add_version, staged_versions, to_production


def start_together(workers: list) -> list[dict]:  # noqa: ANN001 - (process, pipe) pairs
    """Wait until every worker is connected, release them at once, collect their outcomes."""
    for proc, conn in workers:
        assert conn.poll(60) and conn.recv() == "ready", proc.exitcode
    for _, conn in workers:
        conn.send("go")
    outcomes = []
    for proc, conn in workers:
        assert conn.poll(120), "a worker did not finish"
        outcomes.append(conn.recv())
        proc.join(30)
        assert proc.exitcode == 0
    return outcomes


def claims_left(store, model: str) -> list[str]:  # noqa: ANN001
    return [m.name for m in store.client.search_registered_models(f"name LIKE '{model}{CLAIM_INFIX}%'")]


def test_racing_promotions_have_one_winner_and_refuse_the_unapproved(store, model):
    v1, *challengers = staged_versions(store.client, model, 4)
    unapproved = add_version(store.client, model, blessed=False)
    to_production(store.client, model, v1)
    before = len(read_history(store.client, model, ACTOR, FAST.lease_s))
    outcomes = start_together([worker.start("race", store.uri, model, version=v, expected=v1)
                               for v in [*challengers, unapproved]])

    winners = [o for o in outcomes if o["ok"]]
    assert len(winners) == 1 and winners[0]["version"] in challengers
    refused = {o["version"]: o for o in outcomes if not o["ok"]}
    assert "was not blessed" in refused.pop(unapproved)["error"]
    assert all(o["cas"] and f"not on version {v1}" in o["error"] for o in refused.values())
    assert aliases(store.client, model)[PRODUCTION] == winners[0]["version"]
    entries = read_history(store.client, model, ACTOR, FAST.lease_s)[before:]
    assert [(e.version, e.previous) for e in entries if e.state == DONE] == [(winners[0]["version"], v1)]
    assert sorted(e.version for e in entries if e.state == REFUSED) == sorted(refused)
    assert len(entries) == len(challengers) and claims_left(store, model) == []


def test_chained_racing_promotions_lose_no_history_entry(store, model):
    versions = staged_versions(store.client, model, 4)
    to_production(store.client, model, versions[0])
    before = len(read_history(store.client, model, ACTOR, FAST.lease_s))
    outcomes = start_together([worker.start("chain", store.uri, model, rounds=4, versions=versions)
                               for _ in range(3)])

    succeeded = sorted(seq for o in outcomes for seq in o["done"])
    entries = read_history(store.client, model, ACTOR, FAST.lease_s)
    production = [e for e in entries if e.alias == PRODUCTION and e.state == DONE]
    # every success recorded once as a move, every compare-and-set failure once as a refusal
    assert [e.seq for e in entries[before:] if e.state == DONE] == succeeded and len(succeeded) >= 4
    assert sum(e.state == REFUSED for e in entries) == sum(o["conflicts"] for o in outcomes)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))  # no slot lost or reused
    assert not any(e.state == INTERRUPTED for e in entries)
    for older, newer in zip(production, production[1:], strict=False):
        assert newer.previous == older.version  # each move replaced exactly what the last one set
    assert aliases(store.client, model)[PRODUCTION] == production[-1].version
    assert claims_left(store, model) == []


def test_a_move_in_progress_makes_others_wait_then_compare_and_set(store, model):
    v1, v2, v3 = staged_versions(store.client, model, 3)
    to_production(store.client, model, v1)
    at_armed, release = threading.Event(), threading.Event()

    def pause(point: str) -> None:
        if point == "armed":
            at_armed.set()
            release.wait(30)

    other_client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    mover = threading.Thread(target=promote, args=(model, v2, PRODUCTION, "slow one", ACTOR),
                             kwargs={"client": other_client, "limits": FAST, "checkpoint": pause})
    mover.start()
    try:
        assert at_armed.wait(30)
        started = time.monotonic()
        with pytest.raises(PromotionBusyError, match=f"in progress .'production' -> version {v2}"):
            promote(model, v3, PRODUCTION, "r", ACTOR, expected=v1, client=store.client,
                    limits=MoveLimits(wait_s=1.0, lease_s=120.0))
        assert 1.0 <= time.monotonic() - started < 60  # waited its 1 s, then gave up (no hang)
    finally:
        release.set()
        mover.join(30)
    assert aliases(store.client, model)[PRODUCTION] == v2
    with pytest.raises(ConcurrentChangeError, match=f"is on version {v2}, not on version {v1}"):
        promote(model, v3, PRODUCTION, "r", ACTOR, expected=v1, client=store.client, limits=FAST)


def plant_old_claim(store, model: str, version: str, previous: str, who: str, reason: str) -> int:
    """A claim on the next history slot, owned by this (live) process but 1000 s old, never armed."""
    seq = len(read_history(store.client, model, ACTOR, FAST.lease_s)) + 1
    intent = Entry(seq=0, alias=PRODUCTION, version=version, previous=previous, action="promote",
                   actor=f"user:{who}", reason=reason, at="2026-01-01T00:00:00Z", state="claimed")
    claim = Claim(intent, host_id(), os.getpid(), who, time.time() - 1000)
    store.client.create_registered_model(claim_name(model, seq), tags=claim.tags())
    return seq


def test_a_claim_older_than_the_lease_is_settled_even_if_its_process_lives(store, model):
    v1, v2 = staged_versions(store.client, model, 2)
    to_production(store.client, model, v1)
    # this very process (alive) as the owner, but long ago: only the lease can free it
    seq = plant_old_claim(store, model, v2, v1, "ghost", "stalled")
    move = promote(model, v2, PRODUCTION, "after the stall", ACTOR, expected=v1, client=store.client,
                   limits=MoveLimits(wait_s=2.0, lease_s=60.0))
    assert move.seq == seq + 1
    settled = read_history(store.client, model, ACTOR, FAST.lease_s)[-2]
    assert (settled.seq, settled.state, settled.actor) == (seq, INTERRUPTED, "user:ghost")
    assert claims_left(store, model) == []


def test_a_stopped_claim_that_never_armed_is_not_recorded_as_a_move(store, model):
    """It may name the version the alias already shows (its compare-and-set would have failed)."""
    v1, v2 = staged_versions(store.client, model, 2)
    to_production(store.client, model, v1)
    to_production(store.client, model, v2)
    seq = plant_old_claim(store, model, v2, v1, "late", "stale view")
    settled = read_history(store.client, model, ACTOR, FAST.lease_s)[-1]
    assert (settled.seq, settled.state) == (seq, INTERRUPTED)
    assert claims_left(store, model) == []


# Each crash point: (does the alias end up moved, who meets the stopped claim first).
CRASHES = {"claimed": (False, "reader"), "armed": (False, "writer"), "moved": (True, "reader"),
           "recorded": (True, "writer")}


def test_killed_at_every_point_alias_and_history_agree(store, model):
    assert set(CRASHES) == set(CHECKPOINTS)
    setups = {}
    for point in CRASHES:  # one model per point; the killed move takes `staging` from v1 to v2
        name = f"{model}-{point}"
        v1, v2 = staged_versions(store.client, name, 1)[0], add_version(store.client, name)
        setups[point] = (name, v1, v2, len(read_history(store.client, name, ACTOR, FAST.lease_s)))
    workers = {p: worker.start("crash", store.uri, name, version=v2, alias=STAGING, expected=v1, point=p)
               for p, (name, v1, v2, _) in setups.items()}
    for point, (proc, _) in workers.items():
        proc.join(120)
        assert proc.exitcode == -signal.SIGKILL, point

    for point, (moved, first) in CRASHES.items():
        name, v1, v2, n = setups[point]
        assert claims_left(store, name) == [claim_name(name, n + 1)], point  # the kill left its claim
        assert aliases(store.client, name)[STAGING] == (v2 if moved else v1), point
        started = time.monotonic()
        if first == "reader":
            read_history(store.client, name, ACTOR, FAST.lease_s)
            assert claims_left(store, name) == []
        # the next move need not wait for the lease: the dead process is recognised at once
        after = rollback(name, ACTOR, alias=STAGING, client=store.client, limits=FAST) if moved else promote(
            name, v2, STAGING, "retry", ACTOR, expected=v1, client=store.client, limits=FAST)
        assert time.monotonic() - started < FAST.lease_s / 2  # did not sit out the 120 s lease
        entries = read_history(store.client, name, ACTOR, FAST.lease_s)
        stopped, nxt = entries[n], entries[n + 1]
        assert (stopped.seq, stopped.version, stopped.previous) == (n + 1, v2, v1), point
        assert stopped.state == (DONE if moved else INTERRUPTED), point
        assert stopped.actor.startswith("user:worker-") and stopped.reason == "crash test"
        assert (nxt.seq, after.seq) == (n + 2, n + 2), point
        assert aliases(store.client, name)[STAGING] == after.version == (v1 if moved else v2), point
        assert claims_left(store, name) == [], point


def test_a_stale_last_seen_only_costs_a_retry(store, model):
    v1, = staged_versions(store.client, model, 1)
    n = len(read_history(store.client, model, ACTOR, FAST.lease_s))
    entry = move_alias(store.client, model, PRODUCTION, v1, None, action="promote", actor=ACTOR,
                       reason="r", last_seen=0)
    assert entry.seq == n + 1 and replace(entry, at="") == replace(
        read_history(store.client, model, ACTOR, FAST.lease_s)[-1], at="")

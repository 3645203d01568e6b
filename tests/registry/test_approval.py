"""The two-person rule for production, on both stores: a request by one identity, the move by another."""

from __future__ import annotations

import time

import pytest

from components.core.config import RegistryConfig
from components.core.errors import FmpipeError, GateError
from components.registry.approval import (
    APPROVED,
    EXPIRED,
    PENDING,
    REJECTED,
    decide,
    request_promotion,
    requests,
)
from components.registry.history import ConcurrentChangeError, get_model, parse_history
from components.registry.registry import PRODUCTION, STAGING, aliases, promote, rollback
from components.registry.step import _auto_promote_production, record_approval_rule
from tests.registry.helpers import FAST, add_version, staged_versions, to_production

ALICE, ALICE_ELSEWHERE, BOB = "user:alice@laptop", "user:alice@ci-runner", "user:bob@desk"


def test_production_moves_only_by_a_request_another_person_approves(store, model):
    client = store.client
    v1, v2 = staged_versions(client, model, 2)
    to_production(client, model, v1)
    record_approval_rule(model, True)  # as the register step does when params ask for the rule

    with pytest.raises(GateError, match="two-person rule: production moves only by an approved request"):
        promote(model, v2, PRODUCTION, "direct", BOB, client=client, limits=FAST)
    request = request_promotion(model, v2, "better on the new slices", ALICE, 72, client=client)
    assert request.state == PENDING and request.expected == v1
    with pytest.raises(GateError, match="someone else must approve"):
        decide(model, request.id, ALICE_ELSEWHERE, approve=True, client=client, limits=FAST)
    assert aliases(client, model)[PRODUCTION] == v1

    decided, move = decide(model, request.id, BOB, approve=True, reason="looked at the card", client=client,
                           limits=FAST)
    assert (decided.state, decided.decided_by, move.version, move.previous) == (APPROVED, BOB, v2, v1)
    assert aliases(client, model)[PRODUCTION] == v2
    last = parse_history(get_model(client, model).tags)[-1]
    assert (last.action, last.actor, last.alias, last.version) == ("approve", BOB, PRODUCTION, v2)
    assert f"requested by {ALICE} as request {request.id}; approved: looked at the card" in last.reason
    with pytest.raises(FmpipeError, match="already approved"):
        decide(model, request.id, BOB, approve=True, client=client, limits=FAST)
    # An incident still needs one person: rollback is not behind the rule.
    assert rollback(model, BOB, "bad latency", client=client, limits=FAST).version == v1
    # Staging is not behind it either.
    v3 = add_version(client, model)
    assert promote(model, v3, STAGING, "new", ALICE, client=client, limits=FAST).version == v3


def test_requests_expire_can_be_withdrawn_and_check_gates(store, model):
    client = store.client
    v1, v2 = staged_versions(client, model, 2)
    to_production(client, model, v1)
    record_approval_rule(model, True)

    short = request_promotion(model, v2, "quick", ALICE, 0.5 / 3600, client=client)  # half a second
    time.sleep(0.6)
    with pytest.raises(FmpipeError, match="expired"):
        decide(model, short.id, BOB, approve=True, client=client, limits=FAST)
    assert next(r for r in requests(get_model(client, model)) if r.id == short.id).state == EXPIRED

    withdrawn = request_promotion(model, v2, "second try", ALICE, 72, client=client)
    decided, move = decide(model, withdrawn.id, ALICE, approve=False, reason="wrong version", client=client)
    assert (decided.state, move) == (REJECTED, None)
    assert aliases(client, model)[PRODUCTION] == v1

    unblessed = add_version(client, model, blessed=False)
    with pytest.raises(GateError, match="not blessed"):
        request_promotion(model, unblessed, "please", ALICE, 72, client=client)


def test_an_approval_moves_production_only_from_where_it_was_requested(store, model):
    client = store.client
    v1, v2, v3 = staged_versions(client, model, 3)
    to_production(client, model, v1)
    record_approval_rule(model, True)
    first = request_promotion(model, v2, "a", ALICE, 72, client=client)
    second = request_promotion(model, v3, "b", ALICE, 72, client=client)
    decide(model, first.id, BOB, approve=True, client=client, limits=FAST)
    with pytest.raises(ConcurrentChangeError, match="not on version 1"):
        decide(model, second.id, BOB, approve=True, client=client, limits=FAST)
    assert aliases(client, model)[PRODUCTION] == v2
    assert next(r for r in requests(get_model(client, model)) if r.id == second.id).state == PENDING


def test_auto_promotion_under_the_rule_files_a_request(store, model, monkeypatch):
    client = store.client
    v1, v2 = staged_versions(client, model, 2)  # v2 has the higher test_macro_f1
    to_production(client, model, v1)
    record_approval_rule(model, True)
    record_approval_rule(model, False)  # a later run with the default params does not lift it
    monkeypatch.setenv("FMPIPE_ACTOR", "user:carol@ci")  # who started the pipeline run
    cfg = RegistryConfig(production_approval=False, lock_wait_s=FAST.wait_s)
    assert _auto_promote_production(model, v2, "pipeline:run-1", cfg) is None
    assert _auto_promote_production(model, v2, "pipeline:run-1", cfg) is None  # a retried step
    assert aliases(client, model)[PRODUCTION] == v1
    (request,) = requests(get_model(client, model))
    assert (request.version, request.requester, request.state) == (v2, "pipeline:run-1", PENDING)
    with pytest.raises(GateError, match="started the run"):  # carol cannot approve her own run's request
        decide(model, request.id, "user:carol@laptop", approve=True, client=client, limits=FAST)
    assert requests(get_model(client, model))[0].state == PENDING
    decide(model, request.id, BOB, approve=True, client=client, limits=FAST)
    assert aliases(client, model)[PRODUCTION] == v2


def test_cli_request_approve_and_history(store, model, capsys, monkeypatch):
    from pipelines.cli import main
    from tests.registry.test_promotion import _cli

    v1, v2 = staged_versions(store.client, model, 2)
    to_production(store.client, model, v1)
    rule = ["-S", "registry.production_approval=true"]
    monkeypatch.setenv("FMPIPE_ACTOR", ALICE)
    direct = _cli(store, "promote", model, "--version", v2, "--to", "production", "--reason", "r", *rule)
    assert main(direct) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "follows the two-person rule" in err[0] and "--request" in err[0]

    assert main(_cli(store, "promote", model, "--version", v2, "--to", "production", "--request",
                     "--reason", "fixes the sarcasm slice", *rule)) == 0
    out = capsys.readouterr().out
    request_id = out.split("request ", 1)[1].split(":", 1)[0]
    assert f"fmpipe approve {model} {request_id}" in out
    assert main(_cli(store, "approve", model, request_id)) == 1
    assert "someone else must approve" in capsys.readouterr().err

    monkeypatch.setenv("FMPIPE_ACTOR", BOB)
    assert main(_cli(store, "approve", model, request_id, "--reason", "lgtm")) == 0
    out = capsys.readouterr().out
    assert f"request {request_id} approved by {BOB}" in out and f"'production' -> version {v2}" in out
    assert main(_cli(store, "history", model)) == 0
    out = capsys.readouterr().out
    assert "approve" in out and f"requested by {ALICE}" in out
    assert f"{request_id}" in out and f"[approved by {BOB}" in out and ": lgtm]" in out

"""Promotion, rollback, history and status on both stores: the rules a person relies on."""

from __future__ import annotations

import uuid

import pytest

from components.core.config import load_params
from components.core.errors import FmpipeError, GateError
from components.core.tracking import RunContext
from components.registry import step as registry_step
from components.registry.history import (
    CLAIM_INFIX,
    DONE,
    INTERRUPTED,
    REFUSED,
    ConcurrentChangeError,
    Entry,
    aliases,
    claim_name,
    parse_history,
    read_history,
    rollback_target,
)
from components.registry.registry import (
    COPIED_FROM_TAG,
    PRODUCTION,
    STAGING,
    challenger_beats_champion,
    model_names,
    promote,
    promote_across,
    registry_status,
    rollback,
)
from pipelines.cli import main
from tests.conftest import REPO
from tests.registry.helpers import ACTOR, FAST, add_version, staged_versions, to_production


def history(store, model):  # noqa: ANN001, ANN201
    return read_history(store.client, model, ACTOR, FAST.lease_s)


def claims_left(store, model: str) -> list[str]:  # noqa: ANN001
    found = store.client.search_registered_models(f"name LIKE '{model}{CLAIM_INFIX}%'")
    return [m.name for m in found]


def test_gates_blessing_parity_and_staging_before_production(store, model):
    good = add_version(store.client, model)
    unblessed = add_version(store.client, model, blessed=False)
    bad_parity = add_version(store.client, model, parity=False)
    with pytest.raises(GateError, match="was not blessed"):
        promote(model, unblessed, STAGING, "r", ACTOR, client=store.client)
    with pytest.raises(GateError, match="did not pass the ONNX parity check"):
        promote(model, bad_parity, STAGING, "r", ACTOR, client=store.client)
    with pytest.raises(GateError, match="was never in staging"):
        promote(model, good, PRODUCTION, "r", ACTOR, client=store.client)
    assert aliases(store.client, model) == {} and history(store, model) == []

    promote(model, good, STAGING, "blessed and parity-checked", ACTOR, client=store.client)
    move = promote(model, good, PRODUCTION, "ship it", ACTOR, client=store.client)
    assert (move.version, move.previous, move.seq) == (good, None, 2)
    assert aliases(store.client, model) == {STAGING: good, PRODUCTION: good}
    staging, production = history(store, model)
    assert (staging.alias, staging.version, staging.previous, staging.state) == (STAGING, good, None, DONE)
    assert (production.alias, production.reason, production.actor) == (PRODUCTION, "ship it", ACTOR)
    assert production.at.endswith("Z") and production.action == "promote"
    assert claims_left(store, model) == []


def test_compare_and_set_refuses_a_stale_expectation(store, model):
    v1, v2 = staged_versions(store.client, model, 2)
    to_production(store.client, model, v1)
    before = history(store, model)
    with pytest.raises(ConcurrentChangeError, match=f"is on version {v1}, not on version {v2}"):
        promote(model, v2, PRODUCTION, "r", ACTOR, expected=v2, client=store.client)
    with pytest.raises(ConcurrentChangeError, match="not on no version"):
        promote(model, v2, PRODUCTION, "r", ACTOR, expected=None, client=store.client)
    assert aliases(store.client, model)[PRODUCTION] == v1 and claims_left(store, model) == []
    refusals = history(store, model)[len(before):]  # kept for the audit trail, as non-moves
    assert [(e.state, e.version, e.previous, e.note) for e in refusals] == [
        (REFUSED, v2, v2, f"it was on version {v1}"), (REFUSED, v2, None, f"it was on version {v1}")]

    move = promote(model, v2, PRODUCTION, "r", ACTOR, expected=v1, client=store.client)
    assert (move.previous, move.seq) == (v1, len(before) + 3)
    again = promote(model, v2, PRODUCTION, "r", ACTOR, client=store.client)
    assert again.seq is None and len(history(store, model)) == len(before) + 3  # nothing moved


def test_rollback_puts_back_the_previous_version_and_refuses_outside_moves(store, model):
    v1, v2 = staged_versions(store.client, model, 2)
    with pytest.raises(FmpipeError, match="nothing to roll back"):
        rollback(model, ACTOR, client=store.client)
    to_production(store.client, model, v1)
    to_production(store.client, model, v2)
    move = rollback(model, ACTOR, "v2 misbehaves", client=store.client)
    assert (move.version, move.previous) == (v1, v2) and aliases(store.client, model)[PRODUCTION] == v1
    last = history(store, model)[-1]
    assert (last.action, last.version, last.previous, last.reason) == ("rollback", v1, v2, "v2 misbehaves")
    with pytest.raises(FmpipeError, match="nothing to roll back"):
        rollback(model, ACTOR, client=store.client)

    store.client.set_registered_model_alias(model, PRODUCTION, v2)  # behind fmpipe's back
    with pytest.raises(ConcurrentChangeError, match="moved outside fmpipe"):
        rollback(model, ACTOR, client=store.client)
    assert aliases(store.client, model)[PRODUCTION] == v2


def _moves(*steps: tuple[str, str, str | None]) -> list[Entry]:
    return [Entry(seq=i, alias=PRODUCTION, version=v, previous=prev, action=action, actor="a", reason="",
                  at="", state=DONE) for i, (action, v, prev) in enumerate(steps, 1)]


@pytest.mark.parametrize(("steps", "expected"), [
    ([], (None, None)),
    ([("promote", "1", None)], ("1", None)),
    ([("promote", "1", None), ("promote", "2", "1"), ("promote", "3", "2")], ("3", "2")),
    # successive rollbacks walk back instead of toggling
    ([("promote", "1", None), ("promote", "2", "1"), ("promote", "3", "2"), ("rollback", "2", "3")],
     ("2", "1")),
    ([("promote", "1", None), ("promote", "2", "1"), ("rollback", "1", "2")], ("1", None)),
    # after rollbacks, a new promotion rolls back to what it replaced
    ([("promote", "1", None), ("promote", "2", "1"), ("promote", "3", "2"), ("rollback", "2", "3"),
      ("rollback", "1", "2"), ("promote", "3", "1")], ("3", "1")),
])
def test_rollback_target_replays_the_history(steps, expected):
    entries = _moves(*steps) + [Entry(seq=99, alias=STAGING, version="7", previous=None, action="promote",
                                      actor="a", reason="", at="", state=DONE)]
    interrupted = Entry(seq=98, alias=PRODUCTION, version="9", previous="1", action="promote", actor="a",
                        reason="", at="", state=INTERRUPTED)
    assert rollback_target([*entries, interrupted], PRODUCTION) == expected


def test_cross_model_promotion_copies_the_version(store, model):
    v1, = staged_versions(store.client, model, 1)
    v2 = add_version(store.client, model)
    target = f"{model}-prod"
    move = promote_across(model, v1, target, PRODUCTION, "release", ACTOR, client=store.client)
    assert move.model_name == target and aliases(store.client, target) == {PRODUCTION: move.version}
    tags = store.client.get_model_version(target, move.version).tags
    assert tags[COPIED_FROM_TAG] == f"{model}/{v1}" and tags["fmpipe.blessed"] == "true"
    (entry,) = history(store, target)
    assert entry.source == f"{model}/{v1}" and entry.version == move.version
    assert promote_across(model, v1, target, PRODUCTION, "again", ACTOR, client=store.client).seq is None
    with pytest.raises(GateError, match="never in staging"):
        promote_across(model, v2, target, PRODUCTION, "r", ACTOR, client=store.client)
    assert aliases(store.client, model).get(PRODUCTION) is None  # the source model is untouched


def _cli(store, *args: str) -> list[str]:  # noqa: ANN001
    return [*args, "--params", str(REPO / "params.yaml"), "-S", f"registry.tracking_uri={store.uri}"]


def test_cli_promote_rollback_history_status(store, model, capsys):
    v1 = add_version(store.client, model, f1=0.71)
    v2 = add_version(store.client, model, f1=0.75)
    for v in (v1, v2):
        assert main(_cli(store, "promote", model, "--version", v, "--to", "staging", "--reason", "ok")) == 0
    assert main(_cli(store, "promote", model, "--version", v1, "--to", "production",
                     "--reason", "first release", "--expect", "none")) == 0
    assert f"'production' -> version {v1} (was not set); history entry #3" in capsys.readouterr().out

    assert main(_cli(store, "promote", model, "--version", v2, "--to", "production",
                     "--reason", "r", "--expect", "9")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fmpipe: error: 'production' of {model} is on version {v1}")

    assert main(_cli(store, "promote", model, "--version", v2, "--to", "production",
                     "--reason", "better F1")) == 0
    assert main(_cli(store, "rollback", model, "--reason", "latency regression")) == 0
    assert f"'production' -> version {v1} (was version {v2})" in capsys.readouterr().out

    assert main(_cli(store, "history", model)) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 6  # header + 2 staging + 1 promotion + 1 refused + 1 promotion + 1 rollback
    assert "first release" in out[3] and f"[refused, no change] [it was on version {v1}]" in out[4]
    assert "rollback" in out[6] and "latency regression" in out[6]
    assert all("user:" in line for line in out[1:])

    assert main(_cli(store, "status", model)) == 0
    out = capsys.readouterr().out
    assert f"production  version {v1:>4}  test_macro_f1=0.71" in out
    assert f"staging     version {v2:>4}  test_macro_f1=0.75" in out and "5 alias moves" in out

    assert main(_cli(store, "history", f"{model}-missing")) == 1
    assert capsys.readouterr().err.strip() == (f"fmpipe: error: no registered model named "
                                               f"'{model}-missing' in the registry")


def test_status_shows_aliases_metrics_and_hides_claims(store, model):
    v1, = staged_versions(store.client, model, 1)
    to_production(store.client, model, v1)
    store.client.create_registered_model(claim_name(model, 99))  # as a killed mover leaves one
    names = model_names(store.client)
    assert model in names and claim_name(model, 99) not in names
    (status,) = registry_status(store.client, ACTOR, FAST.lease_s, model)
    assert (status.name, status.latest_version, status.moves) == (model, v1, 2)
    assert [(a.alias, a.version, a.by, a.metrics) for a in status.aliases] == [
        (PRODUCTION, v1, ACTOR, {"test_macro_f1": "0.5"}), (STAGING, v1, ACTOR, {"test_macro_f1": "0.5"})]


def _step_params(model: str, auto: bool):  # noqa: ANN202
    return load_params(REPO / "params.yaml", [f"registry.model_name={model}",
                                              f"registry.auto_promote_production={str(auto).lower()}"])


def test_pipeline_step_moves_through_history_and_auto_promotes(store, model, tmp_path):
    ctx = RunContext(pipeline_run_id=uuid.uuid4().hex, tracking_uri=store.uri, experiment=f"exp-{model}",
                     artifact_root=str(tmp_path / "artifacts") if store.kind == "sqlite" else "")
    v1 = add_version(store.client, model, f1=0.70)
    registry_step.run_promote(v1, _step_params(model, auto=False), ctx)
    assert aliases(store.client, model) == {STAGING: v1}  # the policy is off by default
    auto = _step_params(model, auto=True)
    v2 = add_version(store.client, model, f1=0.60)
    registry_step.run_promote(v2, auto, ctx)
    assert aliases(store.client, model) == {STAGING: v2, PRODUCTION: v2}  # no champion yet
    v3 = add_version(store.client, model, f1=0.80)
    registry_step.run_promote(v3, auto, ctx)
    assert aliases(store.client, model) == {STAGING: v3, PRODUCTION: v3}

    entries = history(store, model)
    assert [(e.alias, e.version, e.previous) for e in entries] == [
        (STAGING, v1, None), (STAGING, v2, v1), (PRODUCTION, v2, None), (STAGING, v3, v2),
        (PRODUCTION, v3, v2)]
    assert {e.actor for e in entries} == {f"pipeline:{ctx.pipeline_run_id}"}
    assert entries[4].reason == "auto-promotion policy: challenger test_macro_f1=0.8 beats production's 0.6"

    unblessed = add_version(store.client, model, blessed=False)
    with pytest.raises(GateError):
        registry_step.run_promote(unblessed, auto, ctx)
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    runs = store.client.search_runs(experiments, f"tags.`fmpipe.pipeline_run_id` = '{ctx.pipeline_run_id}' "
                                    "and tags.`fmpipe.step` = 'promote'")
    assert sorted(r.info.status for r in runs) == ["FAILED"] + ["FINISHED"] * 3  # none left RUNNING


@pytest.mark.parametrize(("challenger", "champion", "wins"), [
    ({"metric.test_macro_f1": "0.8"}, {"metric.test_macro_f1": "0.7"}, True),
    ({"metric.test_macro_f1": "0.7"}, {"metric.test_macro_f1": "0.7"}, False),  # a tie keeps the champion
    ({"metric.test_macro_f1": "0.6"}, {"metric.test_macro_f1": "0.7"}, False),
    ({"metric.test_macro_f1": "0.6"}, None, True),
    ({}, None, False),
])
def test_auto_promotion_rule(challenger, champion, wins):
    assert challenger_beats_champion(challenger, champion)[0] is wins


def test_parse_history_orders_by_sequence():
    tags = {"fmpipe.history.000010": '{"seq": 10, "alias": "a", "version": "2", "previous": "1", '
                                     '"action": "promote", "actor": "x", "reason": "", "at": "", '
                                     '"state": "done"}',
            "fmpipe.history.000009": '{"seq": 9, "alias": "a", "version": "1", "previous": null, '
                                     '"action": "promote", "actor": "x", "reason": "", "at": "", '
                                     '"state": "done"}', "other": "x"}
    assert [e.seq for e in parse_history(tags)] == [9, 10]

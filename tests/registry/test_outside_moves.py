"""An alias moved outside fmpipe (the MLflow UI's alias editor, any MLflow client) is detected,
reported, blocks the next promotion, and is adopted into the history (on both stores)."""

from __future__ import annotations

import pytest

from components.registry.history import parse_history
from components.registry.registry import (
    PRODUCTION,
    STAGING,
    AliasDriftError,
    adopt,
    promote,
    registry_status,
    rollback,
)
from pipelines.cli import main
from pipelines.cli_registry import CHECK_FAILED
from tests.conftest import REPO
from tests.registry.helpers import ACTOR, FAST, add_version, staged_versions, to_production


def cli(store, *args: str) -> list[str]:  # noqa: ANN001
    return [*args, "--params", str(REPO / "params.yaml"), "-S", f"registry.tracking_uri={store.uri}"]


def test_a_move_made_directly_is_reported_blocks_promotion_and_is_adopted(store, model, capsys):
    v1, v2, v3 = staged_versions(store.client, model, 3)
    to_production(store.client, model, v2)
    assert main(cli(store, "status", model, "--check")) == 0
    store.client.set_registered_model_alias(model, PRODUCTION, v3)  # the UI's alias editor does this

    (status,) = registry_status(store.client, ACTOR, FAST.lease_s, model)
    (prod,) = [a for a in status.aliases if a.alias == PRODUCTION]
    assert (prod.version, prod.expected, prod.drifted) == (v3, v2, True)
    capsys.readouterr()
    assert main(cli(store, "status", model, "--check")) == CHECK_FAILED
    out, err = capsys.readouterr()
    assert f"production  version {v3:>4}" in out
    assert f"MOVED OUTSIDE FMPIPE: the history expects version {v2}" in out
    assert err.strip() == (f"fmpipe: check failed: 'production' of {model} is on version {v3}, but "
                           f"fmpipe's history says version {v2}: moved outside fmpipe")
    assert main(cli(store, "history", model, "--alias", "production")) == 0
    assert f"--adopt {model} --alias production" in capsys.readouterr().out

    with pytest.raises(AliasDriftError, match="record that move first: fmpipe history --adopt"):
        promote(model, v1, PRODUCTION, "r", ACTOR, client=store.client, limits=FAST)
    with pytest.raises(AliasDriftError, match="moved outside fmpipe"):
        rollback(model, ACTOR, client=store.client, limits=FAST)
    assert store.client.get_model_version_by_alias(model, PRODUCTION).version in (v3, int(v3))

    assert main(cli(store, "history", "--adopt", model, "--alias", "production", "--reason",
                    "hotfix shipped from the UI")) == 0
    assert f"adopted 'production' on version {v3} (history said {v2})" in capsys.readouterr().out
    last = parse_history(store.client.get_registered_model(model).tags)[-1]
    assert (last.action, last.version, last.previous) == ("adopt", v3, v2)
    assert "hotfix shipped from the UI" in last.reason
    assert main(cli(store, "status", model, "--check")) == 0
    rollback(model, ACTOR, client=store.client, limits=FAST)  # back to the version before the outside move
    assert store.client.get_model_version_by_alias(model, PRODUCTION).version in (v2, int(v2))


def test_an_alias_on_an_unblessed_version_fails_the_check(store, model, capsys):
    unblessed = add_version(store.client, model, blessed=False)
    store.client.set_registered_model_alias(model, STAGING, unblessed)
    assert main(cli(store, "status", model, "--check")) == CHECK_FAILED
    err = capsys.readouterr().err
    assert "moved outside fmpipe" in err and "lacks fmpipe.blessed=true" in err


def test_a_removed_alias_is_reported_and_may_be_set_again(store, model, capsys):
    (v1,) = staged_versions(store.client, model, 1)
    store.client.delete_registered_model_alias(model, STAGING)
    (status,) = registry_status(store.client, ACTOR, FAST.lease_s, model)
    assert [(d.alias, d.version, d.expected) for d in status.removed] == [(STAGING, None, v1)]
    with pytest.raises(Exception, match="removed outside fmpipe: set it again"):
        adopt(model, STAGING, "r", ACTOR, client=store.client, limits=FAST)
    promote(model, v1, STAGING, "set again", ACTOR, client=store.client, limits=FAST)
    (status,) = registry_status(store.client, ACTOR, FAST.lease_s, model)
    assert status.problems == []

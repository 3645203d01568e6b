"""Small, real model versions for the registry tests (no training): a run and a version per call."""

from __future__ import annotations

from mlflow import MlflowClient

from components.core.contract import CONTRACT_TAG, Contract, registered_contract
from components.registry.registry import PRODUCTION, STAGING, MoveLimits, promote

ACTOR = "user:test@registry-tests"
FAST = MoveLimits(wait_s=20.0, lease_s=120.0)


_runs: dict[tuple[int, str], str] = {}  # (client, model) -> the run its versions come from


def add_version(client: MlflowClient, model: str, *, blessed: bool = True, parity: bool = True,
                f1: float = 0.7, contract: Contract | None = None) -> str:
    """Register a new version of `model` (created on first use) with the tags the pipeline sets;
    with `contract`, that contract too (on the model as well, when it has none yet)."""
    key = (id(client), model)
    if key not in _runs:
        client.create_registered_model(model)
        run = client.create_run("0", tags={"fmpipe.kind": "test"})
        client.set_terminated(run.info.run_id)
        _runs[key] = run.info.run_id
    tags = {"fmpipe.blessed": str(blessed).lower(), "fmpipe.parity_passed": str(parity).lower(),
            "metric.test_macro_f1": f"{f1:.6g}", "fmpipe.pipeline_run_id": "registry-test"}
    if contract is not None:
        tags[CONTRACT_TAG] = contract.to_tag()
        if registered_contract(model, client) is None:
            client.set_registered_model_tag(model, CONTRACT_TAG, contract.to_tag())
    version = client.create_model_version(model, f"runs:/{_runs[key]}/model", run_id=_runs[key],
                                          tags=tags, await_creation_for=0)
    return str(version.version)


def staged_versions(client: MlflowClient, model: str, count: int) -> list[str]:
    """`count` blessed versions, each moved through staging (so each may go to production)."""
    versions = [add_version(client, model, f1=0.5 + i / 100) for i in range(count)]
    for v in versions:
        promote(model, v, STAGING, "staged by the test", ACTOR, client=client, limits=FAST)
    return versions


def to_production(client: MlflowClient, model: str, version: str, reason: str = "test") -> None:
    promote(model, version, PRODUCTION, reason, ACTOR, client=client, limits=FAST)

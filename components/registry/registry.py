"""register and promote: put the exported model in the MLflow registry and move its aliases.

Aliases (`staging`, `production`) replace MLflow's deprecated stages. A version is promoted only
if its own tags say it was blessed and passed parity, so no caller can skip the gates; it reaches
`production` only after it was in `staging`. Every move goes through `history.move_alias`
(compare-and-set, recorded in the registry), so `fmpipe history` and `fmpipe rollback` see it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from components.core.contract import CONTRACT_TAG, Contract, ContractError, parse_tag, registered_contract
from components.core.errors import FmpipeError, GateError
from components.registry.history import (
    DONE,
    Checkpoint,
    ConcurrentChangeError,
    Entry,
    alias_map,
    aliases,
    get_model,
    is_claim_name,
    last_seq,
    move_alias,
    parse_history,
    rollback_target,
    settle_stopped,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

BLESSED_TAG = "fmpipe.blessed"
PARITY_TAG = "fmpipe.parity_passed"
COPIED_FROM_TAG = "fmpipe.copied_from"
STAGING, PRODUCTION = "staging", "production"
HEADLINE_METRIC = "test_macro_f1"


def params_digest(params_json: str) -> str:
    return hashlib.sha256(params_json.encode()).hexdigest()[:16]


def _pip_requirements(onnx_dir: Path) -> list[str]:
    from importlib.metadata import version

    from components.export_onnx.serving import SERVING_FILE

    packages = ["onnxruntime", "tokenizers", "numpy", "pandas"]
    if json.loads((onnx_dir / SERVING_FILE).read_text()).get("runtime") == "openvino_bf16":
        packages.append("openvino")  # the fast path; without it serving falls back to onnxruntime
    return [f"{pkg}=={version(pkg)}" for pkg in packages]


def check_contract(client: MlflowClient, model_name: str, contract: Contract) -> None:
    """Refuse a version whose contract differs from its registered model's, in one line."""
    held = registered_contract(model_name, client)
    if held is not None and (why := contract.difference(held)):
        raise ContractError(
            f"refusing to register this model as a version of {model_name}: that model is a "
            f"{held.describe()}, this one a {contract.describe()} ({why}). Register it under its own "
            "name: leave registry.model_name empty (the name then comes from the data set) or set "
            "another one")


def register_model(
    onnx_dir: Path, model_name: str, tags: dict[str, str], metrics: dict[str, float],
    contract: Contract,
) -> str:
    """Log the ONNX model as a self-contained pyfunc in the active run; register a new version.

    Returns the version number. The version carries the lineage tags, headline metrics and its
    contract; a registered model takes the contract of its first version with one, and refuses
    versions of another contract (ContractError, before anything is logged).
    """
    import mlflow

    import components.export_onnx.serving as serving

    client = mlflow.MlflowClient()
    check_contract(client, model_name, contract)
    here = Path(__file__).parent
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(here / "mlflow_model.py"),
        artifacts={"model_dir": str(onnx_dir)},
        code_paths=[serving.__file__],
        pip_requirements=_pip_requirements(onnx_dir),
        registered_model_name=model_name,
    )
    version = str(info.registered_model_version)
    for key, value in {**tags, **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()},
                       CONTRACT_TAG: contract.to_tag()}.items():
        client.set_model_version_tag(model_name, version, key, str(value))
    if registered_contract(model_name, client) is None:  # a new model (or one from before contracts)
        client.set_registered_model_tag(model_name, CONTRACT_TAG, contract.to_tag())
    return version


class _Expect(Enum):
    CURRENT = "current"


# promote(expected=CURRENT): the alias must still be where it is when promote() first looks.
CURRENT = _Expect.CURRENT
Expected = str | None | Literal[_Expect.CURRENT]


@dataclass(frozen=True)
class MoveLimits:
    wait_s: float = 30.0   # for another move of the same model to finish
    lease_s: float = 120.0  # after which an unfinished move is treated as dead


@dataclass
class AliasMove:
    model_name: str
    alias: str
    version: str
    previous: str | None
    seq: int | None = None  # its history entry; None when nothing moved (already there)


def _client(client: MlflowClient | None) -> MlflowClient:
    import mlflow

    return client or mlflow.MlflowClient()


def current_alias_version(model_name: str, alias: str, client: MlflowClient | None = None) -> str | None:
    try:
        return aliases(_client(client), model_name).get(alias)
    except FmpipeError:  # no such model
        return None


def was_in_staging(entries: list[Entry], current_staging: str | None, version: str) -> bool:
    return current_staging == version or any(
        e.alias == STAGING and e.version == version and e.state == DONE for e in entries)


def check_gates(client: MlflowClient, model_name: str, version: str, alias: str,
                registered: Any | None) -> None:
    """Refuse a version whose own tags don't show it was blessed and passed parity; for production,
    one that never held staging in `registered` (the model as read; None: the caller checked)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_model_version(model_name, version).tags
    except MlflowException:
        raise FmpipeError(f"{model_name} has no version {version}") from None
    if tags.get(BLESSED_TAG) != "true":
        raise GateError(f"{model_name} version {version} was not blessed by evaluate ({BLESSED_TAG}="
                        f"{tags.get(BLESSED_TAG, 'missing')}); refusing to set alias '{alias}'")
    if tags.get(PARITY_TAG) != "true":
        raise GateError(f"{model_name} version {version} did not pass the ONNX parity check ({PARITY_TAG}="
                        f"{tags.get(PARITY_TAG, 'missing')}); refusing to set alias '{alias}'")
    if alias == PRODUCTION and registered is not None:
        entries, staging = parse_history(registered.tags), alias_map(registered).get(STAGING)
        if not was_in_staging(entries, staging, version):
            raise GateError(f"{model_name} version {version} was never in staging; promote it there "
                            f"first (fmpipe promote {model_name} --version {version} --to staging)")
    check_same_contract(client, model_name, version, tags, alias,
                        registered if registered is not None else get_model(client, model_name))


def check_same_contract(client: MlflowClient, model_name: str, version: str, tags: dict[str, str],
                        alias: str, registered: Any) -> None:
    """Refuse to move an alias onto a version whose contract differs from its model's or from the
    version `production` holds: clients of the model would get other labels. Versions registered
    before contracts carry none and are not compared."""
    mine = parse_tag(tags)
    if mine is None:
        return
    held = {"the registered model": parse_tag(registered.tags)}
    production = alias_map(registered).get(PRODUCTION)
    if production and production != version:
        held[f"version {production} (production)"] = parse_tag(
            client.get_model_version(model_name, production).tags)
    for what, theirs in held.items():
        if theirs is not None and (why := mine.difference(theirs)):
            raise ContractError(f"{model_name} version {version} is a {mine.describe()}, but {what} is "
                                f"a {theirs.describe()} ({why}); refusing to set alias '{alias}'")


def promote(
    model_name: str, version: str, alias: str, reason: str, actor: str, *,
    expected: Expected = CURRENT, client: MlflowClient | None = None,
    limits: MoveLimits = MoveLimits(), checkpoint: Checkpoint | None = None,
) -> AliasMove:
    """Point `alias` at `version` after the gates, with compare-and-set on `expected`; recorded."""
    client, version = _client(client), str(version)
    registered = get_model(client, model_name)
    check_gates(client, model_name, version, alias, registered)
    current = alias_map(registered).get(alias)
    if current == version:
        return AliasMove(model_name, alias, version, current)
    entry = move_alias(
        client, model_name, alias, version, current if expected is CURRENT else expected,
        action="promote", actor=actor, reason=reason, wait_s=limits.wait_s, lease_s=limits.lease_s,
        checkpoint=checkpoint, last_seen=last_seq(registered.tags))
    return AliasMove(model_name, alias, version, entry.previous, entry.seq)


def rollback(
    model_name: str, actor: str, reason: str = "", *, alias: str = PRODUCTION,
    client: MlflowClient | None = None, limits: MoveLimits = MoveLimits(),
) -> AliasMove:
    """Put `alias` back on the version it held before the current one, in one compare-and-set move."""
    from mlflow.exceptions import MlflowException

    client = _client(client)
    registered = settle_stopped(client, model_name, actor, limits.lease_s)
    recorded, target = rollback_target(parse_history(registered.tags), alias)
    current = alias_map(registered).get(alias)
    if current is None and recorded is None:
        raise FmpipeError(f"'{alias}' is not set on {model_name}: nothing to roll back")
    if current != recorded:
        raise ConcurrentChangeError(
            f"'{alias}' of {model_name} is on version {current} but its history ends on version "
            f"{recorded} (moved outside fmpipe, or a move in progress); check `fmpipe history "
            f"{model_name}` and promote explicitly")
    if target is None:
        raise FmpipeError(f"nothing to roll back to: the history of {model_name} has no version that "
                          f"held '{alias}' before version {current}")
    try:
        client.get_model_version(model_name, target)
    except MlflowException:
        raise FmpipeError(f"cannot roll back to {model_name} version {target}: it no longer exists") from None
    entry = move_alias(
        client, model_name, alias, target, current, action="rollback", actor=actor,
        reason=reason or f"roll back from version {current}", wait_s=limits.wait_s, lease_s=limits.lease_s,
        last_seen=last_seq(registered.tags))
    return AliasMove(model_name, alias, target, entry.previous, entry.seq)


def promote_across(
    model_name: str, version: str, target_model: str, alias: str, reason: str, actor: str, *,
    expected: Expected = CURRENT, client: MlflowClient | None = None, limits: MoveLimits = MoveLimits(),
) -> AliasMove:
    """Environment separation: copy a gated version into another registered model (e.g.
    `<name>-prod`) and move `alias` there. A copy made earlier for the same version is reused."""
    client, version = _client(client), str(version)
    check_gates(client, model_name, version, alias, get_model(client, model_name))
    source = f"{model_name}/{version}"
    found = client.search_model_versions(f"name = '{target_model}' and tags.`{COPIED_FROM_TAG}` = '{source}'")
    if found:
        copy = str(found[0].version)
    else:
        tags = client.get_model_version(model_name, version).tags
        contract = parse_tag(tags)
        if contract is not None and model_exists(client, target_model):
            # the target model's contract and production, before anything is copied
            check_same_contract(client, target_model, "", tags, alias, get_model(client, target_model))
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Successfully registered ..."
            copy = str(client.copy_model_version(f"models:/{source}", target_model).version)
        client.set_model_version_tag(target_model, copy, COPIED_FROM_TAG, source)
        if contract is not None:
            client.set_model_version_tag(target_model, copy, CONTRACT_TAG, contract.to_tag())
            if registered_contract(target_model, client) is None:
                client.set_registered_model_tag(target_model, CONTRACT_TAG, contract.to_tag())
    registered = get_model(client, target_model)
    current = alias_map(registered).get(alias)
    if current == copy:
        return AliasMove(target_model, alias, copy, current)
    entry = move_alias(
        client, target_model, alias, copy, current if expected is CURRENT else expected,
        action="promote", actor=actor, reason=reason, source=source, wait_s=limits.wait_s,
        lease_s=limits.lease_s, last_seen=last_seq(registered.tags))
    return AliasMove(target_model, alias, copy, entry.previous, entry.seq)


def challenger_beats_champion(
    challenger: dict[str, str], champion: dict[str, str] | None, metric: str = HEADLINE_METRIC,
) -> tuple[bool, str]:
    """The auto-promotion rule, from version tags: the challenger's `metric.<metric>` must be strictly
    higher than production's (no production: it wins). A stand-in until the champion/challenger
    evaluation on the same data (a separate issue) replaces it."""
    key = f"metric.{metric}"
    if key not in challenger:
        return False, f"the new version has no {key} tag"
    if champion is None:
        return True, f"no production version yet; {metric}={challenger[key]}"
    if key not in champion:
        return True, f"production has no {key} tag; new {metric}={challenger[key]}"
    new, old = float(challenger[key]), float(champion[key])
    verdict = "beats" if new > old else "does not beat"
    return new > old, f"challenger {metric}={new:.4g} {verdict} production's {old:.4g}"


@dataclass(frozen=True)
class AliasStatus:
    alias: str
    version: str
    metrics: dict[str, str]
    since: str  # when the alias got there, from the history ("" if it was set outside fmpipe)
    by: str


@dataclass(frozen=True)
class ModelStatus:
    name: str
    latest_version: str | None
    aliases: list[AliasStatus]
    moves: int  # done entries in the history


def model_exists(client: MlflowClient, name: str) -> bool:
    """Whether a registered model of exactly this name exists."""
    return any(m.name == name for m in client.search_registered_models(f"name = '{name}'"))


def model_names(client: MlflowClient) -> list[str]:
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=500, page_token=token)
        names += [m.name for m in page if not is_claim_name(m.name)]
        token = page.token
        if not token:
            return sorted(names)


def registry_status(
    client: MlflowClient, settled_by: str, lease_s: float, model_name: str | None = None,
) -> list[ModelStatus]:
    """Each registered model: which version holds which alias, its headline metrics, since when."""
    out = []
    for name in [model_name] if model_name else model_names(client):
        model = settle_stopped(client, name, settled_by, lease_s)
        entries = parse_history(model.tags)
        held = []
        for alias, version in sorted(alias_map(model).items()):
            tags = client.get_model_version(name, version).tags
            metrics = {k.removeprefix("metric."): v for k, v in sorted(tags.items())
                       if k.startswith("metric.")}
            last = next((e for e in reversed(entries)
                         if e.alias == alias and e.state == DONE and e.version == version), None)
            held.append(AliasStatus(alias, version, metrics, last.at if last else "",
                                    last.actor if last else ""))
        latest = max((int(v.version) for v in model.latest_versions or []), default=None)
        out.append(ModelStatus(name, None if latest is None else str(latest), held,
                               sum(e.state == DONE for e in entries)))
    return out

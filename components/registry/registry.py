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
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from components.core.contract import CONTRACT_TAG, Contract, ContractError, parse_tag, registered_contract
from components.core.errors import FmpipeError, GateError
from components.core.evaluation import primary_metric
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
APPROVAL_TAG = "fmpipe.production_approval"  # "true": the two-person rule (approval.py) holds
STAGING, PRODUCTION = "staging", "production"
HEADLINE_METRIC = "test_macro_f1"
PRIMARY_TAG = "fmpipe.primary_metric"  # on a version: the metric tag that ranks versions of its model


def params_digest(params_json: str) -> str:
    return hashlib.sha256(params_json.encode()).hexdigest()[:16]


def _pip_requirements(onnx_dir: Path) -> list[str]:
    from importlib.metadata import version

    from components.serving.serving import SERVING_FILE

    config = json.loads((onnx_dir / SERVING_FILE).read_text())
    preprocessor = {"image": ["pillow"], "audio": ["soundfile", "scipy"], "recsys": []}.get(
        config.get("task"), ["tokenizers"])
    packages = ["onnxruntime", *preprocessor, "numpy", "pandas"]
    if str(config.get("runtime", "")).startswith("openvino"):
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


INPUT_EXAMPLE = ("what a lovely day", "the battery died after an hour")


def signature(kind: str = "text") -> Any:
    """What the pyfunc takes and returns, for MLflow to show and enforce: one unnamed column of
    texts (strings) or images (encoded bytes) in (a plain list works too); each input's label and
    its probability out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    if kind == "recsys":  # user ids in; each user's top k out, one row per recommendation
        return ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([
            ColSpec("string", "user"), ColSpec("long", "rank"), ColSpec("string", "item"),
            ColSpec("string", "title"), ColSpec("double", "score"), ColSpec("double", "rating")]),
            params=ParamSchema([ParamSpec("top", "long", 10)]))
    return ModelSignature(inputs=Schema([ColSpec("binary" if kind in ("image", "audio") else "string")]),
                          outputs=Schema([ColSpec("string", "label"), ColSpec("double", "probability")]))


def model_description(model_name: str, contract: Contract) -> str:
    """The registered model's description: what it is, and what its aliases mean."""
    return (f"A {contract.describe()} model, trained and registered by fmpipe. Each version "
            "is blessed by evaluate (baselines, the champion, slices) and parity-checked before "
            "the pipeline sets `staging`; `production` is set by people (`fmpipe promote`), or by "
            "the pipeline's auto-promotion when it is on. `fmpipe history " + model_name + "` lists "
            "every alias move with who and why.")


def version_description(data_source: str, data_md5: str, evaluation: dict[str, Any] | None,
                        shipped: dict[str, Any] | None, parity_passed: bool) -> str:
    """The two lines a reviewer reads first: the data and the figures, the verdict and what ships."""
    first = f"Data: {data_source or 'unknown'} (md5 {data_md5[:12]})."
    if evaluation:
        model, primary = evaluation["model"], primary_metric(evaluation)
        against = [f"{name} {base[primary]:.4f}" for name, base in evaluation.get("baselines", {}).items()
                   if primary in base]
        champion = evaluation.get("champion") or {}
        if "metrics" in champion:
            against.append(f"champion v{champion['version']} {champion['metrics'][primary]:.4f}")
        second_figure = (f"accuracy {model['accuracy']:.4f}" if "accuracy" in model
                         else f"RMSE {model.get('rmse', float('nan')):.4f}")
        first += (f" Test {primary.replace('macro_f1', 'macro-F1')} {model[primary]:.4f}, {second_figure}"
                  + (f" (vs {', '.join(against)})." if against else "."))
    second = []
    if evaluation:
        blessing = evaluation["blessing"]
        failed = [c["name"] for c in blessing.get("checks", []) if not c.get("passed")]
        second.append("Blessed" if blessing["blessed"] else f"Not blessed (failed: {'; '.join(failed)})")
    second.append("ONNX parity passed" if parity_passed else "ONNX parity FAILED")
    if shipped:
        variant, runtime = shipped.get("variant", "fp32"), shipped.get("runtime", "onnxruntime")
        second.append(f"ships the {variant} variant" + (f" on {runtime}" if runtime != variant else ""))
    return first + "\n" + "; ".join(second) + "."


def register_model(
    onnx_dir: Path, model_name: str, tags: dict[str, str], metrics: dict[str, float],
    contract: Contract, description: str = "",
) -> str:
    """Log the ONNX model as a self-contained pyfunc in the active run; register a new version.

    Returns the version number. The version carries the lineage tags, headline metrics and its
    contract; a registered model takes the contract of its first version with one, and refuses
    versions of another contract (ContractError, before anything is logged).
    """
    import mlflow

    import components.serving.serving as serving

    client = mlflow.MlflowClient()
    check_contract(client, model_name, contract)
    here = Path(__file__).parent
    kind = json.loads((onnx_dir / serving.SERVING_FILE).read_text()).get("task", "text")
    with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Successfully registered ..."
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(here / "mlflow_model.py"),
            artifacts={"model_dir": str(onnx_dir)},
            code_paths=[serving.__file__],
            pip_requirements=_pip_requirements(onnx_dir),
            registered_model_name=model_name,
            signature=signature(kind),
            # An image example would be a file of bytes in every version: the signature says it.
            input_example=list(INPUT_EXAMPLE) if kind == "text" else None,
        )
    version = str(info.registered_model_version)
    if description:
        client.update_model_version(model_name, version, description=description)
    if not client.get_registered_model(model_name).description:
        client.update_registered_model(model_name, description=model_description(model_name, contract))
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
                        alias: str, registered: Any, subject: str = "") -> None:
    """Refuse to move an alias onto a version whose contract differs from its model's or from the
    version `production` holds: clients of the model would get other labels. Versions registered
    before contracts carry none and are not compared."""
    mine = parse_tag(tags)
    if mine is None:
        return
    held = {"the contract": parse_tag(registered.tags)}
    production = alias_map(registered).get(PRODUCTION)
    if production and production != version:
        held[f"version {production} (production)"] = parse_tag(
            client.get_model_version(model_name, production).tags)
    for what, theirs in held.items():
        if theirs is not None and (why := mine.difference(theirs)):
            raise ContractError(f"{subject or f'{model_name} version {version}'} is a {mine.describe()}, "
                                f"but {what} of {model_name} is a {theirs.describe()} ({why}); refusing "
                                f"to set alias '{alias}'")


class AliasDriftError(ConcurrentChangeError):
    """An alias points at a version fmpipe's history does not expect: it was moved outside fmpipe."""


@dataclass(frozen=True)
class AliasDrift:
    alias: str
    version: str | None   # where the alias is now (None: removed)
    expected: str | None  # where fmpipe's history says it is (None: never set through fmpipe)

    def describe(self, model_name: str) -> str:
        now = f"is on version {self.version}" if self.version else "is not set"
        expected = f"version {self.expected}" if self.expected else "no version"
        return (f"'{self.alias}' of {model_name} {now}, but fmpipe's history says {expected}: "
                "moved outside fmpipe")


def alias_drift(registered: Any) -> list[AliasDrift]:
    """Each alias whose version differs from the one fmpipe's history leads to (an alias moved
    with the MLflow UI or any other client, or set or removed there)."""
    entries, now = parse_history(registered.tags), alias_map(registered)
    found = []
    for alias in sorted(set(now) | {e.alias for e in entries if e.state == DONE}):
        expected, _ = rollback_target(entries, alias)
        if now.get(alias) != expected:
            found.append(AliasDrift(alias, now.get(alias), expected))
    return found


def check_no_drift(registered: Any, model_name: str, alias: str) -> None:
    """Refuse to move an alias that was moved outside fmpipe until someone adopts that move: a
    compare-and-set against a version nobody recorded would hide it. A removed alias may be set."""
    for drift in alias_drift(registered):
        if drift.alias == alias and drift.version is not None:
            raise AliasDriftError(
                f"{drift.describe(model_name)}; record that move first: fmpipe history --adopt "
                f"{model_name} --alias {alias} --reason \"...\"")


def adopt(model_name: str, alias: str, reason: str, actor: str, *, client: MlflowClient | None = None,
          limits: MoveLimits = MoveLimits()) -> AliasMove:
    """Record in fmpipe's history a move of `alias` made outside fmpipe, so the history and the
    registry agree again (a rollback then returns to the version before that move)."""
    client = _client(client)
    registered = settle_stopped(client, model_name, actor, limits.lease_s)
    drift = next((d for d in alias_drift(registered) if d.alias == alias), None)
    if drift is None:
        raise FmpipeError(f"'{alias}' of {model_name} is where fmpipe's history says: nothing to adopt")
    if drift.version is None:
        raise FmpipeError(f"'{alias}' of {model_name} was removed outside fmpipe: set it again with "
                          "`fmpipe promote`, which records the move")
    entry = move_alias(
        client, model_name, alias, drift.version, drift.version, previous=drift.expected, action="adopt",
        actor=actor,
        reason=f"adopted a move made outside fmpipe (history said {drift.expected or 'unset'}): {reason}",
        wait_s=limits.wait_s, lease_s=limits.lease_s, last_seen=last_seq(registered.tags))
    return AliasMove(model_name, alias, drift.version, drift.expected, entry.seq)


def approval_required(registered: Any, required_by_params: bool = False) -> bool:
    """Whether `production` of this model moves only through an approved request (two people)."""
    return required_by_params or registered.tags.get(APPROVAL_TAG) == "true"


def check_not_direct(registered: Any, model_name: str, version: str, alias: str,
                     required_by_params: bool) -> None:
    if alias == PRODUCTION and approval_required(registered, required_by_params):
        raise GateError(
            f"{model_name} follows the two-person rule: production moves only by an approved request. "
            f"Ask for it: fmpipe promote {model_name} --version {version} --to production --request "
            f"--reason \"...\"; then another person runs fmpipe approve {model_name} REQUEST_ID")


def promote(
    model_name: str, version: str, alias: str, reason: str, actor: str, *,
    expected: Expected = CURRENT, client: MlflowClient | None = None,
    limits: MoveLimits = MoveLimits(), checkpoint: Checkpoint | None = None,
    require_approval: bool = False, approval: str = "",
) -> AliasMove:
    """Point `alias` at `version` after the gates, with compare-and-set on `expected`; recorded.

    A model under the two-person rule (its tag, or require_approval from params) refuses a direct
    move of production; `approval` is the id of the approved request, set by approval.decide only.
    """
    client, version = _client(client), str(version)
    registered = settle_stopped(client, model_name, actor, limits.lease_s)
    if not approval:
        check_not_direct(registered, model_name, version, alias, require_approval)
    check_gates(client, model_name, version, alias, registered)
    check_no_drift(registered, model_name, alias)
    current = alias_map(registered).get(alias)
    if current == version:
        return AliasMove(model_name, alias, version, current)
    entry = move_alias(
        client, model_name, alias, version, current if expected is CURRENT else expected,
        action="approve" if approval else "promote", actor=actor, reason=reason, wait_s=limits.wait_s,
        lease_s=limits.lease_s, checkpoint=checkpoint, last_seen=last_seq(registered.tags))
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
        raise AliasDriftError(
            f"'{alias}' of {model_name} is on version {current} but its history ends on version "
            f"{recorded} (moved outside fmpipe, or a move in progress); check `fmpipe history "
            f"{model_name}`, then adopt that move (fmpipe history --adopt {model_name} --alias "
            f"{alias} --reason ...) or promote explicitly")
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
    require_approval: bool = False,
) -> AliasMove:
    """Environment separation: copy a gated version into another registered model (e.g.
    `<name>-prod`) and move `alias` there. A copy made earlier for the same version is reused.
    Under the two-person rule (of either model) production is not moved this way."""
    client, version = _client(client), str(version)
    source_model = get_model(client, model_name)
    check_not_direct(source_model, model_name, version, alias, require_approval)
    if model_exists(client, target_model):
        check_not_direct(get_model(client, target_model), target_model, version, alias, False)
    check_gates(client, model_name, version, alias, source_model)
    source = f"{model_name}/{version}"
    found = client.search_model_versions(f"name = '{target_model}' and tags.`{COPIED_FROM_TAG}` = '{source}'")
    if found:
        copy = str(found[0].version)
    else:
        tags = client.get_model_version(model_name, version).tags
        contract = parse_tag(tags)
        if contract is not None and model_exists(client, target_model):
            # the target model's contract and production, before anything is copied
            check_same_contract(client, target_model, "", tags, alias, get_model(client, target_model),
                                subject=f"{model_name} version {version}")
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Successfully registered ..."
            copy = str(client.copy_model_version(f"models:/{source}", target_model).version)
        client.set_model_version_tag(target_model, copy, COPIED_FROM_TAG, source)
        if contract is not None:
            client.set_model_version_tag(target_model, copy, CONTRACT_TAG, contract.to_tag())
            if registered_contract(target_model, client) is None:
                client.set_registered_model_tag(target_model, CONTRACT_TAG, contract.to_tag())
    if approval_required(source_model) and not approval_required(get_model(client, target_model)):
        client.set_registered_model_tag(target_model, APPROVAL_TAG, "true")  # the copy keeps the rule
    registered = settle_stopped(client, target_model, actor, limits.lease_s)
    check_no_drift(registered, target_model, alias)
    current = alias_map(registered).get(alias)
    if current == copy:
        return AliasMove(target_model, alias, copy, current)
    entry = move_alias(
        client, target_model, alias, copy, current if expected is CURRENT else expected,
        action="promote", actor=actor, reason=reason, source=source, wait_s=limits.wait_s,
        lease_s=limits.lease_s, last_seen=last_seq(registered.tags))
    return AliasMove(target_model, alias, copy, entry.previous, entry.seq)


def challenger_beats_champion(
    challenger: dict[str, str], champion: dict[str, str] | None, metric: str | None = None,
) -> tuple[bool, str]:
    """The auto-promotion rule, from version tags: the challenger's `metric.<metric>` must be strictly
    higher than production's (no production: it wins). metric: the challenger's primary metric tag
    (a recommender's NDCG@k), else test macro-F1. A stand-in until the champion/challenger
    evaluation on the same data (a separate issue) replaces it."""
    metric = metric or challenger.get(PRIMARY_TAG) or HEADLINE_METRIC
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
    expected: str | None = None  # the version fmpipe's history leads to, where that differs
    drifted: bool = False        # moved outside fmpipe
    gated: bool = True           # the version carries the blessing and parity tags


@dataclass(frozen=True)
class ModelStatus:
    name: str
    latest_version: str | None
    aliases: list[AliasStatus]
    moves: int  # done entries in the history
    removed: list[AliasDrift] = field(default_factory=list)  # aliases removed outside fmpipe

    @property
    def problems(self) -> list[str]:
        """What `fmpipe status --check` fails on: drifted aliases, aliases on ungated versions."""
        out = [AliasDrift(a.alias, a.version, a.expected).describe(self.name)
               for a in self.aliases if a.drifted]
        out += [d.describe(self.name) for d in self.removed]
        out += [f"'{a.alias}' of {self.name} is on version {a.version}, which lacks {BLESSED_TAG}=true "
                f"or {PARITY_TAG}=true" for a in self.aliases if not a.gated]
        return out


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
        drift = {d.alias: d for d in alias_drift(model)}
        held = []
        for alias, version in sorted(alias_map(model).items()):
            tags = client.get_model_version(name, version).tags
            metrics = {k.removeprefix("metric."): v for k, v in sorted(tags.items())
                       if k.startswith("metric.")}
            last = next((e for e in reversed(entries)
                         if e.alias == alias and e.state == DONE and e.version == version), None)
            held.append(AliasStatus(
                alias, version, metrics, last.at if last else "", last.actor if last else "",
                expected=drift[alias].expected if alias in drift else None, drifted=alias in drift,
                gated=tags.get(BLESSED_TAG) == "true" and tags.get(PARITY_TAG) == "true"))
        latest = max((int(v.version) for v in model.latest_versions or []), default=None)
        out.append(ModelStatus(name, None if latest is None else str(latest), held,
                               sum(e.state == DONE for e in entries),
                               [d for d in drift.values() if d.version is None]))
    return out

"""The register and promote steps as the pipeline runs them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.core.config import Params, RegistryConfig
from components.core.contract import Contract, contract_for
from components.core.errors import FmpipeError
from components.core.evaluation import primary_metric
from components.core.tracking import RunContext, note, step_run
from components.registry.connection import check_reachable, http_limits_env
from components.registry.registry import (
    APPROVAL_TAG,
    BLESSED_TAG,
    PARITY_TAG,
    PRIMARY_TAG,
    PRODUCTION,
    STAGING,
    AliasMove,
    MoveLimits,
    approval_required,
    challenger_beats_champion,
    current_alias_version,
    params_digest,
    promote,
    register_model,
    version_description,
)

CARD_FILE = "model_card.html"


def bound_registry_calls(cfg: RegistryConfig, tracking_uri: str) -> None:
    """Bound every MLflow HTTP call (the user's own MLFLOW_HTTP_* settings win), then fail fast if
    the server is down: before a step opens its run, so no run is left RUNNING."""
    for key, value in http_limits_env(cfg.server_timeout_s, cfg.server_retries).items():
        os.environ.setdefault(key, value)
    check_reachable(tracking_uri, cfg.server_timeout_s)


def serving_config(onnx_dir: Path) -> dict:
    """The exported artifact's serving.json: labels, max_length, the variant and runtime it ships."""
    from components.serving.serving import SERVING_FILE

    return json.loads((onnx_dir / SERVING_FILE).read_text())


def artifact_contract(onnx_dir: Path) -> Contract:
    """What the exported artifact promises its callers: its task, its labels, its input."""
    config = serving_config(onnx_dir)
    return contract_for(config.get("task", "text"), config["labels"])


def run_register(
    onnx_dir: Path, params: Params, ctx: RunContext, data_md5: str, blessed: bool,
    parity_passed: bool, metrics: dict[str, float], evaluation: dict | None = None,
) -> str:
    """Register the exported model as a new version, with its lineage tags, headline metrics,
    contract, signature and a two-line description built from evaluate's record."""
    bound_registry_calls(params.registry, ctx.tracking_uri)
    with step_run(ctx, "register") as track:
        tags = {
            **ctx.lineage_tags(),  # pipeline run, git commit, data source, .dvc commit, data rev
            "fmpipe.data_md5": data_md5,
            "fmpipe.params_digest": params_digest(params.to_json()),
            "fmpipe.base_model": params.finetune.base_model,
            "fmpipe.task": params.task.kind,
            "fmpipe.mlflow_run_id": track.run_id,
            BLESSED_TAG: str(blessed).lower(),
            PARITY_TAG: str(parity_passed).lower(),
        }
        if evaluation:
            tags[PRIMARY_TAG] = f"test_{primary_metric(evaluation)}"
        model = params.registered_model
        description = version_description(ctx.data_source, data_md5, evaluation, serving_config(onnx_dir),
                                          parity_passed)
        version = register_model(onnx_dir, model, tags, metrics, artifact_contract(onnx_dir), description)
        record_approval_rule(model, params.registry.production_approval)
        track.tags({"fmpipe.model_version": version}, parent=True)
        note(f"register: {model} version {version}")
    return version


def launcher() -> str:
    """Who started this pipeline run (the step runs as them): FMPIPE_ACTOR where set, else the
    login and host. The pipeline's own request may not be approved by them."""
    import getpass
    import socket

    if os.environ.get("FMPIPE_ACTOR", "").strip():
        return os.environ["FMPIPE_ACTOR"].strip()
    try:
        return f"user:{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no user name in some containers
        return f"user:unknown@{socket.gethostname()}"


def record_approval_rule(model: str, required: bool) -> None:
    """When the params of the pipeline that registers ask for two people in production, record it on
    the registered model, so a promote run with other params is held to it too. Only ever switched
    on here: a run with the default params must not lift it. Lifting it is deliberate (delete the
    model's `fmpipe.production_approval` tag)."""
    import mlflow

    client = mlflow.MlflowClient()
    if required and client.get_registered_model(model).tags.get(APPROVAL_TAG) != "true":
        client.set_registered_model_tag(model, APPROVAL_TAG, "true")


def run_promote(version: str, params: Params, ctx: RunContext, card: Path | None = None) -> AliasMove:
    """Move `promote_alias` (staging) to the new version; with `auto_promote_production`, also
    production when the new version beats it. Both moves are compare-and-set and recorded. Then
    write the version's model card (to `card`, and as an artifact of the version's run)."""
    cfg, model = params.registry, params.registered_model
    bound_registry_calls(cfg, ctx.tracking_uri)
    limits = MoveLimits(cfg.lock_wait_s, cfg.lock_lease_s)
    actor = f"pipeline:{ctx.pipeline_run_id}"
    with step_run(ctx, "promote") as track:
        move = promote(model, version, cfg.promote_alias,
                       reason="blessed and parity-checked by the pipeline", actor=actor, limits=limits,
                       require_approval=cfg.production_approval)
        track.json(asdict(move), "alias_move.json")
        note(f"promote: alias '{move.alias}' -> version {version} (was {move.previous})")
        track.tags({f"fmpipe.alias.{move.alias}": version}, parent=True)
        if cfg.auto_promote_production and cfg.promote_alias == STAGING:
            prod = _auto_promote_production(model, version, actor, cfg)
            if prod is not None:
                track.json(asdict(prod), "production_move.json")
                track.tags({f"fmpipe.alias.{PRODUCTION}": version}, parent=True)
        write_model_card(model, version, card, track)
    return move


def write_model_card(model: str, version: str, out: Path | None, track: Any) -> None:
    """The version's card (components/card): the step's output, an artifact of the promote run and
    of the run that logged the model (beside it in the MLflow UI). A card that cannot be written is
    a note, never a failed promotion: the alias has moved by then."""
    import tempfile

    import mlflow

    from components.card.gather import gather
    from components.card.render import render

    client = mlflow.MlflowClient()
    try:
        page = render(gather(client, model, version))
    except Exception as exc:  # the card reads many records; none of them is worth a failed step
        note(f"promote: the model card was not written ({type(exc).__name__}: {exc})")
        return
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / CARD_FILE
            path.write_text(page, encoding="utf-8")
            track.artifact(path)
            model_run = client.get_model_version(model, version).tags.get("fmpipe.mlflow_run_id")
            if model_run:
                client.log_artifact(model_run, str(path))
    except Exception as exc:  # e.g. the artifact store refusing: the card is still written below
        note(f"promote: the model card was not logged to MLflow ({type(exc).__name__}: {exc})")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    note(f"promote: model card of version {version} written ({len(page.encode()) / 1e6:.2f} MB): "
         f"fmpipe card {model}/{version}")


def _auto_promote_production(model: str, version: str, actor: str, cfg: RegistryConfig) -> AliasMove | None:
    import mlflow

    from components.registry.approval import request_promotion
    from components.registry.history import get_model

    client = mlflow.MlflowClient()
    limits = MoveLimits(cfg.lock_wait_s, cfg.lock_lease_s)
    champion = current_alias_version(model, PRODUCTION, client)
    champion_tags = client.get_model_version(model, champion).tags if champion else None
    wins, why = challenger_beats_champion(client.get_model_version(model, version).tags, champion_tags)
    if not wins:
        note(f"promote: production stays on version {champion}: {why}")
        return None
    if approval_required(get_model(client, model), cfg.production_approval):
        # The two-person rule: the pipeline is the requester; a person approves (fmpipe approve).
        try:
            request = request_promotion(model, version, f"auto-promotion policy: {why}", actor,
                                        cfg.approval_ttl_h, client=client, lease_s=limits.lease_s,
                                        started_by=launcher())
        except FmpipeError as exc:  # e.g. a retried step: the request is already there
            note(f"promote: production needs approval; no new request: {exc}")
            return None
        note(f"promote: production needs approval: request {request.id} for version {version} ({why}); "
             f"someone other than {request.started_by} approves it: fmpipe approve {model} {request.id}")
        return None
    # expected=champion: if production moved since we compared, the comparison is void.
    move = promote(model, version, PRODUCTION, reason=f"auto-promotion policy: {why}", actor=actor,
                   expected=champion, limits=limits)
    note(f"promote: alias 'production' -> version {version} (was {champion}): {why}")
    return move

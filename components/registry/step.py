"""The register and promote steps as the pipeline runs them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from components.core.config import Params
from components.core.tracking import RunContext, note, step_run
from components.registry.registry import (
    BLESSED_TAG,
    PARITY_TAG,
    AliasMove,
    params_digest,
    promote,
    register_model,
)


def run_register(
    onnx_dir: Path, params: Params, ctx: RunContext, data_md5: str, blessed: bool,
    parity_passed: bool, metrics: dict[str, float],
) -> str:
    with step_run(ctx, "register") as track:
        tags = {
            **ctx.lineage_tags(),  # pipeline run, git commit, data source, .dvc commit, data rev
            "fmpipe.data_md5": data_md5,
            "fmpipe.params_digest": params_digest(params.to_json()),
            "fmpipe.base_model": params.finetune.base_model,
            "fmpipe.mlflow_run_id": track.run_id,
            BLESSED_TAG: str(blessed).lower(),
            PARITY_TAG: str(parity_passed).lower(),
        }
        version = register_model(onnx_dir, params.registry.model_name, tags, metrics)
        track.tags({"fmpipe.model_version": version}, parent=True)
        note(f"register: {params.registry.model_name} version {version}")
    return version


def run_promote(version: str, params: Params, ctx: RunContext) -> AliasMove:
    with step_run(ctx, "promote") as track:
        move = promote(params.registry.model_name, version, params.registry.promote_alias,
                       reason="blessed and parity-checked by the pipeline",
                       actor=f"pipeline:{ctx.pipeline_run_id}")
        track.json(asdict(move), "alias_move.json")
        note(f"promote: alias '{move.alias}' -> version {version} (was {move.previous})")
        track.tags({f"fmpipe.alias.{move.alias}": version}, parent=True)
    return move

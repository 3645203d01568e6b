"""What a model card shows, read from what the registry and the runs already record.

Everything comes from MLflow: the version (tags, description), the registered model (aliases,
fmpipe's alias history, promotion requests), and the pipeline run the version came from — its
step runs' metrics, metric histories and the JSON / PNG artifacts the steps logged. Nothing is
recomputed, so a card can be written for any version, also one registered before cards existed:
a section whose records are missing says so instead.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.core.errors import FmpipeError

if TYPE_CHECKING:
    from mlflow import MlflowClient

STEPS = ("ingest", "validate_data", "pretrain", "finetune", "evaluate", "export_onnx", "register", "promote")
# The recommender validates on NDCG@10 (or recall / MAP, per params) and RMSE instead of macro-F1.
CURVES = ("train_loss", "learning_rate", "val_macro_f1", "val_accuracy", "val_ndcg_at_10", "val_recall_at_10",
          "val_map_at_10", "val_rmse")
# Artifacts each step's run logged that the card reads (JSON is parsed, PNG kept as base64).
ARTIFACTS = {
    "ingest": ("ingest_report.json",),
    "validate_data": ("validation/result.json",),
    "finetune": ("finetune_result.json",),
    "evaluate": (
        "evaluation/evaluation.json",
        "evaluation/confusion_matrix.png",
        "evaluation/reliability.png",
        "evaluation/slices.png",
        "evaluation/ranking.png",
        "evaluation/misclassified.png",
        "evaluation/explanations.json",
    ),
    "export_onnx": ("export_checks.json",),
}


@dataclass
class CardData:
    """Everything one card shows (plain data: JSON-able, and compared by `--compare`)."""

    model: str
    version: str
    task: str
    created: str
    description: str
    tags: dict[str, str]
    aliases: list[str]  # the aliases this version holds now
    all_aliases: dict[str, str]  # alias -> version, for the whole model
    history: list[dict[str, Any]]  # fmpipe's alias moves of the model
    requests: list[dict[str, Any]]  # promotion requests (two-person rule)
    pipeline: dict[str, Any] = field(default_factory=dict)  # the pipeline run: id, user, start, params
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> {"metrics", "seconds", "run_id"}
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # finetune metric histories
    records: dict[str, Any] = field(default_factory=dict)  # artifact path -> parsed JSON
    images: dict[str, str] = field(default_factory=dict)  # artifact path -> base64 PNG
    missing: list[str] = field(default_factory=list)  # what could not be found, said on the card

    def metric(self, name: str) -> float | None:
        value = self.tags.get(f"metric.{name}")
        return float(value) if value is not None else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)


def resolve(client: MlflowClient, spec: str) -> tuple[str, str]:
    """`MODEL@ALIAS` or `MODEL/VERSION` (or MODEL alone: its newest version) as (model, version)."""
    from mlflow.exceptions import MlflowException

    try:
        if "@" in spec:
            model, alias = spec.rsplit("@", 1)
            return model, str(client.get_model_version_by_alias(model, alias).version)
        if "/" in spec:
            model, version = spec.rsplit("/", 1)
            client.get_model_version(model, version)
            return model, version
        versions = client.search_model_versions(f"name = '{spec}'")
    except MlflowException as exc:
        raise FmpipeError(
            f"no model version {spec!r} in the registry ({str(exc).splitlines()[0][:200]})"
        ) from None
    if not versions:
        raise FmpipeError(f"no registered model {spec!r} with versions (give MODEL@ALIAS or MODEL/VERSION)")
    return spec, str(max(int(v.version) for v in versions))


def gather(client: MlflowClient, model: str, version: str) -> CardData:
    """Read one version's card data from the registry and its pipeline run."""
    from components.registry.approval import requests
    from components.registry.history import alias_map, get_model, parse_history

    mv = client.get_model_version(model, version)
    registered = get_model(client, model)
    held = alias_map(registered)
    tags = dict(mv.tags)
    card = CardData(
        model=model,
        version=str(version),
        task=tags.get("fmpipe.task", "text"),
        created=_stamp(mv.creation_timestamp),
        description=mv.description or "",
        tags=tags,
        aliases=sorted(a for a, v in held.items() if v == str(version)),
        all_aliases=held,
        history=[asdict(e) for e in parse_history(registered.tags)],
        requests=[asdict(r) | {"shown_state": r.shown_state()} for r in requests(registered)],
    )
    run_id = tags.get("fmpipe.pipeline_run_id")
    if not run_id:
        card.missing.append("the version has no fmpipe.pipeline_run_id tag: no run records to show")
        return card
    runs = client.search_runs(
        _experiments(client), f"tags.`fmpipe.pipeline_run_id` = '{run_id}'", max_results=200
    )
    if not runs:
        card.missing.append(f"the pipeline run {run_id} is not in this tracking store")
        return card
    parent = next((r for r in runs if r.data.tags.get("fmpipe.kind") == "pipeline"), None)
    if parent is not None:
        card.pipeline = {
            "run_id": parent.info.run_id,
            "user": parent.data.tags.get("mlflow.user", ""),
            "started": _stamp(parent.info.start_time),
            "status": parent.info.status,
            "params": dict(parent.data.params),
        }
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            step = run.data.tags.get("fmpipe.step")
            if step not in STEPS:
                continue
            card.steps[step] = {
                "run_id": run.info.run_id,
                "metrics": dict(run.data.metrics),
                "params": dict(run.data.params),
                "seconds": run.data.metrics.get("step_seconds"),
            }
            for path in ARTIFACTS.get(step, ()):
                _read_artifact(client, run.info.run_id, path, Path(tmp), card)
            if step == "finetune":
                for name in CURVES:
                    history = client.get_metric_history(run.info.run_id, name)
                    if history:
                        card.curves[name] = [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]
    for step in ("ingest", "validate_data", "finetune", "evaluate", "export_onnx"):
        if step not in card.steps:
            card.missing.append(f"no {step} run of pipeline run {run_id}")
    return card


def _read_artifact(client: MlflowClient, run_id: str, path: str, tmp: Path, card: CardData) -> None:
    import mlflow

    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=path,
                dst_path=str(tmp / run_id),
                tracking_uri=client.tracking_uri,
            )
        )
    except Exception:  # not logged by this run (an older version, or a task without it)
        return
    if path.endswith(".json"):
        record = json.loads(local.read_text())
        if isinstance(record, dict):
            record.pop("predictions", None)  # one label per test row: not for the page
        card.records[path] = record
    else:
        card.images[path] = base64.b64encode(local.read_bytes()).decode()


def _experiments(client: MlflowClient) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def _stamp(millis: int | None) -> str:
    from datetime import UTC, datetime

    if not millis:
        return ""
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")

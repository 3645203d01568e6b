"""The champion: the registered model holding an alias (default `production`), scored on the
challenger's test inputs with the exact artifact that serves it (ONNX, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def champion_artifact(model_name: str, alias: str, work_dir: Path) -> tuple[str, Path] | None:
    """(version, the folder of its served artifact) of the model holding alias, or None if none does."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from components.serving.serving import SERVING_FILE

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version.version}",
                                                     dst_path=str(work_dir)))
    found = sorted(local.rglob(SERVING_FILE))
    return (str(version.version), found[0].parent) if found else None


def champion_logits(model_name: str, alias: str, inputs: list[Any], work_dir: Path
                    ) -> tuple[str, np.ndarray, list[str]] | None:
    """(version, logits on the inputs, label order) of the model holding alias, or None if none does."""
    from components.serving.serving import open_classifier

    found = champion_artifact(model_name, alias, work_dir)
    if found is None:
        return None
    model = open_classifier(found[1])
    return found[0], model.logits(inputs), model.labels

"""The champion: the registered model holding an alias (default `production`), scored on the
challenger's test texts with the exact artifact that serves it (ONNX, no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def champion_logits(model_name: str, alias: str, texts: list[str], work_dir: Path
                    ) -> tuple[str, np.ndarray, list[str]] | None:
    """(version, logits on texts, label order) of the model holding alias, or None if none does."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from components.serving.serving import SERVING_FILE, OnnxTextClassifier

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version.version}",
                                                     dst_path=str(work_dir)))
    found = sorted(local.rglob(SERVING_FILE))
    if not found:
        return None
    model = OnnxTextClassifier(found[0].parent)
    return str(version.version), model.logits(texts), model.labels

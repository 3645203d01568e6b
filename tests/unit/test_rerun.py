"""What makes two runs "the same" for an idempotent re-run, and finding the version they built."""

from __future__ import annotations

import mlflow

from components.core.config import load_params
from components.core.tracking import CHAMPION_VERSION_TAG, INPUTS_DIGEST_TAG, KIND_TAG, PIPELINE_RUN_TAG
from pipelines import rerun
from pipelines.rerun import (
    checkpoint_digest,
    code_digest,
    inputs_digest,
    unblessed_run_on,
    version_built_from,
)
from tests.conftest import REPO


def params_json(*overrides: str) -> str:
    return load_params(REPO / "params.yaml", list(overrides)).to_json()


def test_the_data_path_does_not_count_but_its_content_params_and_code_do():
    code = code_digest()
    base = inputs_digest(params_json(), "md5-a", code)
    assert inputs_digest(params_json("data.source=elsewhere/tweets.csv"), "md5-a", code) == base
    assert inputs_digest(params_json(), "md5-b", code) != base
    assert inputs_digest(params_json("finetune.epochs=7"), "md5-a", code) != base
    assert inputs_digest(params_json(), "md5-a", code + "edited") != base


def test_the_code_digest_is_stable_and_sees_library_versions(monkeypatch):
    first = code_digest()
    assert code_digest() == first and len(first) == 64
    real = rerun.metadata.version
    monkeypatch.setattr(rerun.metadata, "version",
                        lambda name: "99.0" if name == "transformers" else real(name))
    assert code_digest() != first


def test_the_newest_version_built_from_a_digest_is_found_with_its_aliases(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert version_built_from("m", "d1", uri) is None  # no such model yet
    client.create_registered_model("m")
    for digest in ("d1", "d2", "d1"):
        client.create_model_version("m", str(tmp_path), tags={INPUTS_DIGEST_TAG: digest})
    client.set_registered_model_alias("m", "staging", "3")
    assert version_built_from("m", "d1", uri) == ("3", ["staging"])
    assert version_built_from("m", "d2", uri) == ("2", [])
    assert version_built_from("m", "d3", uri) is None


def test_a_checkpoint_folder_counts_by_what_it_holds(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"w" * 10)
    first = checkpoint_digest(str(tmp_path))
    assert checkpoint_digest(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(b"v" * 11)  # weights replaced in place
    assert checkpoint_digest(str(tmp_path)) != first
    assert checkpoint_digest("org/some-hub-id") == "org/some-hub-id"
    code = code_digest()
    assert inputs_digest(params_json(), "m", code, "a") != inputs_digest(params_json(), "m", code, "b")


def test_an_unblessed_run_counts_only_against_the_same_champion(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("fmpipe", artifact_location=str(tmp_path / "artifacts"))

    def pipeline_run(run_id: str, digest: str, blessed: str, champion: str | None, status: str) -> None:
        tags = {PIPELINE_RUN_TAG: run_id, KIND_TAG: "pipeline", INPUTS_DIGEST_TAG: digest,
                "fmpipe.blessed": blessed, **({CHAMPION_VERSION_TAG: champion} if champion else {})}
        client.set_terminated(client.create_run(exp, tags=tags).info.run_id, status=status)

    pipeline_run("vs-v3", "d1", "false", "3", "FINISHED")
    pipeline_run("alone", "d2", "false", None, "FINISHED")
    pipeline_run("passed", "d3", "true", None, "FINISHED")
    pipeline_run("crashed", "d4", "false", None, "FAILED")
    assert unblessed_run_on("d1", "3", uri, "fmpipe") == "vs-v3"
    assert unblessed_run_on("d1", "4", uri, "fmpipe") is None  # a new champion may judge otherwise
    assert unblessed_run_on("d1", None, uri, "fmpipe") is None
    assert unblessed_run_on("d2", None, uri, "fmpipe") == "alone"
    assert unblessed_run_on("d3", None, uri, "fmpipe") is None  # blessed: registered, or to retry
    assert unblessed_run_on("d4", None, uri, "fmpipe") is None  # did not finish
    assert unblessed_run_on("d1", "3", uri, "no-such-experiment") is None

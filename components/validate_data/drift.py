"""Drift: find the profile of the data the `production` model was trained on.

Every ingest writes a small profile of its training split (the task decides what: text lengths
and vocabulary, image sizes and pixel statistics; label counts always); the registry tells which
pipeline run trained `production`, and that run's profile is the reference the task compares with.
"""

from __future__ import annotations

from components.core.dataset import PROFILE_FILE


def production_profile(model_name: str, alias: str = "production") -> tuple[str, dict] | None:
    """(version, profile) of the data the model holding `alias` was trained on, if any."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from components.core.tracking import PIPELINE_RUN_TAG, STEP_TAG

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    pipeline_run = version.tags.get(PIPELINE_RUN_TAG)
    if not pipeline_run:
        return None
    runs = mlflow.search_runs(
        search_all_experiments=True, output_format="list", max_results=1,
        filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run}' and tags.`{STEP_TAG}` = 'ingest'",
    )
    if not runs:
        return None
    try:
        return str(version.version), mlflow.artifacts.load_dict(f"{runs[0].info.artifact_uri}/{PROFILE_FILE}")
    except Exception:  # a run from before profiles existed
        return None

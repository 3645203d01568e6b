"""MLflow tracking for steps: one parent run per pipeline run, one nested child run per step.

Steps run in separate processes (and on a cluster, separate pods), so each step finds the
parent run by its `fmpipe.pipeline_run_id` tag and opens its own child run under it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from components.core.errors import FmpipeError

PIPELINE_RUN_TAG = "fmpipe.pipeline_run_id"
STEP_TAG = "fmpipe.step"
KIND_TAG = "fmpipe.kind"
ERROR_TAG = "fmpipe.error"
INPUTS_DIGEST_TAG = "fmpipe.inputs_digest"
CHAMPION_VERSION_TAG = "fmpipe.champion_version"  # set by evaluate when there was a champion


def default_tracking_uri(repo_root: Path) -> str:
    return f"sqlite:///{(repo_root / '.mlflow' / 'mlflow.db').resolve()}"


class RunContext(BaseModel):
    """What every step needs to know about the run it belongs to (passed as one JSON string)."""

    pipeline_run_id: str
    tracking_uri: str
    experiment: str = "fmpipe"
    artifact_root: str = ""  # where new experiments store artifacts ("" = MLflow's default)
    git_commit: str = "unknown"
    data_source: str = ""
    data_dvc_commit: str = ""  # git commit of the data's .dvc file (the data version)
    data_rev: str = ""         # the revision asked for with --data-rev ("" = the working tree)
    inputs_digest: str = ""    # data content + params + code (pipelines/rerun.py); "" = not computed

    def lineage_tags(self) -> dict[str, str]:
        """What ties a run or a model version to its code and data."""
        return {"fmpipe.pipeline_run_id": self.pipeline_run_id, "fmpipe.git_commit": self.git_commit,
                "fmpipe.data_source": self.data_source, "fmpipe.data_dvc_commit": self.data_dvc_commit,
                "fmpipe.data_rev": self.data_rev or "working tree",
                **({INPUTS_DIGEST_TAG: self.inputs_digest} if self.inputs_digest else {})}

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str, job_id: str = "") -> RunContext:
        """The context a step was given. An empty pipeline_run_id takes the orchestrator's job id:
        on a cluster one ctx_json serves every run of a schedule, and each run needs its own id."""
        ctx = cls.model_validate_json(text)
        if not ctx.pipeline_run_id:
            if not job_id:
                raise FmpipeError("the run context has no pipeline_run_id and the orchestrator gave "
                                  "no job id")
            ctx.pipeline_run_id = job_id
        return ctx


def connect(ctx: RunContext) -> str:
    """Point MLflow at the run's store and experiment; return the experiment id."""
    import mlflow

    mlflow.set_tracking_uri(ctx.tracking_uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(ctx.experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(ctx.experiment, artifact_location=ctx.artifact_root or None)
    except Exception:  # another process created it first
        return client.get_experiment_by_name(ctx.experiment).experiment_id


def parent_run_id(ctx: RunContext, create: bool = True) -> str | None:
    """The pipeline-level run for ctx.pipeline_run_id, created on first use."""
    import mlflow

    exp_id = connect(ctx)
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{ctx.pipeline_run_id}' "
        f"and tags.`{KIND_TAG}` = 'pipeline'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    if not create:
        return None
    run = client.create_run(
        exp_id,
        run_name=f"pipeline-{ctx.pipeline_run_id[:8]}",
        tags={**ctx.lineage_tags(), KIND_TAG: "pipeline", "mlflow.user": _user()},
    )
    return run.info.run_id


def _user() -> str:
    """Who started the run, for MLflow's User column and the model card."""
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no user name in some containers
        return f"unknown@{socket.gethostname()}"


class StepTracker:
    """Handle given to a step: log to its child run and, for headline figures, to the parent."""

    def __init__(self, run_id: str, parent_id: str) -> None:
        import mlflow

        self.run_id, self.parent_id = run_id, parent_id
        self.client = mlflow.MlflowClient()

    def params(self, values: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: str(v)[:500] for k, v in values.items()})

    def metrics(self, values: dict[str, float], step: int | None = None, parent: bool = False) -> None:
        import mlflow

        clean = {k: float(v) for k, v in values.items() if v is not None}
        mlflow.log_metrics(clean, step=step)
        if parent:
            for key, value in clean.items():
                self.client.log_metric(self.parent_id, key, value)

    def tags(self, values: dict[str, str], parent: bool = False) -> None:
        import mlflow

        mlflow.set_tags(values)
        if parent:
            for key, value in values.items():
                self.client.set_tag(self.parent_id, key, value)

    def json(self, obj: Any, name: str) -> None:
        import mlflow

        mlflow.log_dict(json.loads(json.dumps(obj, default=str)), name)

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path)


@contextlib.contextmanager
def step_run(ctx: RunContext, step: str) -> Iterator[StepTracker]:
    """Open the child run of `step`; record its wall time; on failure keep the reason as a tag."""
    import mlflow

    parent = parent_run_id(ctx)
    started = time.perf_counter()
    with mlflow.start_run(
        run_name=step, nested=True, parent_run_id=parent, experiment_id=connect(ctx),
        tags={PIPELINE_RUN_TAG: ctx.pipeline_run_id, STEP_TAG: step, KIND_TAG: "step"},
    ) as run:
        tracker = StepTracker(run.info.run_id, parent)
        note(f"{step}: started")
        state = "failed"
        try:
            yield tracker
            state = "succeeded"
        except BaseException as exc:
            message = str(exc) if isinstance(exc, FmpipeError) else f"{type(exc).__name__}: {exc}"
            mlflow.set_tag(ERROR_TAG, message[:4000])
            tracker.client.set_tag(parent, ERROR_TAG, f"{step}: {message}"[:4000])
            tracker.client.set_tag(parent, "fmpipe.failed_step", step)
            raise  # leaving the `with` marks the child run FAILED
        finally:
            seconds = time.perf_counter() - started
            tracker.client.log_metric(run.info.run_id, "step_seconds", seconds)
            tracker.client.log_metric(parent, f"time_{step}_s", seconds)
            note(f"{step}: {state} in {seconds:.1f} s")


def mlflow_status(kfp_state: str) -> str:
    """MLflow's end status for a KFP pipeline's final state (SUCCEEDED, FAILED, CANCELLED, ...)."""
    return {"SUCCEEDED": "FINISHED", "CANCELLED": "KILLED", "CANCELING": "KILLED"}.get(kfp_state, "FAILED")


def finish_pipeline_run(ctx: RunContext, status: str) -> None:
    """Mark the parent run FINISHED or FAILED so nothing is left RUNNING."""
    import mlflow

    run_id = parent_run_id(ctx, create=False)
    if run_id:
        mlflow.MlflowClient().set_terminated(run_id, status=status)


def end_running_runs(tracking_uri: str, experiment: str, pipeline_run_id: str, status: str) -> int:
    """End with `status` every run of a pipeline run still RUNNING: the pipeline run and the runs of
    steps that were stopped from outside (a killed process, an OOM-killed pod). Returns how many."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    running = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}' and attributes.status = 'RUNNING'")
    for run in running:
        client.set_terminated(run.info.run_id, status=status)
    return len(running)


def note(message: str) -> None:
    """A progress line for the person watching the run (the local runner shows these)."""
    print(f"[fmpipe] {message}", flush=True)

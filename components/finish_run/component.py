from kfp import dsl

from components.core.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def finish_run(status: dsl.PipelineTaskFinalStatus, ctx_json: str, job_id: str = ""):
    """The DAG's exit handler: end the MLflow pipeline run as the DAG ended (FINISHED, FAILED or
    KILLED), so that on a cluster no run stays RUNNING (locally `fmpipe run` does it as well)."""
    from components.core.tracking import RunContext, finish_pipeline_run, mlflow_status

    finish_pipeline_run(RunContext.from_json(ctx_json, job_id), mlflow_status(status.state))

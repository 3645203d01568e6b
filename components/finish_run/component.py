from kfp import dsl

from components.core.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def finish_run(status: dsl.PipelineTaskFinalStatus, ctx_json: str, job_id: str = ""):
    """The DAG's exit handler: end the MLflow pipeline run as the DAG ended (FINISHED, FAILED or
    KILLED), and any step run left RUNNING by a pod that was killed (locally `fmpipe run` does it
    as well)."""
    from components.core.tracking import RunContext, end_running_runs, mlflow_status

    ctx = RunContext.from_json(ctx_json, job_id)
    end_running_runs(ctx.tracking_uri, ctx.experiment, ctx.pipeline_run_id, mlflow_status(status.state))

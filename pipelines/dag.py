"""The KFP v2 DAG: wiring only. Quality gates are parameters (params_json), not code here.

Resource requests (CPU, memory, accelerator) are part of the compiled pipeline, so the DAG is
built from params: `build_pipeline(params)`.
"""


from kfp import dsl

from components.core.config import Params
from components.core.credentials import HTTP_PASSWORD, HTTP_USER
from components.evaluate.component import evaluate
from components.export_onnx.component import export_onnx
from components.finetune.component import finetune
from components.finetune.resources import apply_resources
from components.finish_run.component import finish_run
from components.ingest.component import ingest
from components.pretrain.component import pretrain
from components.registry.component import promote, register
from components.validate_data.component import validate_data
from pipelines.steps import STEPS  # noqa: F401 - re-exported: the order this DAG wires

PIPELINE_NAME = "fmpipe-training"  # every task runs the same DAG


def with_credentials(task, secret: str):  # noqa: ANN001, ANN201 - a KFP task
    """The tracking server's credentials from a Kubernetes Secret into the task's environment, where
    MLflow reads them: never in the run's parameters."""
    if secret:
        from kfp import kubernetes

        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={
            HTTP_USER: HTTP_USER, HTTP_PASSWORD: HTTP_PASSWORD})
    return task


def build_pipeline(params: "Params | None" = None):  # noqa: ANN201 - a KFP pipeline function
    """The training pipeline, with the training steps' cluster resources taken from params."""
    params = params or Params()

    def steps(source: str, params_json: str, ctx_json: str, job_id: str) -> None:
        """The steps, wired in DAG order (pipeline channels in, tasks out)."""
        common = {"params_json": params_json, "ctx_json": ctx_json, "job_id": job_id}
        ingest_task = ingest(source=source, **common)
        dataset = ingest_task.outputs["dataset"]
        validate_task = validate_data(dataset=dataset, **common)
        # Always in the DAG; with pretrain.enabled false it only leaves a marker and finetune
        # starts from finetune.base_model.
        pretrain_task = apply_resources(
            pretrain(dataset=dataset, **common).after(validate_task), params.pretrain.resources)
        finetune_task = apply_resources(
            finetune(dataset=dataset, base_model=pretrain_task.outputs["model"], **common),
            params.finetune.resources)
        evaluate_task = apply_resources(
            evaluate(dataset=dataset, model=finetune_task.outputs["model"], **common),
            params.evaluate.resources)
        with dsl.If(evaluate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712
            export_task = apply_resources(
                export_onnx(dataset=dataset, model=finetune_task.outputs["model"],
                            evaluation=evaluate_task.outputs["evaluation"], **common),
                params.export_onnx.resources)
            with dsl.If(export_task.outputs["Output"] == True, name="parity-passed"):  # noqa: E712
                register_task = register(
                    onnx_model=export_task.outputs["onnx_model"],
                    evaluation=evaluate_task.outputs["evaluation"],
                    data_md5=ingest_task.outputs["Output"],
                    parity_passed=export_task.outputs["Output"],
                    **common,
                )
                promote_task = promote(version=register_task.output, **common)
        # Every step tracks to MLflow or moves the registry, and names its data by path, not
        # content: a cached result would skip retraining on new data at the same path, or a promotion.
        for task in (ingest_task, validate_task, pretrain_task, finetune_task, evaluate_task, export_task,
                     register_task, promote_task):
            task.set_caching_options(enable_caching=False)
            with_credentials(task, params.registry.credentials_secret)

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Validate, (pre)train, evaluate, export, register, promote.")
    def training_pipeline(source: str, params_json: str, ctx_json: str):
        # job_id: KFP's id of this run, the MLflow pipeline run id when ctx_json leaves it empty.
        job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        # However the steps end (done, failed, cancelled), the exit handler ends the MLflow pipeline
        # run: on a cluster nothing else would, and it would stay RUNNING.
        finish_task = finish_run(ctx_json=ctx_json, job_id=job_id).set_caching_options(enable_caching=False)
        with_credentials(finish_task, params.registry.credentials_secret)
        with dsl.ExitHandler(finish_task, name="run"):
            steps(source, params_json, ctx_json, job_id)

    return training_pipeline

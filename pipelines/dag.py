"""The KFP v2 DAG: wiring only. Quality gates are parameters (params_json), not code here."""

from kfp import dsl

from components.evaluate.component import evaluate
from components.export_onnx.component import export_onnx
from components.finetune.component import finetune
from components.ingest.component import ingest
from components.registry.component import promote, register
from components.validate_data.component import validate_data

PIPELINE_NAME = "fmpipe-text-classification"
# The steps in DAG order; dvc.yaml lists the same stages in the same order (a test checks it).
STEPS = ("ingest", "validate_data", "finetune", "evaluate", "export_onnx", "register", "promote")


@dsl.pipeline(name=PIPELINE_NAME, description="Validate, fine-tune, evaluate, export, register, promote.")
def training_pipeline(source: str, params_json: str, ctx_json: str):
    common = {"params_json": params_json, "ctx_json": ctx_json}
    ingest_task = ingest(source=source, **common).set_display_name("ingest")
    validate_task = validate_data(dataset=ingest_task.outputs["dataset"], **common)
    finetune_task = finetune(dataset=ingest_task.outputs["dataset"], **common).after(validate_task)
    evaluate_task = evaluate(
        dataset=ingest_task.outputs["dataset"], model=finetune_task.outputs["model"], **common)
    with dsl.If(evaluate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712
        export_task = export_onnx(
            dataset=ingest_task.outputs["dataset"], model=finetune_task.outputs["model"], **common)
        with dsl.If(export_task.outputs["Output"] == True, name="parity-passed"):  # noqa: E712
            register_task = register(
                onnx_model=export_task.outputs["onnx_model"],
                evaluation=evaluate_task.outputs["evaluation"],
                data_md5=ingest_task.outputs["Output"],
                parity_passed=export_task.outputs["Output"],
                **common,
            )
            promote(version=register_task.output, **common)

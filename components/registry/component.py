from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Model, Output

from components.core.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register(
    onnx_model: Input[Model], evaluation: Input[Artifact], data_md5: str, parity_passed: bool,
    params_json: str, ctx_json: str, job_id: str = "",
) -> str:
    """Register a new model version with lineage tags; returns the version number."""
    import json
    from pathlib import Path

    from components.core.config import Params
    from components.core.errors import exit_on_user_error
    from components.core.evaluation import headline_metrics
    from components.core.tracking import RunContext
    from components.registry import step

    params, ctx = Params.from_json(params_json), RunContext.from_json(ctx_json, job_id)
    result = json.loads((Path(evaluation.path) / "evaluation.json").read_text())
    metrics = headline_metrics(result)
    return exit_on_user_error(
        step.run_register, Path(onnx_model.path), params, ctx, data_md5,
        result["blessing"]["blessed"], parity_passed, metrics, result)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def promote(version: str, params_json: str, ctx_json: str, model_card: Output[HTML], job_id: str = "") -> str:
    """Set the promotion alias (default `staging`) on the new version; returns the alias. Its
    output is the version's model card (the KFP UI shows it)."""
    from pathlib import Path

    from components.core.config import Params
    from components.core.errors import exit_on_user_error
    from components.core.tracking import RunContext
    from components.registry import step

    params, ctx = Params.from_json(params_json), RunContext.from_json(ctx_json, job_id)
    return exit_on_user_error(step.run_promote, version, params, ctx, Path(model_card.path)).alias

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.core.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def export_onnx(
    dataset: Input[Dataset], model: Input[Model], evaluation: Input[Artifact], params_json: str,
    ctx_json: str, onnx_model: Output[Model], job_id: str = "",
) -> bool:
    """Export to ONNX and check parity on the test split; returns whether parity passed. A
    reduced-precision variant ships only if it still meets evaluate's champion rule."""
    from pathlib import Path

    from components.core.config import Params
    from components.core.errors import exit_on_user_error
    from components.core.tracking import RunContext
    from components.export_onnx import step

    params, ctx = Params.from_json(params_json), RunContext.from_json(ctx_json, job_id)
    result = exit_on_user_error(
        step.run, Path(dataset.path), Path(model.path), Path(onnx_model.path), params, ctx,
        Path(evaluation.path))
    onnx_model.metadata.update({"variant": result.shipped, "runtime": result.runtime,
                                "max_abs_logit_diff": result.parity.max_abs_logit_diff,
                                "argmax_agreement": result.parity.argmax_agreement})
    return result.parity.passed

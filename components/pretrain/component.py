from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.core.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def pretrain(dataset: Input[Dataset], params_json: str, ctx_json: str, model: Output[Model],
             job_id: str = ""):
    """MLM / CLM pretraining on the data set's text; the model dir feeds finetune's base_model input
    (when pretrain.enabled is false it holds only a marker, and finetune uses finetune.base_model)."""
    from pathlib import Path

    from components.core.config import Params
    from components.core.errors import exit_on_user_error
    from components.core.tracking import RunContext
    from components.pretrain import step

    params, ctx = Params.from_json(params_json), RunContext.from_json(ctx_json, job_id)
    result = exit_on_user_error(step.run, Path(dataset.path), Path(model.path), params, ctx)
    if result is not None:
        model.metadata.update({"objective": result.objective, "mode": result.mode,
                               "heldout_perplexity": result.perplexity})

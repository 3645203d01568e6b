from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.core.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def finetune(dataset: Input[Dataset], params_json: str, ctx_json: str, model: Output[Model],
             base_model: Input[Model] | None = None, job_id: str = ""):
    """Fine-tune the base checkpoint (or the pretrain step's model, when given and trained);
    the model dir holds safetensors, tokenizer and label map."""
    from pathlib import Path

    from components.core.config import Params
    from components.core.errors import exit_on_user_error
    from components.core.tracking import RunContext
    from components.finetune import step

    params, ctx = Params.from_json(params_json), RunContext.from_json(ctx_json, job_id)
    base = Path(base_model.path) if base_model is not None else None
    result = exit_on_user_error(step.run, Path(dataset.path), Path(model.path), params, ctx, base)
    model.metadata.update({"base_model": step.pretrained_base(base) or params.finetune.base_model,
                           **(result.val_metrics or {"val_macro_f1": result.val_macro_f1})})

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from components.core.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate_data(dataset: Input[Dataset], params_json: str, ctx_json: str, report: Output[HTML],
                  job_id: str = ""):
    """Great Expectations suite from params; a failed `error` expectation stops the run."""
    import shutil
    from pathlib import Path

    from components.core.config import Params
    from components.core.errors import exit_on_user_error
    from components.core.tracking import RunContext
    from components.validate_data import step

    params, ctx = Params.from_json(params_json), RunContext.from_json(ctx_json, job_id)
    out = Path(report.path).with_suffix(".d")
    try:
        exit_on_user_error(step.run, Path(dataset.path), out, params, ctx)
    finally:
        if (out / "report.html").exists():
            shutil.copyfile(out / "report.html", report.path)

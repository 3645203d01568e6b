from kfp import dsl
from kfp.dsl import Dataset, Output

from components.core.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest(source: str, params_json: str, ctx_json: str, dataset: Output[Dataset], job_id: str = "") -> str:
    """Read, clean and split the data; returns the data's md5 (its DVC hash)."""
    from pathlib import Path

    from components.core.config import Params
    from components.core.errors import exit_on_user_error
    from components.core.tracking import RunContext
    from components.ingest import step

    params, ctx = Params.from_json(params_json), RunContext.from_json(ctx_json, job_id)
    report = exit_on_user_error(step.run, Path(source), Path(dataset.path), params, ctx)
    dataset.metadata.update({"data_md5": report["data_md5"], "rows": report["rows"]})
    return report["data_md5"]

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.core.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset], model: Input[Model], params_json: str, ctx_json: str,
    metrics: Output[Metrics], classification: Output[ClassificationMetrics],
    evaluation: Output[Artifact], job_id: str = "",
) -> bool:
    """Test-split metrics against the baselines; returns the blessing (gates the rest of the DAG)."""
    from pathlib import Path

    from components.core.config import Params
    from components.core.errors import exit_on_user_error
    from components.core.tracking import RunContext
    from components.evaluate import step

    params, ctx = Params.from_json(params_json), RunContext.from_json(ctx_json, job_id)
    result = exit_on_user_error(
        step.run, Path(dataset.path), Path(model.path), Path(evaluation.path), params, ctx)
    for key in result.headline:  # classifiers: accuracy, macro-F1; the recommender: NDCG@k, RMSE, ...
        metrics.log_metric(key, result.model[key])
    for name, base in result.baselines.items():
        if result.primary in base:
            metrics.log_metric(f"baseline_{name}_{result.primary}", base[result.primary])
    if "confusion_matrix" in result.model:
        classification.log_confusion_matrix(result.labels, result.model["confusion_matrix"])
    return result.blessing.blessed

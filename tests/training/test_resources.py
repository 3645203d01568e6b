"""Cluster resources from params: checked when params load, applied to the compiled KFP task;
the pretrain component feeds finetune's optional base_model input."""

import pytest
import yaml

from components.core.config import load_params
from components.core.errors import ConfigError
from tests.conftest import REPO


def test_resources_reach_the_compiled_training_task(tmp_path):
    from kfp import compiler, dsl

    from components.finetune.component import finetune
    from components.finetune.resources import apply_resources
    from components.pretrain.component import pretrain

    params = load_params(REPO / "params.yaml", [
        "finetune.resources.cpu_limit=8", "finetune.resources.memory_limit=32Gi",
        "finetune.resources.accelerator_type=nvidia.com/gpu", "finetune.resources.accelerator_limit=2"])

    @dsl.pipeline(name="resources")
    def pipeline(params_json: str, ctx_json: str):
        data = dsl.importer(artifact_uri="file:///data", artifact_class=dsl.Dataset)
        lm = pretrain(dataset=data.output, params_json=params_json, ctx_json=ctx_json)
        apply_resources(finetune(dataset=data.output, params_json=params_json, ctx_json=ctx_json,
                                 base_model=lm.outputs["model"]), params.finetune.resources)

    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    resources = spec["deploymentSpec"]["executors"]["exec-finetune"]["container"]["resources"]
    assert resources["resourceCpuLimit"] == "8"
    assert resources["resourceMemoryLimit"] == "32Gi"
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "2"
    assert "resources" not in spec["deploymentSpec"]["executors"]["exec-pretrain"]["container"]
    # The pretrained model feeds finetune's optional base_model input.
    wired = spec["root"]["dag"]["tasks"]["finetune"]["inputs"]["artifacts"]["base_model"]
    assert wired["taskOutputArtifact"] == {"outputArtifactKey": "model", "producerTask": "pretrain"}


def test_evaluate_and_export_ask_for_their_own_resources(tmp_path):
    import yaml

    from pipelines.compile import compile_pipeline

    params = load_params(REPO / "params.yaml", [
        "evaluate.resources.memory_request=4Gi", "export_onnx.resources.cpu_limit=4",
        "export_onnx.resources.memory_limit=8Gi"])
    executors = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml", params).read_text())[
        "deploymentSpec"]["executors"]
    assert executors["exec-evaluate"]["container"]["resources"] == {"memoryRequest": 4.294967296,
                                                                  "resourceMemoryRequest": "4Gi"}
    export = executors["exec-export-onnx"]["container"]["resources"]
    assert export["resourceCpuLimit"] == "4" and export["resourceMemoryLimit"] == "8Gi"


def test_default_resources_leave_the_task_alone():
    from components.core.config import ResourcesConfig
    from components.finetune.resources import apply_resources

    class Task:
        def __getattr__(self, name: str):  # noqa: ANN204 - any setter call is a failure
            raise AssertionError(f"{name} called")

    apply_resources(Task(), ResourcesConfig())


@pytest.mark.parametrize(("override", "message"), [
    ("finetune.resources.memory_limit=32GB", "memory quantity"),
    ("pretrain.resources.cpu_limit=lots", "CPU quantity"),
    ("finetune.resources.accelerator_limit=1", "needs accelerator_type"),
    ("finetune.method=qlora", "finetune.method"),
])
def test_bad_training_settings_fail_with_one_clear_line(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_params(REPO / "params.yaml", [override])
    assert "\n" not in str(err.value)

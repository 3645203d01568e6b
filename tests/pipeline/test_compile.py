"""The compiled KFP pipeline is kept in the repo (golden test); DVC and KFP agree on the steps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from components.core.config import load_params
from pipelines.compile import compile_pipeline
from pipelines.steps import STEPS
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "training_pipeline.yaml"


def comparable(ir_yaml: str) -> dict:
    """The IR as the KFP SDK's own compiler tests compare it: without the SDK version that wrote it
    and the display names, so a kfp patch release does not fail the golden test."""
    def strip(node):  # noqa: ANN001, ANN202
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ("sdkVersion", "displayName")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(yaml.safe_load(ir_yaml))


def test_compiled_pipeline_matches_the_golden_file(tmp_path: Path):
    out = compile_pipeline(tmp_path / "p.yaml", load_params(REPO / "params.yaml"))
    assert comparable(out.read_text()) == comparable(GOLDEN.read_text()), (
        "the compiled pipeline changed; if intended, run `make golden` and commit the result")


def test_the_golden_comparison_ignores_the_sdk_version_but_not_the_dag():
    golden = GOLDEN.read_text()
    assert "sdkVersion: kfp-" in golden
    assert comparable(re.sub(r"sdkVersion: kfp-\S+", "sdkVersion: kfp-9.9.9", golden)) == comparable(golden)
    assert comparable(golden.replace("finetune", "fine-tune")) != comparable(golden)


@pytest.mark.parametrize("params_file", ["params.fashion-mnist.yaml", "params.speech.yaml",
                                         "params.movielens.yaml"])
def test_the_dag_is_the_same_for_every_task(tmp_path: Path, params_file: str):
    """The task is a plug-in chosen at run time: the image, audio and recommender jobs compile to the
    very same pipeline."""
    out = compile_pipeline(tmp_path / "p.yaml", load_params(REPO / params_file))
    assert out.read_text() == GOLDEN.read_text()  # byte for byte: same SDK, same run


EXIT_HANDLER = "finish-run"  # not a step: it ends the MLflow run however the steps ended


def _dag_order(spec: dict) -> list[str]:
    """Component tasks in topological order, walking into the exit handler's and dsl.If sub-DAGs."""
    components = spec["components"]
    order: list[str] = []

    def walk(tasks: dict) -> None:
        remaining, placed = dict(tasks), set()
        while remaining:
            ready = sorted(n for n, t in remaining.items()
                           if set(t.get("dependentTasks", [])) <= placed)
            assert ready, "the DAG has a cycle"
            for name in ready:
                placed.add(name)
                component = components[remaining.pop(name)["componentRef"]["name"]]
                if "dag" in component:
                    walk(component["dag"]["tasks"])
                elif name != EXIT_HANDLER:
                    order.append(name)

    walk(spec["root"]["dag"]["tasks"])
    return order


def test_dvc_stages_and_kfp_dag_list_the_same_steps_in_order(tmp_path: Path):
    spec = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    kfp_steps = [re.sub("-", "_", name) for name in _dag_order(spec)]
    dvc_steps = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert kfp_steps == list(STEPS) == dvc_steps


def test_conditions_gate_everything_after_evaluate(tmp_path: Path):
    spec = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    conditions = {}
    for component in spec["components"].values():
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            condition = task.get("triggerPolicy", {}).get("condition")
            if condition:
                conditions[name] = " ".join(condition.split())
    step_tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert conditions == {  # -1 is the exit handler's group
        "condition-2": "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true",
        "condition-3": "inputs.parameter_values['pipelinechannel--export-onnx-Output'] == true"}
    assert set(step_tasks) == {"ingest", "validate-data", "pretrain", "finetune", "evaluate", "condition-2"}
    assert set(spec["components"]["comp-condition-2"]["dag"]["tasks"]) == {"export-onnx", "condition-3"}
    assert set(spec["components"]["comp-condition-3"]["dag"]["tasks"]) == {"register", "promote"}


def test_every_run_ends_its_mlflow_run_and_files_steps_under_its_own_job_id(tmp_path: Path):
    """The exit handler runs however the steps end; every task gets KFP's job id, which names the
    MLflow pipeline run when ctx_json leaves it empty (each firing of a schedule is its own run)."""
    spec = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    root_tasks = spec["root"]["dag"]["tasks"]
    assert set(root_tasks) == {"exit-handler-1", EXIT_HANDLER}
    assert root_tasks[EXIT_HANDLER]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert root_tasks[EXIT_HANDLER]["dependentTasks"] == ["exit-handler-1"]
    tasks = {name: task for component in [spec["root"], *spec["components"].values()]
             for name, task in component.get("dag", {}).get("tasks", {}).items()
             if "dag" not in spec["components"][task["componentRef"]["name"]]}
    for name, task in tasks.items():
        job_id = task["inputs"]["parameters"]["job_id"]["runtimeValue"]["constant"]
        assert job_id == "{{$.pipeline_job_uuid}}", name


def test_no_step_is_ever_served_from_kfp_cache(tmp_path: Path):
    """Steps track to MLflow and move the registry, and name their data by path: a cache hit would
    silently skip retraining on new data, or a promotion."""
    spec = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    tasks = {name: task for component in [spec["root"], *spec["components"].values()]
             for name, task in component.get("dag", {}).get("tasks", {}).items()
             if "dag" not in spec["components"][task["componentRef"]["name"]]}
    assert sorted(t.replace("-", "_") for t in tasks) == sorted([*STEPS, "finish_run"])
    assert not [name for name, task in tasks.items() if task.get("cachingOptions", {}).get("enableCache")]


def test_dvc_yaml_is_the_one_the_step_table_gives():
    from pipelines.steps import dvc_yaml

    assert (REPO / "dvc.yaml").read_text() == dvc_yaml(), "dvc.yaml is stale: run `make dvc`"


def test_the_kfp_dag_orders_the_steps_as_the_step_table_does(tmp_path: Path):
    """Each step comes after the same steps in the DAG and in the table (what it reads, transitively)."""
    from pipelines.steps import BY_NAME, WRITTEN_BY

    spec = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    direct: dict[str, set[str]] = {}

    def walk(dag: dict, inherited: set[str]) -> None:
        # A task inside a condition's sub-DAG gets what the condition task got from outside.
        for name, task in dag.get("tasks", {}).items():
            producers = set(task.get("dependentTasks", [])) | inherited
            for kind in ("artifacts", "parameters"):
                for value in task.get("inputs", {}).get(kind, {}).values():
                    for key in ("taskOutputArtifact", "taskOutputParameter"):
                        producers.add(value.get(key, {}).get("producerTask", ""))
            producers = {p.replace("-", "_") for p in producers if p}
            direct[name.replace("-", "_")] = producers
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"], producers)

    walk(spec["root"]["dag"], set())

    def before(step: str, edges: dict[str, set[str]]) -> set[str]:
        seen: set[str] = set()
        todo = list(edges.get(step, ()))
        while todo:
            if (name := todo.pop()) not in seen:
                seen.add(name)
                todo.extend(edges.get(name, ()))
        return seen & set(STEPS)

    table = {name: {WRITTEN_BY[path] for path in step.reads} for name, step in BY_NAME.items()}
    for step in STEPS:
        assert before(step, direct) == before(step, table), step

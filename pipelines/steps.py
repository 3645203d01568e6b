"""The step table: the pipeline's steps once, in DAG order, with what each reads and writes.

Everything else comes from it or is checked against it: `dvc.yaml` is generated from it
(`make dvc`; a test fails when the committed file differs), `fmpipe step` checks a step's inputs
with it, and a test checks the KFP DAG in pipelines/dag.py orders its tasks the same way. Kept
apart from dag.py so the CLI need not import kfp.
"""

from __future__ import annotations

from dataclasses import dataclass

ARTIFACTS = "artifacts"
CORE = "components/core"  # shared by every step: a change there re-runs them all
TASKS = "components/tasks"  # the task plug-ins (text, image): every step asks the task
TRAINING = "components/training"  # the loop, checkpoints and launch pretrain and finetune share
SERVING = "components/serving"    # the runtime-only classifier export, evaluate and register share


@dataclass(frozen=True)
class Step:
    name: str
    reads: tuple[str, ...]    # what it needs under artifacts/, written by earlier steps
    writes: tuple[str, ...]   # what it leaves under artifacts/
    params: tuple[str, ...]   # the params.yaml sections it reads (directly or through a helper)
    code: tuple[str, ...]     # the folders of code it runs besides components/core
    data: bool = False        # reads data/ too (the source file, or the data set's schema)


ALL_SECTIONS = ("task", "data", "ingest", "validate_data", "pretrain", "finetune", "evaluate", "export_onnx",
                "registry")

TABLE = (
    Step("ingest", (), ("data",), ("task", "data", "ingest"), ("components/ingest",), data=True),
    # The registered model's name comes from data.name: its contract and its production data.
    Step("validate_data", ("data",), ("validation",), ("task", "data", "validate_data", "registry"),
         ("components/validate_data",), data=True),
    # Images pretrain on another data set (pretrain.source), split as ingest splits.
    Step("pretrain", ("data", "validation"), ("pretrained",), ("task", "pretrain", "ingest"),
         ("components/pretrain", TRAINING)),
    # The label set comes from validate_data.labels (or the schema, through data/).
    Step("finetune", ("data", "validation", "pretrained"), ("model",),
         ("task", "finetune", "validate_data", "pretrain"),
         ("components/finetune", TRAINING), data=True),
    Step("evaluate", ("data", "model"), ("evaluation",), ("task", "evaluate", "finetune", "data", "registry"),
         ("components/evaluate", SERVING)),
    Step("export_onnx", ("data", "evaluation", "model"), ("onnx", "parity.json"),
         ("task", "export_onnx", "finetune"), ("components/export_onnx", SERVING)),
    # A version is tagged with the digest of every setting: any change is a new registration.
    Step("register", ("onnx", "parity.json", "evaluation"), ("registered.json",), ALL_SECTIONS,
         ("components/registry", SERVING), data=True),
    # ... and writes the version's model card from what the registry and the runs recorded.
    Step("promote", ("registered.json",), ("promoted.json", "model_card.html"), ("task", "data", "registry"),
         ("components/registry", "components/card", SERVING)),
)

STEPS = tuple(step.name for step in TABLE)
BY_NAME = {step.name: step for step in TABLE}
WRITTEN_BY = {path: step.name for step in TABLE for path in step.writes}


def dvc_yaml() -> str:
    """dvc.yaml, as `dvc repro` runs the steps through `fmpipe step`."""
    lines = ["# Generated from the step table in pipelines/steps.py (make dvc): edit the table, not this.",
             "# The same steps as the KFP DAG (pipelines/dag.py), in the same order, as DVC stages.",
             "# `dvc repro` runs the same code through the CLI with DVC's caching; outputs go to artifacts/.",
             "stages:"]
    for step in TABLE:
        reads = [f"{ARTIFACTS}/{p}" for p in step.reads]
        deps = [*(["data"] if step.data else []), *reads, *step.code, TASKS, CORE]
        lines += [f"  {step.name}:",
                  f"    cmd: fmpipe step {step.name}",
                  f"    deps: [{', '.join(deps)}]",
                  f"    params: [{', '.join(step.params)}]",
                  f"    outs: [{', '.join(f'{ARTIFACTS}/{p}' for p in step.writes)}]"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(dvc_yaml(), end="")

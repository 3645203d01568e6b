"""Compile the DAG to KFP IR YAML (what a Kubeflow cluster runs)."""

from pathlib import Path

from kfp import compiler

from pipelines.dag import training_pipeline


def compile_pipeline(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(out))
    return out

"""Compile the DAG to KFP IR YAML (what a Kubeflow cluster runs)."""

from pathlib import Path

from kfp import compiler

from components.core.config import Params
from pipelines.dag import build_pipeline


def compile_pipeline(out: Path, params: Params | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(params), str(out))
    return out

"""Ask a Kubeflow cluster for a training step's CPU, memory and accelerator, from params.

Resources are part of the compiled pipeline, so apply them when the DAG is built; kfp.local
ignores them.
"""

from __future__ import annotations

from typing import Any

from components.core.config import ResourcesConfig


def apply_resources(task: Any, resources: ResourcesConfig) -> Any:
    """Set on the KFP PipelineTask what `resources` names (unset fields leave the cluster default)."""
    if resources.cpu_request:
        task.set_cpu_request(resources.cpu_request)
    if resources.cpu_limit:
        task.set_cpu_limit(resources.cpu_limit)
    if resources.memory_request:
        task.set_memory_request(resources.memory_request)
    if resources.memory_limit:
        task.set_memory_limit(resources.memory_limit)
    if resources.accelerator_type:
        task.set_accelerator_type(resources.accelerator_type)
        task.set_accelerator_limit(resources.accelerator_limit or 1)
    return task

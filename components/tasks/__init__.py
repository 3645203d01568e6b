"""Tasks: one module per kind of base model, chosen by `task.kind` in params (see base.py)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from components.core.config import Params
    from components.tasks.base import Task

# kind -> "module:class"; imported on demand, so a text run never imports the image code.
KINDS = {
    "text": "components.tasks.text:TextTask",
    "image": "components.tasks.image:ImageTask",
    "audio": "components.tasks.audio:AudioTask",
    "recsys": "components.tasks.recsys:RecsysTask",
}


def get_task(params: Params | None = None) -> Task:
    """The task params.task.kind names, configured by params (the defaults when None)."""
    kind = params.task.kind if params is not None else "text"
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)(params)

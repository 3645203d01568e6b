"""Training checkpoints that survive a killed process: written whole or not at all.

One directory per training run (named by the caller from everything that shapes the run, so a
changed config or data set never resumes from a stranger's state); inside it `step-<N>.pt` files,
each written to a temp name and renamed, so a kill mid-write leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^step-(\d{8})\.pt$")


class CheckpointStore:
    def __init__(self, root: Path, keep: int = 1, info: dict[str, Any] | None = None) -> None:
        self.root, self.keep, self.info = Path(root), max(1, keep), info or {}

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _NAME.match(p.name)))

    def path(self, step: int) -> Path:
        return self.root / f"step-{step:08d}.pt"

    def latest(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: dict[str, Any]) -> Path:
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
        if self.info:
            (self.root / "run.json").write_text(json.dumps(self.info, indent=2, default=str))
        final = self.path(step)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, final)  # atomic: a reader sees the old set or the new file, never half of it
        for old in self.steps()[: -self.keep]:
            self.path(old).unlink(missing_ok=True)
        for stale in self.root.glob(".step-*.tmp"):  # left by a process killed mid-write
            if not stale.name.endswith(f".{os.getpid()}.tmp"):
                stale.unlink(missing_ok=True)
        return final

    def load(self, step: int) -> dict[str, Any]:
        import torch

        # Only tensors and plain containers inside: the safe loader is enough.
        return torch.load(self.path(step), map_location="cpu", weights_only=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def checkpoint_root(model_dir: Path, configured: str) -> Path:
    """Where checkpoints go: finetune.checkpoint_dir, else next to the model output, so a retried
    step (same output path) resumes. Set an absolute path (a volume on a cluster) to resume
    across pipeline runs too."""
    return Path(configured) if configured else model_dir.parent / f"{model_dir.name}.checkpoints"

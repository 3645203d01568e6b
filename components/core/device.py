"""Pick the device and the mixed-precision mode: CUDA when present, bf16 where the hardware has it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any


def pick_device() -> Any:
    """The current CUDA device when there is one (each torchrun process has set its own), else CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def bf16_supported(device: Any) -> bool:
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_context(device: Any, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked for and supported; otherwise a no-op (fp32)."""
    import torch

    if bf16 and bf16_supported(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def attention_implementation(device: Any, choice: str = "auto") -> str:
    """`auto`: fused SDPA kernels on CUDA; on CPU the eager path, which measured faster for
    short sequences under bf16 autocast with dropout in training."""
    if choice != "auto":
        return choice
    return "sdpa" if device.type == "cuda" else "eager"


def synchronize(device: Any) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work and not its launch."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def container_cpu_limit(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """A container's CPU limit in whole CPUs (cgroup v2 `cpu.max`, what a Kubernetes limit sets),
    or None where there is none. Thread pools sized to the whole node would be throttled under
    it, and their timings misleading."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, int(int(quota) / int(period)))

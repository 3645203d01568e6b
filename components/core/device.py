"""Pick the device and the mixed-precision mode: CUDA when present, bf16 where the hardware has it."""

from __future__ import annotations

import contextlib
from typing import Any


def pick_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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

"""Run a training step as several data-parallel processes from inside one.

The KFP component (or `fmpipe step`) is one process. When the step's `processes` asks for more,
it starts torchrun on this node with the same step, params and tracking context, waits, and
reads rank 0's result: on GPUs each process drives one GPU (NCCL), on a CPU they share its cores
(gloo). Rank 0 tracks into the pipeline's MLflow run exactly as a single process would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from components.core.config import Params
from components.core.errors import ConfigError, FmpipeError
from components.core.tracking import RunContext


def processes_for(requested: int, setting: str = "processes") -> int:
    """How many processes to train with: `requested`, or for 0 one per visible GPU (1 without).
    On a GPU node each process needs a GPU of its own."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested and gpus and requested > gpus:
        raise ConfigError(f"{setting}={requested}, but this node has {gpus} GPU(s): one process per GPU "
                          f"at most (0 = one per GPU)")
    return requested or max(gpus, 1)


def inside_torchrun() -> bool:
    """True in a process torchrun started (it sets WORLD_SIZE); such a process never re-spreads."""
    return "WORLD_SIZE" in os.environ


def torchrun_command(step: str, processes: int, data_dir: Path, out_dir: Path, params_file: Path,
                     ctx_file: Path, result_file: Path, base_model_dir: Path | None = None) -> list[str]:
    """`python -m torch.distributed.run … -m components.training.launch --step STEP …` on this node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "components.training.launch", "--step", step, "--data", str(data_dir), "--out", str(out_dir),
           "--params-json", str(params_file), "--ctx-json", str(ctx_file), "--result", str(result_file)]
    if base_model_dir is not None:
        cmd += ["--base-model", str(base_model_dir)]
    return cmd


def run_spread(step: str, processes: int, data_dir: Path, out_dir: Path, params: Params, ctx: RunContext,
               base_model_dir: Path | None = None) -> dict:
    """Run `step` ("finetune" or "pretrain") as `processes` torchrun processes; rank 0's result
    as a dict. Their output goes straight to this process's stdout and stderr."""
    with tempfile.TemporaryDirectory(prefix=f"fmpipe-{step}-") as tmp:
        files = {name: Path(tmp) / f"{name}.json" for name in ("params", "ctx", "result")}
        files["params"].write_text(params.to_json())
        files["ctx"].write_text(ctx.to_json())
        cmd = torchrun_command(step, processes, data_dir, out_dir, files["params"], files["ctx"],
                               files["result"], base_model_dir)
        code = subprocess.run(cmd, env=_thread_env(processes)).returncode
        if code != 0 or not files["result"].exists():
            raise FmpipeError(f"{step}: the {processes} data-parallel processes failed (exit {code}); "
                              "their output is above")
        return json.loads(files["result"].read_text())


def _thread_env(processes: int) -> dict[str, str]:
    """The environment for torchrun: unless the user chose, each process gets its share of this
    machine's cores (torchrun's own default is 1 thread per process)."""
    env = dict(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // processes)))
    return env

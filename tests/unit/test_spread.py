"""How a training step spreads itself over torchrun processes (the real runs: tests/training)."""

from __future__ import annotations

import os
from pathlib import Path

from components.finetune import spread


def test_processes_zero_means_one_per_gpu_and_one_without():
    import torch

    assert spread.processes_for(3) == 3
    assert spread.processes_for(0) == max(torch.cuda.device_count(), 1)


def test_the_command_runs_the_same_step_under_torchrun_on_this_node():
    cmd = spread.torchrun_command("pretrain", 4, Path("d"), Path("o"), Path("p.json"), Path("c.json"),
                                  Path("r.json"), base_model_dir=Path("b"))
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[cmd.index("--step") + 1] == "pretrain" and cmd[cmd.index("--base-model") + 1] == "b"
    assert cmd[cmd.index("--ctx-json") + 1] == "c.json"


def test_each_process_gets_its_share_of_the_cores_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert spread._thread_env(2)["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert spread._thread_env(10 * cores)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert spread._thread_env(2)["OMP_NUM_THREADS"] == "7"


def test_a_torchrun_process_never_spreads_again(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not spread.inside_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert spread.inside_torchrun()

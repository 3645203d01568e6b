"""How a training step spreads itself over torchrun processes (the real runs: tests/training)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.core.errors import ConfigError
from components.training import spread


def test_processes_zero_means_one_per_gpu_and_one_without():
    import torch

    assert spread.processes_for(3) == 3
    assert spread.processes_for(0) == max(torch.cuda.device_count(), 1)


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    import torch

    # A node with 2 GPUs (the query is faked; the rule is what is under test).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert spread.processes_for(0) == 2 and spread.processes_for(2) == 2
    with pytest.raises(ConfigError, match="finetune.processes=3, but this node has 2 GPU"):
        spread.processes_for(3, "finetune.processes")


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

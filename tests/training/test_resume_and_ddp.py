"""Real processes: a training run killed with SIGKILL resumes from its last checkpoint, and two
torchrun processes (gloo) train the model one process would."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.conftest import REPO
from tests.training.conftest import launch_cmd, run_launch

# Long enough (2 epochs of ~190 steps) that the kill lands mid-run; a checkpoint every 10 steps.
RESUMABLE = ["finetune.batch_size=8", "finetune.epochs=2", "finetune.checkpoint_every_steps=10"]


def test_a_killed_run_resumes_from_its_last_checkpoint(data_dir, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    cmd = launch_cmd(data_dir, tmp_path / "model", tmp_path / "result.json", *RESUMABLE,
                     f"finetune.checkpoint_dir={checkpoints}")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not list(checkpoints.glob("*/step-*.pt")) and proc.poll() is None:
        time.sleep(0.005)  # kill as soon as the first checkpoint is complete
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-training, not finished
    saved = sorted(int(p.stem.split("-")[1]) for p in checkpoints.glob("*/step-*.pt"))
    assert saved and saved[-1] >= 10
    assert not (tmp_path / "model").exists()

    resumed = run_launch(cmd, tmp_path / "result.json")
    assert resumed["resumed_from_step"] == saved[-1]
    assert resumed["steps"] == resumed["total_steps"] > saved[-1]
    assert not any(checkpoints.iterdir())  # done: the checkpoints are cleared

    # The same run never interrupted: resuming changed nothing (same weights, data order, RNG).
    cmd = launch_cmd(data_dir, tmp_path / "straight", tmp_path / "straight.json", *RESUMABLE,
                     f"finetune.checkpoint_dir={tmp_path / 'other'}")
    straight = run_launch(cmd, tmp_path / "straight.json")
    assert straight["resumed_from_step"] == 0
    assert resumed["history"] == straight["history"]
    for key in ("val_macro_f1", "val_accuracy", "final_loss"):
        assert resumed[key] == straight[key]


def test_two_gloo_processes_train_what_one_process_does(data_dir, tmp_path):
    # Each of 2 processes takes batches of 16 and gradients are averaged: one step sees 32 rows,
    # which one process gets with batch 32. In fp32 without dropout the two runs are the same
    # computation up to rounding, so their losses and quality must match.
    exact = ["finetune.bf16=false", "finetune.dropout=0", "finetune.group_by_length=false",
             "finetune.epochs=4"]
    ddp = run_launch(launch_cmd(data_dir, tmp_path / "ddp", tmp_path / "ddp.json", *exact,
                                "finetune.batch_size=16", procs=2), tmp_path / "ddp.json")
    one = run_launch(launch_cmd(data_dir, tmp_path / "one", tmp_path / "one.json", *exact,
                                "finetune.batch_size=32"), tmp_path / "one.json")
    assert ddp["world_size"] == 2 and one["world_size"] == 1
    assert ddp["steps"] == one["steps"]
    loss = {name: [h["train_loss"] for h in r["history"] if "train_loss" in h] for name, r in
            (("ddp", ddp), ("one", one))}
    assert loss["ddp"] == pytest.approx(loss["one"], rel=1e-3)
    assert abs(ddp["val_macro_f1"] - one["val_macro_f1"]) <= 0.02
    # And it learned: well above the majority class's macro-F1 (about 0.2 for three classes).
    assert ddp["val_macro_f1"] > 0.3
    assert (tmp_path / "ddp" / "model.safetensors").exists()  # rank 0 saved the model

"""Real processes: a training run killed with SIGKILL resumes from its last checkpoint, and two
torchrun processes (gloo) train the model one process would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from tests.conftest import REPO
from tests.training.conftest import TINY, launch_cmd, run_launch

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


# Each of 2 processes takes batches of 16 and gradients are averaged: one step sees 32 rows,
# which one process gets with batch 32. In fp32 without dropout the runs are the same computation
# up to rounding, so their losses and quality must match.
EXACT = ["finetune.bf16=false", "finetune.dropout=0", "finetune.group_by_length=false", "finetune.epochs=4"]


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("one")
    return run_launch(launch_cmd(data_dir, out / "model", out / "one.json", *EXACT, "finetune.batch_size=32"),
                      out / "one.json")


def _assert_same_training(parallel: dict, one: dict) -> None:
    assert parallel["world_size"] == 2 and one["world_size"] == 1
    assert parallel["steps"] == one["steps"]
    loss = {name: [h["train_loss"] for h in r["history"] if "train_loss" in h] for name, r in
            (("parallel", parallel), ("one", one))}
    assert loss["parallel"] == pytest.approx(loss["one"], rel=1e-3)
    assert abs(parallel["val_macro_f1"] - one["val_macro_f1"]) <= 0.02
    # And it learned: well above the majority class's macro-F1 (about 0.2 for three classes).
    assert parallel["val_macro_f1"] > 0.3


def test_two_gloo_processes_train_what_one_process_does(data_dir, tmp_path, one_process):
    ddp = run_launch(launch_cmd(data_dir, tmp_path / "ddp", tmp_path / "ddp.json", *EXACT,
                                "finetune.batch_size=16", procs=2), tmp_path / "ddp.json")
    _assert_same_training(ddp, one_process)
    assert (tmp_path / "ddp" / "model.safetensors").exists()  # rank 0 saved the model


def test_two_nodes_meet_and_train_what_one_process_does(data_dir, tmp_path, one_process):
    # Two torchrun agents, as on two machines (a PyTorchJob's master and worker pods), started
    # with the node rank and master address each pod gets; here both on localhost.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [subprocess.Popen(
        launch_cmd(data_dir, tmp_path / "model", tmp_path / "result.json", *EXACT, "finetune.batch_size=16",
                   torchrun=["--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
                             "--master_addr=127.0.0.1", f"--master_port={port}"]),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    _assert_same_training(json.loads((tmp_path / "result.json").read_text()), one_process)
    assert (tmp_path / "model" / "model.safetensors").exists()  # node 0's rank 0 saved the model


def _ctx(tmp_path):  # noqa: ANN001, ANN202
    from components.core.tracking import RunContext

    return RunContext(pipeline_run_id="spread-test", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                      artifact_root=str(tmp_path / "artifacts"), data_source="tweets")


def _step_runs(ctx, step: str) -> list:  # noqa: ANN001
    import mlflow

    mlflow.set_tracking_uri(ctx.tracking_uri)
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`fmpipe.step` = '{step}'")


def test_a_step_asked_for_two_processes_starts_torchrun_itself_and_tracks_once(data_dir, tmp_path):
    # What the KFP component and `fmpipe step finetune` call: one process in, torchrun inside.
    from components.core.config import load_params
    from components.finetune import step as finetune_step

    params = load_params(REPO / "params.yaml", [*TINY, "finetune.processes=2", "finetune.max_steps=12"])
    ctx = _ctx(tmp_path)
    result = finetune_step.run(data_dir, tmp_path / "model", params, ctx)
    assert result.world_size == 2 and result.steps == 12
    assert (tmp_path / "model" / "model.safetensors").exists()
    runs = _step_runs(ctx, "finetune")
    assert len(runs) == 1  # rank 0 alone tracked, in the pipeline run's tree
    assert runs[0].data.tags["fmpipe.pipeline_run_id"] == "spread-test"
    assert runs[0].data.metrics["val_macro_f1"] == pytest.approx(result.val_macro_f1)


def test_pretraining_from_scratch_runs_data_parallel_with_one_tokenizer(data_dir, tmp_path):
    # Rank 0 trains the tokenizer and hands it to rank 1: the token ids are the ones a single
    # process would have made, and the model learns the text as well.
    from components.core.config import load_params
    from components.pretrain import step as pretrain_step

    small = ["pretrain.enabled=true", "pretrain.mode=scratch", "pretrain.objective=clm",
             "pretrain.vocab_size=1000", "pretrain.max_length=32", "pretrain.num_threads=1",
             "pretrain.hidden_size=32", "pretrain.num_layers=2", "pretrain.num_heads=2",
             "pretrain.intermediate_size=64", "pretrain.learning_rate=2e-3", "pretrain.bf16=false",
             "pretrain.checkpoint_every_steps=0"]
    two = pretrain_step.run(data_dir, tmp_path / "two", load_params(
        REPO / "params.yaml", [*small, "pretrain.processes=2", "pretrain.batch_size=16"]), _ctx(tmp_path))
    one = pretrain_step.train(data_dir, tmp_path / "one", load_params(
        REPO / "params.yaml", [*small, "pretrain.batch_size=32"]))
    assert two.world_size == 2 and one.world_size == 1
    tokenizers = [(tmp_path / run / "tokenizer.json").read_text() for run in ("two", "one")]
    assert tokenizers[0] == tokenizers[1]
    assert two.steps == one.steps
    assert two.perplexity < 0.7 * two.perplexity_before
    assert two.perplexity == pytest.approx(one.perplexity, rel=0.02)

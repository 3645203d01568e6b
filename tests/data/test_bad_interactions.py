"""Table-driven, for the recommender: a bad interactions file ends the run at ingest or validation with
one line naming the file, the column and the rule, a non-zero exit and the registry untouched; valid
oddities (dates instead of epoch seconds, implicit feedback, Parquet) are accepted.

Runs the CLI's step commands in-process (what `dvc repro` runs) on real MovieLens 100k ratings (20
users, read from the installed recbole wheel; nothing of it is committed), against a project whose
registry already holds a staged version of the recommender.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_project, run_bad_source, run_stages, stage_a_version

MODEL = "ratings-recommender"
OVERRIDES = ["task.kind=recsys", "data.name=ratings", "finetune.base_model=none", "validate_data.min_rows=10",
             "validate_data.class_share_min=0"]


def movielens(users: int = 20) -> pd.DataFrame:
    """The first `users` users of MovieLens 100k with all their ratings (as the file has them)."""
    from components.tasks.recsys_data import movielens_folder

    frame = pd.read_csv(movielens_folder() / "ml-100k.inter", sep="\t", dtype=str)
    frame.columns = ["user_id", "item_id", "rating", "timestamp"]
    keep = sorted(frame["user_id"].unique(), key=int)[:users]
    return frame[frame["user_id"].isin(keep)].reset_index(drop=True)


def edit(change: Callable[[pd.DataFrame], pd.DataFrame], suffix: str = ".csv") -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        frame = change(movielens())
        path = folder / f"ratings{suffix}"
        frame.to_parquet(path, index=False) if suffix == ".parquet" else frame.to_csv(path, index=False)
        return path
    return write


def at(row: int, column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row, column] = value
        return frame
    return change


def one_user_twice(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame[frame["user_id"] == frame["user_id"].iloc[0]]], ignore_index=True)


def a_user_with_two_ratings(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, pd.DataFrame({"user_id": ["9999", "9999"], "item_id": ["1", "2"],
                                           "rating": ["4", "5"], "timestamp": ["881250949", "881250950"]})])


def iso_dates(frame: pd.DataFrame) -> pd.DataFrame:
    when = pd.to_datetime(frame["timestamp"].astype(int), unit="s")
    frame["timestamp"] = when.dt.strftime("%Y-%m-%d %H:%M:%S")
    return frame


def not_a_table(folder: Path) -> Path:
    (folder / "ratings.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return folder / "ratings.csv"


FUTURE = str(int(time.time()) + 10 * 86400)
# (id, how the file is made, step that stops, column named, rule); step None = accepted
CASES = [
    ("a rating above the scale", edit(at(3, "rating", "7")), "validate_data", "rating", "rating_in_range"),
    ("a rating that is a word", edit(at(5, "rating", "five")), "validate_data", "rating", "rating_numeric"),
    ("a missing user id", edit(at(7, "user_id", None)), "validate_data", "user_id", "user_id_present"),
    ("a missing item id", edit(at(8, "item_id", None)), "validate_data", "item_id", "item_id_present"),
    ("an unparseable timestamp", edit(at(9, "timestamp", "last tuesday")), "validate_data", "timestamp",
     "timestamp_parseable"),
    ("a timestamp in the future", edit(at(10, "timestamp", FUTURE)), "validate_data", "timestamp",
     "timestamp_not_in_future"),
    ("a placeholder date", edit(at(11, "timestamp", "9999-12-31")), "validate_data", "timestamp",
     "timestamp_not_in_future"),
    ("every interaction of a user twice", edit(one_user_twice), "validate_data", "pair",
     "no_duplicate_interactions"),
    ("a user with two ratings", edit(a_user_with_two_ratings), "validate_data", "user_interactions",
     "min_interactions_per_user"),
    ("one user only", edit(lambda f: f[f["user_id"] == f["user_id"].iloc[0]]), "ingest", "user", "min_users"),
    ("no rating column", edit(lambda f: f.drop(columns="rating")), "ingest", "rating", "required_column"),
    ("not a table at all", not_a_table, "ingest", None, "readable_table"),
    ("dates instead of epoch seconds, as Parquet", edit(iso_dates, ".parquet"), None, None, None),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("bad_interactions") / "proj", OVERRIDES)
    stage_a_version(root, MODEL)
    return root


@pytest.mark.parametrize(("case", "make", "step", "column", "rule"), CASES, ids=[c[0] for c in CASES])
def test_bad_interactions_stop_with_one_clear_line(project, tmp_path, capsys, case, make, step, column, rule):
    source = make(tmp_path)
    message = run_bad_source(project, MODEL, source, capsys, step)
    if message is None:
        return
    assert source.name in message and f"rule '{rule}'" in message, message
    assert column is None or f"column '{column}'" in message, message


def test_implicit_feedback_needs_no_rating_column(project, tmp_path):
    source = edit(lambda f: f.drop(columns="rating"))(tmp_path)
    args = ["--params", str(project / "params.yaml"), "-S", f"data.source={source}",
            "-S", "task.recsys.rating_column="]
    assert run_stages(args) == {"ingest": 0, "validate_data": 0}

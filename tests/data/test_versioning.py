"""DVC really versions the data: idempotent re-ingest, new versions, reading an old revision."""

from __future__ import annotations

import subprocess

import pytest

from components.core.dataset import file_md5
from components.core.errors import DataError, FmpipeError
from components.ingest.versioning import (
    checkout_revision,
    dvc_file_commit,
    find_tracked,
    version_data,
)
from tests.conftest import make_project


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


@pytest.fixture()
def project(tmp_path):
    return make_project(tmp_path / "proj", [])


def test_reingest_is_a_noop_and_changed_content_is_a_new_version(project, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("text,label\ngood,pos\nbad,neg\n")
    first = version_data(str(source), "reviews", project)
    assert first.changed and first.md5 == file_md5(source)
    assert any(p.is_file() for p in (project / ".dvc-storage").rglob("*")), "not pushed to the local remote"
    assert not version_data(str(source), "reviews", project).changed
    source.write_text("text,label\ngood,pos\nbad,neg\nmeh,neu\n")
    second = version_data(str(source), "reviews", project)
    assert second.changed and second.md5 != first.md5
    assert find_tracked("reviews", project) == project / "data" / "reviews.csv"


def test_an_old_revision_is_recovered_through_dvc(project, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("text,label\nv1,pos\n")
    v1 = version_data(str(source), "reviews", project)
    assert dvc_file_commit(v1.dvc_file, project) == "uncommitted"
    git(project, "add", "-A")
    git(project, "commit", "-qm", "data v1")
    rev1 = dvc_file_commit(v1.dvc_file, project)
    source.write_text("text,label\nv2,pos\n")
    version_data(str(source), "reviews", project)
    git(project, "commit", "-qam", "data v2")
    old = checkout_revision(v1.path, rev1, project, tmp_path / "out")
    assert old.read_text() == "text,label\nv1,pos\n"
    assert (project / "data" / "reviews.csv").read_text() == "text,label\nv2,pos\n"
    assert dvc_file_commit(v1.dvc_file, project, rev1) == rev1
    with pytest.raises(FmpipeError, match="at revision 'nope'"):
        checkout_revision(v1.path, "nope", project, tmp_path / "out")


def test_a_missing_source_is_a_clear_error(project):
    with pytest.raises(DataError, match="file_exists"):
        version_data("nowhere.csv", "x", project)


def test_one_name_tracks_one_file(project, tmp_path):
    csv, jsonl = tmp_path / "reviews.csv", tmp_path / "reviews.jsonl"
    csv.write_text("text,label\ngood,pos\n")
    jsonl.write_text('{"text": "good", "label": "pos"}\n')
    version_data(str(csv), "reviews", project)
    with pytest.raises(FmpipeError, match=r"the name 'reviews' already tracks data/reviews\.csv"):
        version_data(str(jsonl), "reviews", project)
    assert find_tracked("reviews", project) == project / "data" / "reviews.csv"
    # Two files tracked under one name by hand: --data NAME refuses to guess.
    version_data(str(jsonl), "reviews2", project)
    (project / "data" / "reviews2.jsonl").rename(project / "data" / "reviews.jsonl")
    (project / "data" / "reviews2.jsonl.dvc").rename(project / "data" / "reviews.jsonl.dvc")
    with pytest.raises(FmpipeError, match="the name 'reviews' tracks 2 files"):
        find_tracked("reviews", project)


def test_a_dvc_failure_shows_dvc_own_reason(tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("text,label\ngood,pos\n")
    (tmp_path / "not_a_repo").mkdir()
    with pytest.raises(FmpipeError, match=r"dvc add data/reviews\.csv failed: ERROR: .*DVC repository"):
        version_data(str(source), "reviews", tmp_path / "not_a_repo")


def test_a_name_is_not_the_prefix_of_another(project, tmp_path):
    source = tmp_path / "reviews.v2.csv"
    source.write_text("text,label\ngood,pos\n")
    version_data(str(source), "reviews.v2", project)
    assert find_tracked("reviews", project) is None
    plain = tmp_path / "reviews.csv"
    plain.write_text("text,label\nbad,neg\n")
    assert version_data(str(plain), "reviews", project).changed  # not refused as 'already tracked'
    assert find_tracked("reviews", project) == project / "data" / "reviews.csv"
    assert find_tracked("reviews.v2", project) == project / "data" / "reviews.v2.csv"

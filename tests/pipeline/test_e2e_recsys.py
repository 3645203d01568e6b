"""The recommender through the same DAG under kfp.local, through the CLI, in a fresh project: real
MovieLens 100k ratings of 60 users and the titles of their films (CSV files written from the installed
recbole wheel; nothing of it is committed), an item tower started from MiniLM, registered and staged,
served by `fmpipe predict --user` and by the MLflow pyfunc as top-k lists."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest

from components.registry.registry import current_alias_version
from tests.conftest import fmpipe, make_project
from tests.data.test_bad_interactions import movielens

MODEL = "films-recommender"  # named after the data set (the file films.csv)
OVERRIDES = ["task.kind=recsys", "finetune.base_model=minilm", "finetune.epochs=3", "finetune.batch_size=256",
             "finetune.learning_rate=0.01", "finetune.weight_decay=0", "finetune.warmup_ratio=0",
             "finetune.max_grad_norm=0", "finetune.bf16=false", "finetune.checkpoint_every_steps=0",
             "validate_data.min_rows=50", "validate_data.class_share_min=0",
             "task.recsys.items_file=items.csv", "task.recsys.title_column=movie_title",
             "task.recsys.genres_column=class",
             "evaluate.require_beat_baselines=false"]
pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from components.tasks.recsys_data import movielens_folder

    root = make_project(tmp_path_factory.mktemp("e2e_recsys") / "proj", OVERRIDES)
    ratings = movielens(60)
    ratings.to_csv(root / "films.csv", index=False)
    items = pd.read_csv(movielens_folder() / "ml-100k.item", sep="\t", dtype=str)
    items.columns = [c.split(":")[0] for c in items.columns]
    items[items["item_id"].isin(set(ratings["item_id"]))].to_csv(root / "items.csv", index=False)
    mlflow.set_tracking_uri(f"sqlite:///{root / '.mlflow' / 'mlflow.db'}")
    return root


@pytest.fixture(scope="module")
def good_run(project):
    return fmpipe(project, "run", "--data", "films.csv")


def test_the_recommender_runs_the_same_dag_to_staging(project, good_run):
    assert good_run.returncode == 0, good_run.stdout[-3000:] + good_run.stderr[-3000:]
    assert "SUCCEEDED" in good_run.stdout and "baseline most_popular" in good_run.stdout
    assert "same top k for 100.0% of test users" in good_run.stdout  # ONNX parity on every test user
    (version,) = mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")
    assert current_alias_version(MODEL, "staging") == str(version.version)
    assert json.loads(version.tags["fmpipe.contract"]) == {
        "task": "recommendation", "labels": ["1", "2", "3", "4", "5"], "inputs": [["user", "string"]]}
    assert version.tags["fmpipe.primary_metric"] == "test_ndcg_at_10"
    assert {"metric.test_ndcg_at_10", "metric.test_rmse", "fmpipe.data_md5"} <= set(version.tags)
    evaluation = json.loads(next((project / ".fmpipe" / "runs").rglob("evaluation.json")).read_text())
    assert set(evaluation["baselines"]) == {"most_popular", "item_knn", "item_mean", "global_mean"}
    assert "items: cold start (no training interactions)" in evaluation["slices"]
    assert evaluation["model"]["text_tower_ndcg_at_10"] >= 0  # the item tower alone was measured
    assert (project / "data" / "films.csv.dvc").exists()  # the interactions file is versioned by DVC


def test_the_staged_recommender_serves_top_k_from_the_cli_and_the_pyfunc(project, good_run):
    ratings = pd.read_csv(project / "films.csv", dtype=str)
    user = ratings["user_id"].iloc[0]
    items = pd.read_csv(project / "items.csv", dtype=str)
    named = items["movie_title"] + " (" + items["release_year"] + ")"
    titles = dict(zip(items["item_id"], named, strict=True))
    out = fmpipe(project, "predict", MODEL, "--user", user, "--top", "5")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[1] == f"user {user}" and len(lines) == 7
    shown = [line.split(". ", 1)[1].split("  score")[0].strip() for line in lines[2:]]  # titles, cut at 50
    had = {titles[i] for i in ratings[ratings["user_id"] == user]["item_id"]}
    assert all(any(t[:50].strip() == title for t in titles.values()) for title in shown), shown
    assert not {t[:50].strip() for t in had} & set(shown)

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@staging")
    answer = model.predict([user, "a-stranger"], params={"top": 3})
    assert list(answer.columns) == ["user", "rank", "item", "title", "score", "rating"]
    assert answer["user"].tolist() == [user] * 3 + ["a-stranger"] * 3
    assert answer["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    mine = answer[answer["user"] == user]
    assert mine["score"].is_monotonic_decreasing and not set(mine["item"]) & set(
        ratings[ratings["user_id"] == user]["item_id"])


def test_the_card_shows_the_ranking_figures(project, good_run):
    card = next((project / ".fmpipe" / "runs").rglob("model_card")).read_text()
    assert "recommender" in card and "NDCG@10" in card and "RMSE" in card and "recall@10" in card


def test_a_challenger_is_scored_against_the_champions_own_artifact(project, good_run):
    """Production's version is scored from its served ONNX artifact on the same test users; a
    challenger retrained on the same inputs ties it and is blessed (min_delta 0)."""
    promoted = fmpipe(project, "promote", MODEL, "--version", "1", "--to", "production", "--reason", "e2e")
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    again = fmpipe(project, "run", "--data", "films.csv", "--force")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "the champion is version 1, holding 'production'" in again.stdout
    # Validation measured drift against production's data: the same data, so no new users or items.
    assert "drift vs production: activity_psi 0" in again.stdout and "new_user_share 0" in again.stdout
    runs = sorted((project / ".fmpipe" / "runs").rglob("evaluation.json"), key=lambda p: p.stat().st_mtime)
    evaluation = json.loads(runs[-1].read_text())
    champion, ours = evaluation["champion"], evaluation["model"]
    assert champion["version"] == "1"
    # Same data, params and seed: the same model, so the champion's artifact scores what ours does.
    assert champion["metrics"]["ndcg_at_10"] == pytest.approx(ours["ndcg_at_10"], abs=1e-6)
    assert any(c["name"].startswith("ndcg_at_10 vs champion") and c["passed"]
               for c in evaluation["blessing"]["checks"])

"""The recommender's pure logic: ranking figures, top-k, the per-user time split, drift, baselines and
the blessing. No files, no MLflow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from components.core.config import EvaluateConfig, RecsysTaskConfig
from components.tasks import recsys_data as data
from components.tasks import recsys_model as mf


def test_ndcg_recall_and_map_match_a_hand_computed_example():
    # User 0 holds out items 3 and 5; the list ranks 3 first and 5 fourth. User 1 gets nothing right.
    recommended = np.array([[3, 1, 2, 5], [1, 2, 4, 6]])
    found = mf.ranking_metrics(recommended, [np.array([3, 5]), np.array([7])], n_items=8, k=4)
    dcg = 1 / math.log2(2) + 1 / math.log2(5)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert found["ndcg_at_4"] == pytest.approx((dcg / ideal + 0.0) / 2)
    assert found["recall_at_4"] == pytest.approx((1.0 + 0.0) / 2)
    assert found["map_at_4"] == pytest.approx(((1 / 1 + 2 / 4) / 2 + 0.0) / 2)
    assert found["coverage"] == pytest.approx(6 / 7)  # items 1..7 exist; 1, 2, 3, 4, 5, 6 were shown


def test_top_k_never_returns_seen_items_or_the_unknown_row():
    scores = np.array([[9.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    top = mf.top_k(scores, [np.array([1, 3])], k=3)
    assert top.tolist() == [[2, 4, 5]]
    # Fewer items left than k: the rest is -1, which neither hits nor counts towards coverage.
    short = mf.top_k(scores, [np.array([1, 2, 3, 4])], k=3)
    assert short.tolist() == [[5, -1, -1]]
    assert mf.ranking_metrics(short, [np.array([5])], n_items=6, k=3)["coverage"] == pytest.approx(1 / 5)


def interactions(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[data.USER, data.ITEM, data.RATING, data.TIME])
    return data.clean(frame)[0]


def test_the_time_split_puts_each_users_latest_interactions_in_test():
    # Each user met the ten items in another order, so every test item is in someone else's train.
    rows = [(f"u{u}", f"i{i}", 4.0, 1000.0 * ((i + u) % 10) + u) for u in range(10) for i in range(10)]
    splits = data.time_split(interactions(rows), 0.1, 0.2, "x.csv", min_users=2)
    for user in (f"u{u}" for u in range(10)):
        times = {name: part[part[data.USER] == user][data.TIME] for name, part in splits.items()}
        assert len(times["test"]) == 2 and len(times["val"]) == 1 and len(times["train"]) == 7
        assert times["train"].max() < times["val"].min() <= times["val"].max() < times["test"].min()
    # Every test item was trained on here: no cold start.
    assert splits["test"][data.ITEM_SEEN].all()


def test_a_test_item_nobody_trained_on_is_marked_cold():
    rows = [(f"u{u}", f"i{i}", 3.0, float(i)) for u in range(3) for i in range(5)]
    rows.append(("u0", "brand-new", 5.0, 99.0))  # u0's latest: lands in test, never in train
    splits = data.time_split(interactions(rows), 0.1, 0.1, "x.csv", min_users=2)
    test = splits["test"].set_index(data.ITEM)
    assert test.loc["brand-new", data.ITEM_SEEN] == 0


def test_every_user_of_three_or_more_keeps_a_training_row_whatever_the_fractions():
    rows = [(f"u{u}", f"i{i}", 3.0, float(i)) for u in range(4) for i in range(4)]
    splits = data.time_split(interactions(rows), 0.4, 0.4, "x.csv", min_users=2)
    assert sorted(splits["train"][data.USER].unique()) == ["u0", "u1", "u2", "u3"]
    assert [len(splits[name]) for name in ("train", "val", "test")] == [4, 4, 8]  # 1, 1 and 2 per user


def test_too_few_users_is_one_clear_error():
    from components.core.errors import DataError

    rows = [("u0", f"i{i}", 3.0, float(i)) for i in range(20)]
    with pytest.raises(DataError, match="1 distinct user"):
        data.time_split(interactions(rows), 0.1, 0.1, "x.csv", min_users=2)


def test_timestamps_parse_from_epoch_seconds_and_dates():
    values = ["881250949", "2020-01-02 03:04:05", "yesterday", None, "9999-12-31"]
    parsed = data.parse_times(pd.Series(values))
    assert parsed[0] == 881250949 and parsed[1] == pd.Timestamp("2020-01-02 03:04:05", tz="UTC").timestamp()
    assert math.isnan(parsed[2]) and math.isnan(parsed[3])
    assert parsed[4] > 2.5e11  # a placeholder date stays a time (far in the future), not an overflow


def test_drift_counts_new_users_and_items():
    old = interactions([("a", "x", 4.0, 1.0), ("b", "y", 3.0, 2.0)])
    new = interactions([("a", "x", 4.0, 1.0), ("c", "z", 3.0, 2.0), ("d", "z", 5.0, 3.0)])
    figures = data.drift_figures(data.profile(old), data.profile(new))
    assert figures["new_user_share"] == pytest.approx(2 / 3)
    assert figures["new_item_share"] == pytest.approx(1 / 2)
    assert figures["label_psi"] > 0


def test_item_knn_scores_items_similar_to_what_the_user_had():
    # Users 1 and 2 both had items 1 and 2; user 3 had item 1 only: item 2 is its best neighbour.
    train = mf.Interactions(np.array([1, 1, 2, 2, 3]), np.array([1, 2, 1, 2, 1]), np.ones(5, np.float32))
    scores = mf.item_knn_scores(train, np.array([3]), n_users=4, n_items=4, neighbours=2)
    assert scores[0, 2] > 0 and scores[0, 3] == 0


def test_the_model_learns_a_preference_and_keeps_the_unknown_rows_at_zero():
    import torch

    rng = np.random.default_rng(0)
    users = rng.integers(1, 21, 2000)
    items = np.where(users <= 10, rng.integers(1, 6, 2000), rng.integers(6, 11, 2000))  # two tastes
    model = mf.build_model(21, 11, dim=4, global_mean=4.0, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        batch = {"user": torch.from_numpy(users), "item": torch.from_numpy(items),
                 "rating": torch.full((2000,), 4.0), "negative": torch.from_numpy(rng.integers(1, 11, 2000))}
        loss = mf.joint_loss(model, batch, ranking_weight=1.0, l2_rating=0.001, l2_ranking=0.001)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scores, _ = mf.score_users(model, np.array([1, 15]))
    assert scores[0, 1:6].mean() > scores[0, 6:].mean() and scores[1, 6:].mean() > scores[1, 1:6].mean()
    assert not model.user.weight[mf.UNKNOWN].any() and not model.item.weight[mf.UNKNOWN].any()


def test_blessing_needs_the_popularity_and_item_mean_baselines_beaten_and_keeps_the_champion_rule():
    from components.tasks.recsys import RecsysTask

    task = RecsysTask()
    base = {"most_popular": {"ndcg_at_10": 0.08}, "item_mean": {"rmse": 1.08}}
    ours = {"ndcg_at_10": 0.11, "rmse": 0.99}
    slices = {"items: tail": {"scored": True, "recall_at_10": 0.05}}
    assert task.decide(ours, base, slices, EvaluateConfig(), None).blessed
    worse_rmse = task.decide({**ours, "rmse": 1.2}, base, slices, EvaluateConfig(), None)
    assert not worse_rmse.blessed and [c.name for c in worse_rmse.checks if not c.passed] == [
        "rmse < item_mean baseline"]
    champion = {"metrics": {"ndcg_at_10": 0.12},
                "slices": {"items: tail": {"scored": True, "recall_at_10": 0.2}}}
    verdict = task.decide(ours, base, slices, EvaluateConfig(), champion)
    failed = [c.name for c in verdict.checks if not c.passed]
    assert not verdict.blessed and failed == ["ndcg_at_10 vs champion (by 0.0)",
                                              "slice 'items: tail' regression <= 0.05"]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="rating_min"):
        RecsysTaskConfig(rating_min=5, rating_max=1)

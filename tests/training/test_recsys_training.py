"""The recommender trains in the shared loop: seeded runs are identical, and a run interrupted after a
checkpoint resumes from it to the same weights and figures as a run never interrupted. Real
MovieLens ratings of 20 users, plain MF (no text model), in-process, a few seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.core.config import FinetuneConfig, Params
from components.tasks import recsys_data as data
from components.tasks.recsys import INFO_FILE, RecsysTask
from tests.data.test_bad_interactions import movielens

CFG = FinetuneConfig(base_model="none", epochs=3, batch_size=64, learning_rate=0.01, weight_decay=0.0,
                     warmup_ratio=0.0, max_grad_norm=0.0, bf16=False, log_every_steps=5, num_threads=1,
                     checkpoint_every_steps=10)


@pytest.fixture(scope="module")
def splits():
    frame = movielens(20).rename(columns={"user_id": data.USER, "item_id": data.ITEM,
                                          "rating": data.RATING, "timestamp": data.TIME})
    frame[data.RATING] = frame[data.RATING].astype(float)
    frame[data.TIME] = frame[data.TIME].astype(float)
    return data.time_split(data.clean(frame)[0], 0.1, 0.1, "ratings.csv", min_users=10)


def weights(model_dir) -> dict[str, np.ndarray]:
    import torch

    return {k: v.numpy() for k, v in torch.load(model_dir / "recommender.pt", weights_only=True).items()}


class Interrupted(Exception):
    pass


def test_seeded_runs_are_identical_and_an_interrupted_run_resumes_to_the_same_model(splits, tmp_path):
    task = RecsysTask(Params.model_validate({"task": {"kind": "recsys"}}))
    straight = task.fit(splits, None, ["1", "2", "3", "4", "5"], CFG, tmp_path / "a",
                        checkpoint_dir=tmp_path / "ck-a")
    again = task.fit(splits, None, ["1", "2", "3", "4", "5"], CFG, tmp_path / "b")
    assert straight.history == again.history and straight.val_metrics == again.val_metrics
    for name, value in weights(tmp_path / "a").items():
        np.testing.assert_array_equal(value, weights(tmp_path / "b")[name])
    assert json.loads((tmp_path / "a" / INFO_FILE).read_text())["text_model"] == "none"

    def stop_after_a_checkpoint(metrics, step):
        if list((tmp_path / "ck-c").glob("*/step-*.pt")):
            raise Interrupted

    with pytest.raises(Interrupted):
        task.fit(splits, None, ["1", "2", "3", "4", "5"], CFG, tmp_path / "c", log=stop_after_a_checkpoint,
                 checkpoint_dir=tmp_path / "ck-c")
    assert not (tmp_path / "c").exists()
    resumed = task.fit(splits, None, ["1", "2", "3", "4", "5"], CFG, tmp_path / "c",
                       checkpoint_dir=tmp_path / "ck-c")
    assert resumed.resumed_from_step >= CFG.checkpoint_every_steps
    assert resumed.val_metrics == straight.val_metrics and resumed.steps == straight.steps
    for name, value in weights(tmp_path / "a").items():
        np.testing.assert_array_equal(value, weights(tmp_path / "c")[name])
    assert not any((tmp_path / "ck-c").glob("*/step-*.pt"))  # done: its checkpoints are cleared

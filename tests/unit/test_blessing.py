import numpy as np
import pytest

from components.core.config import ChampionConfig, EvaluateConfig
from components.evaluate.evaluate import (
    Scored,
    calibration,
    classification_metrics,
    decide_blessing,
    sliced_metrics,
)

BASELINES = {"majority": {"macro_f1": 0.2}, "tfidf_logreg": {"macro_f1": 0.7}}


def scored(accuracy, macro_f1, slices=None):
    return Scored(metrics={"accuracy": accuracy, "macro_f1": macro_f1}, slices=slices or {})


def failed(verdict):
    return [c.name for c in verdict.checks if not c.passed]


def test_blessed_when_floors_met_and_baselines_beaten():
    cfg = EvaluateConfig(min_accuracy=0.6, min_macro_f1=0.6)
    verdict = decide_blessing(scored(0.8, 0.75), BASELINES, cfg)
    assert verdict.blessed and len(verdict.checks) == 4


def test_not_blessed_when_tfidf_wins_and_the_failing_check_is_named():
    cfg = EvaluateConfig(min_accuracy=0.6, min_macro_f1=0.6)
    verdict = decide_blessing(scored(0.8, 0.65), BASELINES, cfg)
    assert not verdict.blessed
    assert failed(verdict) == ["macro_f1 > tfidf_logreg baseline"]


def test_not_blessed_below_the_floor_even_without_baselines():
    cfg = EvaluateConfig(min_accuracy=0.9, require_beat_baselines=False)
    assert not decide_blessing(scored(0.8, 0.8), BASELINES, cfg).blessed


@pytest.mark.parametrize(
    ("policy", "challenger", "blessed"),
    [
        (ChampionConfig(min_delta=0.01), 0.815, True),
        (ChampionConfig(min_delta=0.01), 0.805, False),
        (ChampionConfig(allow_within_tolerance=True, tolerance=0.01), 0.795, True),
        (ChampionConfig(allow_within_tolerance=True, tolerance=0.01), 0.785, False),
    ],
)
def test_champion_policy(policy, challenger, blessed):
    cfg = EvaluateConfig(champion=policy)
    verdict = decide_blessing(scored(0.9, challenger), BASELINES, cfg, champion=scored(0.9, 0.80))
    assert verdict.blessed is blessed
    assert any(c.name.startswith("macro_f1 vs champion") for c in verdict.checks)


def test_a_regressed_slice_blocks_the_blessing_and_unscored_slices_are_ignored():
    cfg = EvaluateConfig(champion=ChampionConfig(max_slice_regression=0.05))
    ours = {"has_url": {"scored": True, "macro_f1": 0.60}, "tiny": {"scored": False, "rows": 3}}
    theirs = {"has_url": {"scored": True, "macro_f1": 0.70}, "tiny": {"scored": True, "macro_f1": 0.9}}
    verdict = decide_blessing(scored(0.9, 0.9, ours), BASELINES, cfg, champion=scored(0.9, 0.8, theirs))
    assert failed(verdict) == ["slice 'has_url' regression <= 0.05"]


def test_classification_metrics():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert abs(m["macro_f1"] - (2 / 3 + 0.8) / 2) < 1e-9


def test_calibration_error_is_zero_when_confidence_matches_accuracy():
    # 10 rows at confidence 0.8, 8 of them right: perfectly calibrated.
    probs = np.tile([[0.8, 0.2]], (10, 1))
    truth = np.array([0] * 8 + [1] * 2)
    assert calibration(probs, truth, 10)["ece"] == pytest.approx(0.0)
    # The same confidence, all wrong: ECE is the confidence itself.
    assert calibration(probs, np.ones(10, dtype=int), 10)["ece"] == pytest.approx(0.8)


def test_slices_by_length_and_regex_and_small_slices_are_flagged():
    import pandas as pd

    from components.core.config import Params
    from components.tasks.text import TextTask

    cfg = EvaluateConfig(length_buckets=[10], slices={"has_url": r"https?://"}, min_slice_rows=2)
    texts = ["short", "tiny", "a much longer text here", "see http://x.io now"]
    masks = TextTask(Params(evaluate=cfg)).slice_masks(pd.DataFrame({"text": texts}))
    assert {k: v.tolist() for k, v in masks.items()} == {
        "length 0-9": [True, True, False, False],
        "length 10+": [False, False, True, True],
        "has_url": [False, False, False, True],
    }
    out = sliced_metrics(["a", "b", "a", "b"], ["a", "b", "b", "b"], masks, ["a", "b"], min_rows=2)
    assert out["length 0-9"]["macro_f1"] == 1.0
    assert out["has_url"] == {"rows": 1, "scored": False, "note": "fewer than 2 rows"}

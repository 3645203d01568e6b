from components.core.config import EvaluateConfig
from components.evaluate.evaluate import classification_metrics, decide_blessing

BASELINES = {"majority": {"macro_f1": 0.2}, "tfidf_logreg": {"macro_f1": 0.7}}


def test_blessed_when_floors_met_and_baselines_beaten():
    cfg = EvaluateConfig(min_accuracy=0.6, min_macro_f1=0.6)
    verdict = decide_blessing({"accuracy": 0.8, "macro_f1": 0.75}, BASELINES, cfg)
    assert verdict.blessed and len(verdict.checks) == 4


def test_not_blessed_when_tfidf_wins_and_the_failing_check_is_named():
    cfg = EvaluateConfig(min_accuracy=0.6, min_macro_f1=0.6)
    verdict = decide_blessing({"accuracy": 0.8, "macro_f1": 0.65}, BASELINES, cfg)
    assert not verdict.blessed
    assert [c.name for c in verdict.checks if not c.passed] == ["macro_f1 > tfidf_logreg baseline"]


def test_not_blessed_below_the_floor_even_without_baselines():
    cfg = EvaluateConfig(min_accuracy=0.9, require_beat_baselines=False)
    assert not decide_blessing({"accuracy": 0.8, "macro_f1": 0.8}, BASELINES, cfg).blessed


def test_classification_metrics():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert abs(m["macro_f1"] - (2 / 3 + 0.8) / 2) < 1e-9

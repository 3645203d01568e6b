"""One macro-F1: finetune's early stopping, evaluate's blessing and export's variant gate agree."""

import numpy as np
import pytest

from components.evaluate.evaluate import classification_metrics
from components.export_onnx.export import macro_f1 as export_macro_f1
from components.training.classifier import macro_f1_and_accuracy

LABELS = ["negative", "neutral", "positive", "sarcastic"]  # "sarcastic": never true, never predicted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_three_steps_score_the_same_predictions_alike(seed):
    rng = np.random.default_rng(seed)
    truth_idx = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 4))
    logits[:, 3] = -99.0  # the fourth class is never predicted
    pred_idx = logits.argmax(axis=1)
    truth = [LABELS[i] for i in truth_idx]
    finetune_f1, finetune_acc = macro_f1_and_accuracy(truth_idx, pred_idx, len(LABELS))
    evaluated = classification_metrics(truth, [LABELS[i] for i in pred_idx], LABELS)
    assert finetune_f1 == evaluated["macro_f1"] == export_macro_f1(logits, LABELS, truth)
    assert finetune_acc == evaluated["accuracy"]
    # The absent class counts 0 in the average, as evaluate always counted it (finetune used to skip it).
    assert finetune_f1 < macro_f1_and_accuracy(truth_idx, pred_idx, 3)[0]

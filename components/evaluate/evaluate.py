"""evaluate: score the challenger on the test split against baselines and the champion, slice by
slice, and decide the blessing (a list of checks, each with its figures and verdict)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import EvaluateConfig
from components.core.contract import ContractError, contract_of
from components.core.dataset import LABEL
from components.core.evaluation import CHAMPION_CHECK, Blessing, Check, Evaluation
from components.core.metrics import accuracy, macro_f1, weighted_f1
from components.tasks.base import Task


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class report and confusion matrix (rows = truth)."""
    from sklearn.metrics import classification_report, confusion_matrix

    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, labels),
        "weighted_f1": weighted_f1(y_true, y_pred, labels),
        "per_class": classification_report(
            y_true, y_pred, labels=labels, output_dict=True, zero_division=0),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibration(probs: np.ndarray, y_true: np.ndarray, bins: int) -> dict[str, Any]:
    """Expected calibration error (top-label, equal-width bins) and the reliability table."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
        ece += mask.mean() * abs(acc - conf)
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "rows": int(mask.sum()),
                      "confidence": conf, "accuracy": acc})
    return {"ece": float(ece), "bins": table}


def sliced_metrics(
    y_true: list[str], y_pred: list[str], masks: dict[str, np.ndarray], labels: list[str], min_rows: int
) -> dict[str, dict[str, Any]]:
    """Macro-F1 and accuracy per slice; slices under min_rows are flagged, not scored."""
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    out = {}
    for name, mask in masks.items():
        rows = int(mask.sum())
        if rows < min_rows:
            out[name] = {"rows": rows, "scored": False, "note": f"fewer than {min_rows} rows"}
            continue
        m = classification_metrics(truth[mask].tolist(), pred[mask].tolist(), labels)
        out[name] = {"rows": rows, "scored": True, "macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
    return out


@dataclass
class Scored:
    """One model's results on the test split."""

    metrics: dict[str, Any]
    slices: dict[str, dict[str, Any]]
    calibration: dict[str, Any] | None = None


def decide_blessing(
    challenger: Scored, baselines: dict[str, dict[str, Any]], cfg: EvaluateConfig,
    champion: Scored | None = None,
) -> Blessing:
    """The challenger is blessed only if every check passes; each check keeps its figures."""
    m = challenger.metrics
    checks = [
        Check("accuracy >= min_accuracy", m["accuracy"], cfg.min_accuracy,
              m["accuracy"] >= cfg.min_accuracy),
        Check("macro_f1 >= min_macro_f1", m["macro_f1"], cfg.min_macro_f1,
              m["macro_f1"] >= cfg.min_macro_f1),
    ]
    if cfg.require_beat_baselines:
        for name, base in baselines.items():
            checks.append(Check(f"macro_f1 > {name} baseline", m["macro_f1"], base["macro_f1"],
                                m["macro_f1"] > base["macro_f1"]))
    if champion is not None:
        policy = cfg.champion
        best = champion.metrics["macro_f1"]
        needed = best - policy.tolerance if policy.allow_within_tolerance else best + policy.min_delta
        how = f"within {policy.tolerance}" if policy.allow_within_tolerance else f"by {policy.min_delta}"
        checks.append(Check(f"{CHAMPION_CHECK} ({how})", m["macro_f1"], needed,
                            m["macro_f1"] >= needed))
        for name, ours in challenger.slices.items():
            theirs = champion.slices.get(name, {})
            if not (ours.get("scored") and theirs.get("scored")):
                continue
            floor = theirs["macro_f1"] - policy.max_slice_regression
            checks.append(Check(f"slice '{name}' regression <= {policy.max_slice_regression}",
                                ours["macro_f1"], floor, ours["macro_f1"] >= floor))
    return Blessing(blessed=all(c.passed for c in checks), checks=checks)


def score(
    logits: np.ndarray, labels: list[str], masks: dict[str, np.ndarray], test_labels: list[str],
    cfg: EvaluateConfig,
) -> Scored:
    """One model's metrics, slices (masks from the task) and calibration on the test split."""
    predicted = [labels[i] for i in logits.argmax(axis=1)]
    truth_idx = np.array([labels.index(t) if t in labels else -1 for t in test_labels])
    return Scored(
        metrics=classification_metrics(test_labels, predicted, labels),
        slices=sliced_metrics(test_labels, predicted, masks, labels, cfg.min_slice_rows),
        calibration=calibration(softmax(logits), truth_idx, cfg.calibration_bins),
    )


def evaluate(
    model_dir: Path, train: pd.DataFrame, test: pd.DataFrame, cfg: EvaluateConfig, task: Task,
    bf16: bool = True, champion: tuple[str, np.ndarray, list[str]] | None = None,
) -> Evaluation:
    """Score the model on the test table; the task gives the baselines (fit on the train table) and
    the slices. `champion` is (version, its logits on the same test inputs, its labels)."""
    processor, model, labels = task.load_finetuned(model_dir)
    test_inputs, test_labels = test[task.input_column].tolist(), test[LABEL].tolist()
    logits = task.predict_logits(model, processor, test_inputs, cfg.batch_size, bf16)
    masks = task.slice_masks(test)
    challenger = score(logits, labels, masks, test_labels, cfg)
    baselines = {
        name: classification_metrics(test_labels, preds, labels)
        for name, preds in task.baselines(train[task.input_column].tolist(), train[LABEL].tolist(),
                                          test_inputs).items()
    }
    champ_scored, champ_info = None, None
    if champion is not None:
        version, champ_logits, champ_labels = champion
        if why := contract_of(task, labels).difference(contract_of(task, champ_labels)):
            # Never blessed for want of a comparison: a model of another contract is another model.
            raise ContractError(
                f"the champion (version {version}) answers other labels than this model ({why}): "
                "it cannot be compared, and this model must not replace it. Train this data set "
                "under its own registered model (leave registry.model_name empty)")
        # The champion's logits in this model's label order (its artifact may order them otherwise).
        champ_logits = champ_logits[:, [champ_labels.index(label) for label in labels]]
        champ_scored = score(champ_logits, labels, masks, test_labels, cfg)
        champ_info = {"version": version, "metrics": champ_scored.metrics, "slices": champ_scored.slices}
    blessing = decide_blessing(challenger, baselines, cfg, champ_scored)
    confidences = [round(float(p), 4) for p in softmax(logits).max(axis=1)] if len(logits) else []
    return Evaluation(labels, challenger.metrics, baselines, blessing, challenger.slices,
                      challenger.calibration or {}, champ_info, [labels[i] for i in logits.argmax(axis=1)],
                      confidences)


def pick_examples(truth: list[str], predicted: list[str], confidence: list[float], count: int) -> list[int]:
    """Test rows worth explaining: the most confident errors (half of `count`), then the most
    confident correct answers, in that order."""
    order = sorted(range(len(truth)), key=lambda i: -confidence[i])
    errors = [i for i in order if truth[i] != predicted[i]]
    right = [i for i in order if truth[i] == predicted[i]]
    picked = errors[: count // 2]
    return picked + right[: count - len(picked)]

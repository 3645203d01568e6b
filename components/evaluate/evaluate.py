"""evaluate: score the model on the test split against two baselines, and decide the blessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.core.config import EvaluateConfig
from components.core.task import TextClassificationTask


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class report and confusion matrix (rows = truth)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "per_class": classification_report(
            y_true, y_pred, labels=labels, output_dict=True, zero_division=0),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def baseline_predictions(
    train_texts: list[str], train_labels: list[str], test_texts: list[str], seed: int = 0
) -> dict[str, list[str]]:
    """Predictions of the two baselines a model must beat: majority class, TF-IDF + LR."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    values, counts = np.unique(np.asarray(train_labels), return_counts=True)
    majority = str(values[counts.argmax()])
    tfidf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed),
    )
    tfidf.fit(train_texts, train_labels)
    return {
        "majority": [majority] * len(test_texts),
        "tfidf_logreg": [str(p) for p in tfidf.predict(test_texts)],
    }


@dataclass
class Check:
    name: str
    value: float
    threshold: float
    passed: bool


@dataclass
class Blessing:
    blessed: bool
    checks: list[Check] = field(default_factory=list)


def decide_blessing(
    metrics: dict[str, Any], baselines: dict[str, dict[str, Any]], cfg: EvaluateConfig
) -> Blessing:
    """The model is blessed only if every check passes (each one kept with its figures)."""
    checks = [
        Check("accuracy >= min_accuracy", metrics["accuracy"], cfg.min_accuracy,
              metrics["accuracy"] >= cfg.min_accuracy),
        Check("macro_f1 >= min_macro_f1", metrics["macro_f1"], cfg.min_macro_f1,
              metrics["macro_f1"] >= cfg.min_macro_f1),
    ]
    if cfg.require_beat_baselines:
        for name, base in baselines.items():
            checks.append(Check(f"macro_f1 > {name} baseline", metrics["macro_f1"],
                                base["macro_f1"], metrics["macro_f1"] > base["macro_f1"]))
    return Blessing(blessed=all(c.passed for c in checks), checks=checks)


@dataclass
class Evaluation:
    labels: list[str]
    model: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    blessing: Blessing


def evaluate(
    model_dir: Path, train_texts: list[str], train_labels: list[str],
    test_texts: list[str], test_labels: list[str], cfg: EvaluateConfig, max_length: int,
    bf16: bool = True, task: TextClassificationTask | None = None,
) -> Evaluation:
    task = task or TextClassificationTask()
    tokenizer, model, labels = task.load_finetuned(model_dir)
    logits = task.predict_logits(model, tokenizer, test_texts, max_length, cfg.batch_size, bf16)
    predicted = [labels[i] for i in logits.argmax(axis=1)]
    model_metrics = classification_metrics(test_labels, predicted, labels)
    baselines = {
        name: classification_metrics(test_labels, preds, labels)
        for name, preds in baseline_predictions(train_texts, train_labels, test_texts).items()
    }
    return Evaluation(labels, model_metrics, baselines, decide_blessing(model_metrics, baselines, cfg))


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

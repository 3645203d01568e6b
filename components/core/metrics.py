"""The quality figures every step computes one way: finetune's early stopping, evaluate's blessing
and export's gate for reduced-precision variants all optimise the same macro-F1.

Macro-F1 averages over the model's whole label set, a class absent from both truth and
predictions counting 0 (not skipped), and a truth outside the label set counting as a miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def macro_f1(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(labels), average="macro", zero_division=0))


def weighted_f1(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(labels), average="weighted", zero_division=0))


def accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, y_pred))

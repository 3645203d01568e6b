"""The evaluation's pictures: confusion matrix, reliability diagram, per-slice bars (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():  # noqa: ANN202 - matplotlib without a display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path) -> None:
    plt = _pyplot()
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


def plot_reliability(calibration: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    bins = calibration["bins"]
    fig, ax = plt.subplots(figsize=(5, 5))
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    ax.bar(centers, [b["accuracy"] for b in bins], width=0.9 / max(len(bins), 1) if bins else 0.1,
           alpha=0.7, label="accuracy", edgecolor="black")
    ax.plot([0, 1], [0, 1], "k--", label="perfectly calibrated")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="C3",
            label="model")
    ax.set_xlabel("confidence (top label)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"Reliability diagram (ECE {calibration['ece']:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_slices(slices: dict[str, dict], path: Path, champion: dict[str, dict] | None = None) -> None:
    """Macro-F1 per slice; unscored (too small) slices are shown empty and marked."""
    plt = _pyplot()
    names = list(slices)
    ours = [s.get("macro_f1", 0.0) if s.get("scored") else 0.0 for s in slices.values()]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    height = 0.4 if champion else 0.7
    ax.barh(y, ours, height=height, label="challenger")
    if champion:
        theirs = [champion.get(n, {}).get("macro_f1", 0.0) if champion.get(n, {}).get("scored") else 0.0
                  for n in names]
        ax.barh(y + height, theirs, height=height, label="champion", alpha=0.7)
    labels = [f"{n} (n={s['rows']}{'' if s.get('scored') else ', not scored'})" for n, s in slices.items()]
    ax.set_yticks(y + (height / 2 if champion else 0), labels)
    ax.set_xlim(0, 1)
    ax.set_xlabel("macro-F1")
    ax.set_title("Macro-F1 by slice (test split)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ranking(evaluation: Any, path: Path) -> None:
    """A ranking task's figures: the model against its baselines (and champion) on the ranking
    metrics, and recall@k by slice."""
    plt = _pyplot()
    k = evaluation.primary.rsplit("_", 1)[-1]
    metrics = [f"ndcg_at_{k}", f"recall_at_{k}", f"map_at_{k}"]
    rows = {"model": evaluation.model, **{n: b for n, b in evaluation.baselines.items() if metrics[0] in b}}
    if evaluation.champion:
        rows[f"champion v{evaluation.champion['version']}"] = evaluation.champion["metrics"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(rows)
    for i, (name, figures) in enumerate(rows.items()):
        heights = [figures.get(m, 0.0) for m in metrics]
        left.bar(np.arange(len(metrics)) + i * width, heights, width, label=name)
    left.set_xticks(np.arange(len(metrics)) + width * (len(rows) - 1) / 2, metrics)
    left.set_title("test ranking figures")
    left.legend(fontsize=8)
    scored = {n: s for n, s in evaluation.slices.items() if s.get(f"recall_at_{k}") is not None}
    right.barh(list(scored), [s[f"recall_at_{k}"] for s in scored.values()],
               color=["tab:blue" if s.get("scored") else "tab:gray" for s in scored.values()])
    right.set_xlabel(f"recall@{k} (grey: too few rows to score)")
    right.set_title("by slice")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

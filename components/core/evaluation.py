"""The evaluation record: what evaluate writes and export and register read (evaluation.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHAMPION_CHECK = "macro_f1 vs champion"  # the blessing check that compares with the champion
EVALUATION_FILE = "evaluation.json"  # evaluate's output: metrics, baselines, blessing, champion


def champion_floor(evaluation: dict[str, Any]) -> float | None:
    """The macro-F1 the champion rule asked of the model (evaluation.json's check), if it ran."""
    for check in evaluation.get("blessing", {}).get("checks", []):
        if check["name"].startswith(CHAMPION_CHECK):
            return float(check["threshold"])
    return None


@dataclass
class Check:
    name: str
    value: float | None
    threshold: float | None
    passed: bool
    note: str = ""


@dataclass
class Blessing:
    blessed: bool
    checks: list[Check] = field(default_factory=list)


@dataclass
class Evaluation:
    labels: list[str]
    model: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    blessing: Blessing
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    champion: dict[str, Any] | None = None  # version, metrics and slices of the champion, if any
    predictions: list[str] = field(default_factory=list)  # the model's label per test row
    confidences: list[float] = field(default_factory=list)  # its probability for that label
    primary: str = "macro_f1"  # the metric in `model` that blessing and the champion rule compare
    headline: list[str] = field(default_factory=lambda: ["accuracy", "macro_f1", "weighted_f1"])


def headline_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """The figures a run reports first (evaluation.json's `headline`), as test_<name>."""
    names = evaluation.get("headline") or ["accuracy", "macro_f1", "weighted_f1"]
    return {f"test_{name}": float(evaluation["model"][name]) for name in names if name in evaluation["model"]}


def primary_metric(evaluation: dict[str, Any]) -> str:
    return evaluation.get("primary") or "macro_f1"

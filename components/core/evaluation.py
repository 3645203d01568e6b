"""The evaluation record: what evaluate writes and export and register read (evaluation.json)."""

from __future__ import annotations

from typing import Any

CHAMPION_CHECK = "macro_f1 vs champion"  # the blessing check that compares with the champion
EVALUATION_FILE = "evaluation.json"  # evaluate's output: metrics, baselines, blessing, champion


def champion_floor(evaluation: dict[str, Any]) -> float | None:
    """The macro-F1 the champion rule asked of the model (evaluation.json's check), if it ran."""
    for check in evaluation.get("blessing", {}).get("checks", []):
        if check["name"].startswith(CHAMPION_CHECK):
            return float(check["threshold"])
    return None

"""Drift: compare new data with the data the `production` model was trained on.

Every ingest writes a small profile of its training split (label counts, a sample of text
lengths, the vocabulary); the registry tells which pipeline run trained `production`, and that
run's profile is the reference. Three figures, each with a threshold and a severity in params.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from components.core.config import DriftConfig
from components.core.dataset import PROFILE_FILE, words


def population_stability_index(expected: dict[str, int], actual: dict[str, int]) -> float:
    """PSI over the union of categories; a small floor keeps empty bins finite."""
    keys = sorted(set(expected) | set(actual))
    e_total, a_total = max(sum(expected.values()), 1), max(sum(actual.values()), 1)
    psi = 0.0
    for key in keys:
        e = max(expected.get(key, 0) / e_total, 1e-4)
        a = max(actual.get(key, 0) / a_total, 1e-4)
        psi += (a - e) * math.log(a / e)
    return psi


def oov_rate(reference_vocabulary: list[str], texts: pd.Series) -> float:
    known = set(reference_vocabulary)
    tokens = [w for text in texts for w in words(text)]
    return sum(w not in known for w in tokens) / max(len(tokens), 1)


@dataclass
class DriftFigure:
    name: str
    value: float
    threshold: float
    passed: bool


def compare(reference: dict[str, Any], new: dict[str, Any], new_texts: pd.Series,
            cfg: DriftConfig) -> list[DriftFigure]:
    from scipy.stats import ks_2samp

    psi = population_stability_index(reference["label_counts"], new["label_counts"])
    ks = ks_2samp(reference["text_lengths"], new["text_lengths"])
    oov = oov_rate(reference["vocabulary"], new_texts)
    return [
        DriftFigure("label_psi", psi, cfg.max_label_psi, psi <= cfg.max_label_psi),
        DriftFigure("text_length_ks_pvalue", float(ks.pvalue), cfg.min_length_ks_pvalue,
                    float(ks.pvalue) >= cfg.min_length_ks_pvalue),
        DriftFigure("oov_rate", oov, cfg.max_oov_rate, oov <= cfg.max_oov_rate),
    ]


def production_profile(model_name: str, alias: str = "production") -> tuple[str, dict] | None:
    """(version, profile) of the data the model holding `alias` was trained on, if any."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from components.core.tracking import PIPELINE_RUN_TAG, STEP_TAG

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    pipeline_run = version.tags.get(PIPELINE_RUN_TAG)
    if not pipeline_run:
        return None
    runs = mlflow.search_runs(
        search_all_experiments=True, output_format="list", max_results=1,
        filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run}' and tags.`{STEP_TAG}` = 'ingest'",
    )
    if not runs:
        return None
    try:
        return str(version.version), mlflow.artifacts.load_dict(f"{runs[0].info.artifact_uri}/{PROFILE_FILE}")
    except Exception:  # a run from before profiles existed
        return None

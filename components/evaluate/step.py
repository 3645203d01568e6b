"""The evaluate step as the pipeline runs it: metrics, slices, calibration, baselines, the champion,
plots and the blessing."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from components.core.config import Params
from components.core.dataset import LABEL, read_splits
from components.core.evaluation import EVALUATION_FILE
from components.core.tracking import CHAMPION_VERSION_TAG, RunContext, note, step_run
from components.evaluate.champion import champion_artifact, champion_logits
from components.evaluate.evaluate import Evaluation, evaluate, pick_examples
from components.evaluate.plots import plot_confusion, plot_ranking, plot_reliability, plot_slices
from components.tasks import get_task
from components.tasks.base import Task

BLESSING_FILE = "blessing.json"
EXPLANATIONS_FILE = "explanations.json"


def run(data_dir: Path, model_dir: Path, out_dir: Path, params: Params, ctx: RunContext) -> Evaluation:
    """Evaluate; write evaluation.json, blessing.json and the PNG plots into out_dir."""
    splits = read_splits(data_dir)
    task = get_task(params)
    if task.ranking:
        return run_ranking(task, splits, model_dir, out_dir, params, ctx)
    test_inputs = splits["test"][task.input_column].tolist()
    cfg = params.evaluate
    with step_run(ctx, "evaluate") as track, tempfile.TemporaryDirectory() as tmp:
        champion = None
        for alias in filter(None, (cfg.champion.alias, cfg.champion.fallback_alias)):
            champion = champion_logits(params.registered_model, alias, test_inputs, Path(tmp))
            if champion:
                note(f"evaluate: the champion is version {champion[0]}, holding '{alias}'")
                break
        result = evaluate(model_dir, splits["train"], splits["test"], cfg, task, params.finetune.bf16,
                          champion=champion)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / EVALUATION_FILE).write_text(json.dumps(asdict(result), indent=1))
        (out_dir / BLESSING_FILE).write_text(json.dumps(asdict(result.blessing), indent=1))
        plot_confusion(result.model["confusion_matrix"], result.labels, out_dir / "confusion_matrix.png")
        plot_reliability(result.calibration, out_dir / "reliability.png")
        champion_slices = (result.champion or {}).get("slices")
        plot_slices(result.slices, out_dir / "slices.png", champion_slices)
        task.plots(splits["test"], result.predictions, out_dir)
        if cfg.explain_examples:
            try:
                record = explain(task, model_dir, splits["test"], result, cfg.explain_examples)
                (out_dir / EXPLANATIONS_FILE).write_text(json.dumps(record))
            except Exception as exc:  # explanations are for people; they never fail an evaluation
                note(f"evaluate: no explanations ({type(exc).__name__}: {exc})")
        track.artifact(out_dir, "evaluation")

        headline = {f"test_{k}": result.model[k] for k in ("accuracy", "macro_f1", "weighted_f1")}
        headline["test_ece"] = result.calibration["ece"]
        for name, base in result.baselines.items():
            headline[f"baseline_{name}_macro_f1"] = base["macro_f1"]
        if result.champion and "metrics" in result.champion:
            headline["champion_macro_f1"] = result.champion["metrics"]["macro_f1"]
        headline["blessed"] = float(result.blessing.blessed)
        track.metrics(headline, parent=True)
        track.metrics({f"slice_{name.replace(' ', '_').replace('+', 'plus')}_macro_f1": s["macro_f1"]
                       for name, s in result.slices.items() if s.get("scored")})
        tags = {"fmpipe.blessed": str(result.blessing.blessed).lower()}
        if result.champion:
            tags[CHAMPION_VERSION_TAG] = result.champion["version"]
        track.tags(tags, parent=True)
        failed = [c.name for c in result.blessing.checks if not c.passed]
        champ = (f", champion v{result.champion['version']} "
                 f"{result.champion['metrics']['macro_f1']:.4f}" if result.champion
                 and "metrics" in result.champion else "")
        bases = ", ".join(f"{name} {base['macro_f1']:.4f}" for name, base in result.baselines.items())
        note(f"evaluate: macro-F1 {result.model['macro_f1']:.4f}, accuracy {result.model['accuracy']:.4f} "
             f"({bases}{champ}), ECE "
             f"{result.calibration['ece']:.3f}; blessed: {result.blessing.blessed}"
             + (f" (failed: {'; '.join(failed)})" if failed else ""))
    return result


def run_ranking(task: Task, splits: dict, model_dir: Path, out_dir: Path, params: Params, ctx: RunContext
                ) -> Evaluation:
    """Evaluate a ranking task (the recommender): its own figures and blessing, the same record."""
    cfg = params.evaluate
    with step_run(ctx, "evaluate") as track, tempfile.TemporaryDirectory() as tmp:
        champion = None
        for alias in filter(None, (cfg.champion.alias, cfg.champion.fallback_alias)):
            champion = champion_artifact(params.registered_model, alias, Path(tmp))
            if champion:
                note(f"evaluate: the champion is version {champion[0]}, holding '{alias}'")
                break
        result = task.assess(model_dir, splits, cfg, champion)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / EVALUATION_FILE).write_text(json.dumps(asdict(result), indent=1))
        (out_dir / BLESSING_FILE).write_text(json.dumps(asdict(result.blessing), indent=1))
        plot_ranking(result, out_dir / "ranking.png")
        track.artifact(out_dir, "evaluation")
        primary = result.primary
        figures = {f"test_{k}": v for k, v in result.model.items() if isinstance(v, float)}
        for name, base in result.baselines.items():
            figures.update({f"baseline_{name}_{k}": v for k, v in base.items() if isinstance(v, float)})
        if result.champion:
            figures[f"champion_{primary}"] = result.champion["metrics"][primary]
        figures["blessed"] = float(result.blessing.blessed)
        track.metrics(figures, parent=True)
        track.metrics({f"slice_{_metric_name(name)}_{k}": v for name, s in result.slices.items()
                       for k, v in s.items() if s.get("scored") and isinstance(v, float)})
        tags = {"fmpipe.blessed": str(result.blessing.blessed).lower()}
        if result.champion:
            tags[CHAMPION_VERSION_TAG] = result.champion["version"]
        track.tags(tags, parent=True)
        failed = [c.name for c in result.blessing.checks if not c.passed]
        bases = ", ".join(f"{name} {base[primary]:.4f}" for name, base in result.baselines.items()
                          if primary in base)
        champ = (f", champion v{result.champion['version']} {result.champion['metrics'][primary]:.4f}"
                 if result.champion else "")
        note(f"evaluate: {primary} {result.model[primary]:.4f} ({bases}{champ}), "
             f"RMSE {result.model['rmse']:.4f} "
             f"(item mean {result.baselines['item_mean']['rmse']:.4f}); blessed: {result.blessing.blessed}"
             + (f" (failed: {'; '.join(failed)})" if failed else ""))
    return result


def _metric_name(slice_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", slice_name).strip("_")


def explain(task: Task, model_dir: Path, test: pd.DataFrame, result: Evaluation, count: int) -> dict:
    """Attributions for a few test rows (the most confident errors, then correct answers) towards
    the label the model gave them, for the model card."""
    truth = test[LABEL].tolist()
    rows = pick_examples(truth, result.predictions, result.confidences, count)
    processor, model, labels = task.load_finetuned(model_dir)
    inputs = [test[task.input_column].iloc[i] for i in rows]
    targets = [labels.index(result.predictions[i]) for i in rows]
    found = task.explain(model, processor, inputs, targets)
    examples = [{"row": int(i), "label": truth[i], "predicted": result.predictions[i],
                 "probability": result.confidences[i], **attributions}
                for i, attributions in zip(rows, found, strict=True)]
    return {"method": "integrated gradients (captum), towards the predicted label; red: for it, blue: "
                      "against it", "examples": examples}

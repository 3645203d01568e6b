"""The evaluate step as the pipeline runs it: metrics, baselines, plot, blessing."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from components.core.config import Params
from components.core.tracking import RunContext, note, step_run
from components.evaluate.evaluate import Evaluation, evaluate, plot_confusion
from components.ingest.ingest import LABEL, TEXT, read_splits

BLESSING_FILE = "blessing.json"


def run(data_dir: Path, model_dir: Path, out_dir: Path, params: Params, ctx: RunContext) -> Evaluation:
    """Evaluate; write evaluation.json, blessing.json and the confusion-matrix PNG into out_dir."""
    splits = read_splits(data_dir)
    with step_run(ctx, "evaluate") as track:
        result = evaluate(
            model_dir, splits["train"][TEXT].tolist(), splits["train"][LABEL].tolist(),
            splits["test"][TEXT].tolist(), splits["test"][LABEL].tolist(),
            params.evaluate, params.finetune.max_length, params.finetune.bf16,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "evaluation.json").write_text(json.dumps(asdict(result), indent=1))
        (out_dir / BLESSING_FILE).write_text(json.dumps(asdict(result.blessing), indent=1))
        plot_confusion(result.model["confusion_matrix"], result.labels, out_dir / "confusion_matrix.png")
        track.artifact(out_dir, "evaluation")
        headline = {f"test_{k}": result.model[k] for k in ("accuracy", "macro_f1", "weighted_f1")}
        for name, base in result.baselines.items():
            headline[f"baseline_{name}_macro_f1"] = base["macro_f1"]
        headline["blessed"] = float(result.blessing.blessed)
        track.metrics(headline, parent=True)
        note(f"evaluate: macro-F1 {result.model['macro_f1']:.4f} (tfidf "
             f"{result.baselines['tfidf_logreg']['macro_f1']:.4f}, majority "
             f"{result.baselines['majority']['macro_f1']:.4f}); blessed: {result.blessing.blessed}")
        track.tags({"fmpipe.blessed": str(result.blessing.blessed).lower()}, parent=True)
    return result

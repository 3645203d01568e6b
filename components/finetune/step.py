"""The finetune step as the pipeline runs it: train on the splits, track, save the model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from components.core.config import Params
from components.core.tracking import RunContext, note, step_run
from components.finetune.finetune import FinetuneResult, finetune
from components.ingest.ingest import LABEL, TEXT, label_set, read_splits


def run(data_dir: Path, model_dir: Path, params: Params, ctx: RunContext) -> FinetuneResult:
    cfg = params.finetune
    splits = read_splits(data_dir)
    labels = label_set(params.validate_data.labels, data_dir)
    with step_run(ctx, "finetune") as track:
        track.params(cfg.model_dump())
        result = finetune(
            splits["train"][TEXT].tolist(), splits["train"][LABEL].tolist(),
            splits["val"][TEXT].tolist(), splits["val"][LABEL].tolist(),
            labels, cfg, model_dir, log=lambda metrics, step: track.metrics(metrics, step=step),
        )
        note(f"finetune: {result.steps} steps in {result.train_seconds:.0f}s "
             f"({result.samples_per_second:.0f} samples/s), val macro-F1 {result.val_macro_f1:.4f}")
        summary = {k: v for k, v in asdict(result).items() if k != "history"}
        track.metrics({"train_seconds": result.train_seconds,
                       "samples_per_second": result.samples_per_second,
                       "val_macro_f1": result.val_macro_f1}, parent=True)
        track.json(summary, "finetune_result.json")
    return result

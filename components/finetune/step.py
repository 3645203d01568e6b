"""The finetune step as the pipeline runs it: train on the splits, track, save the model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from components.core.config import Params
from components.core.dataset import LABEL, label_set, read_catalogue, read_splits
from components.core.tracking import RunContext, note, step_run
from components.tasks import get_task
from components.training import distributed, spread
from components.training.checkpoint import checkpoint_root
from components.training.classifier import FinetuneResult, LogFn, finetune


def pretrained_base(base_model_dir: Path | None) -> str | None:
    """The pretrain step's model when it trained one (a disabled pretrain leaves no config.json)."""
    if base_model_dir is not None and (Path(base_model_dir) / "config.json").exists():
        return str(base_model_dir)
    return None


def train(data_dir: Path, model_dir: Path, params: Params, base_model_dir: Path | None = None,
          log: LogFn | None = None) -> FinetuneResult:
    """Train on the splits under data_dir and save to model_dir, without tracking."""
    cfg = params.finetune
    if base := pretrained_base(base_model_dir):
        cfg = cfg.model_copy(update={"base_model": base})
    task = get_task(params)
    if not base:
        task.check_checkpoint(cfg.base_model, "finetune.base_model")
    splits = read_splits(data_dir)
    labels = label_set(params.validate_data.labels, data_dir)
    checkpoints = checkpoint_root(model_dir, cfg.checkpoint_dir)
    if task.ranking:
        return task.fit(splits, read_catalogue(data_dir), labels, cfg, model_dir, log=log,
                        checkpoint_dir=checkpoints)
    column = task.input_column
    return finetune(
        splits["train"][column].tolist(), splits["train"][LABEL].tolist(),
        splits["val"][column].tolist(), splits["val"][LABEL].tolist(),
        labels, cfg, model_dir, task=task, log=log, checkpoint_dir=checkpoints,
    )


def run(data_dir: Path, model_dir: Path, params: Params, ctx: RunContext,
        base_model_dir: Path | None = None) -> FinetuneResult:
    processes = spread.processes_for(params.finetune.processes, "finetune.processes")
    if processes > 1 and not spread.inside_torchrun():
        return FinetuneResult(**spread.run_spread("finetune", processes, data_dir, model_dir, params, ctx,
                                                  base_model_dir))
    if not distributed.current().is_main:
        # Under torchrun the other processes train in step; rank 0 tracks and saves.
        return train(data_dir, model_dir, params, base_model_dir)
    with step_run(ctx, "finetune") as track:
        track.params(params.finetune.model_dump())
        result = train(data_dir, model_dir, params, base_model_dir,
                       log=lambda metrics, step: track.metrics(metrics, step=step))
        resumed = f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else ""
        chosen = "" if params.finetune.max_length else " (chosen from the data's token lengths)"
        truncated = (f"; {result.truncated_fraction:.1%} of training texts truncated at {result.max_length} "
                     f"tokens{chosen}" if result.max_length else "")
        scores = (", ".join(f"{k} {v:.4f}" for k, v in result.val_metrics.items()) if result.val_metrics
                  else f"val macro-F1 {result.val_macro_f1:.4f}, accuracy {result.val_accuracy:.4f}")
        note(f"finetune: {result.steps} steps in {result.train_seconds:.0f}s "
             f"({result.samples_per_second:.0f} samples/s, {result.world_size} process(es){resumed}), "
             f"{scores}{truncated}")
        summary = {k: v for k, v in asdict(result).items() if k != "history"}
        if pretrained_base(base_model_dir):
            track.params({"pretrained_base": str(base_model_dir)})
        track.metrics({"train_seconds": result.train_seconds,
                       "samples_per_second": result.samples_per_second,
                       **(result.val_metrics or {"val_macro_f1": result.val_macro_f1}),
                       "truncated_fraction": result.truncated_fraction}, parent=True)
        track.json(summary, "finetune_result.json")
    return result

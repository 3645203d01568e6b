"""The pretrain step as the pipeline runs it, tracked. Text: LM pretraining on the splits' text.
Images: supervised training on another labelled data set (pretrain.source), whose network
finetune then starts from with a new head: transfer learning. Audio: the task's self-supervised
pretraining (wav2vec 2.0) on the clips without their labels, plus pretrain.source's recordings."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from components.core.config import FinetuneConfig, Params, TrainLoopFields
from components.core.dataset import LABEL, TEXT, data_md5, read_splits
from components.core.splitting import split_by_key
from components.core.tracking import RunContext, note, step_run
from components.pretrain.pretrain import LogFn, PretrainResult, pretrain
from components.tasks import get_task
from components.tasks.text import check_checkpoint
from components.training import distributed, spread
from components.training.checkpoint import checkpoint_root
from components.training.classifier import FinetuneResult, finetune

SKIPPED_FILE = "pretrain_skipped.json"


def train(data_dir: Path, model_dir: Path, params: Params, log: LogFn | None = None) -> PretrainResult:
    """Pretrain on the train split's text; the val split's text is the held-out set."""
    cfg = params.pretrain
    if cfg.mode == "continued":
        check_checkpoint(cfg.base_model, "pretrain.base_model")
    splits = read_splits(data_dir)
    return pretrain(splits["train"][TEXT].tolist(), splits["val"][TEXT].tolist(), cfg, model_dir, log=log,
                    checkpoint_dir=checkpoint_root(model_dir, cfg.checkpoint_dir))


def train_on_source(model_dir: Path, params: Params, log: LogFn | None = None) -> FinetuneResult:
    """Images: train pretrain.base_model on the data set pretrain.source (read, cleaned and split as
    ingest does), with the pretrain section's loop settings; save it where finetune looks."""
    cfg, task = params.pretrain, get_task(params)
    task.check_checkpoint(cfg.base_model, "pretrain.base_model")
    source = task.resolve_source(cfg.source)
    frame, _ = task.read(source)
    cleaned, _ = task.clean(frame)
    splits = split_by_key(cleaned, task.group_keys(cleaned), params.ingest, str(source))
    loop = FinetuneConfig(**{name: getattr(cfg, name) for name in TrainLoopFields.model_fields},
                          base_model=cfg.base_model)
    column = task.input_column
    return finetune(splits["train"][column].tolist(), splits["train"][LABEL].tolist(),
                    splits["val"][column].tolist(), splits["val"][LABEL].tolist(),
                    sorted(splits["train"][LABEL].unique()), loop, model_dir, task=task, log=log,
                    checkpoint_dir=checkpoint_root(model_dir, cfg.checkpoint_dir))


def run(data_dir: Path, model_dir: Path, params: Params, ctx: RunContext) -> PretrainResult | None:
    """Pretrain when pretrain.enabled; otherwise leave a marker and no model, and finetune starts
    from finetune.base_model (so a DAG may wire this step in unconditionally)."""
    if not params.pretrain.enabled:
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / SKIPPED_FILE).write_text(json.dumps({"enabled": False}))
        note("pretrain: disabled (pretrain.enabled=false); finetune starts from finetune.base_model")
        return None
    task = get_task(params)
    if task.unlabelled_pretraining:
        with step_run(ctx, "pretrain") as track:
            track.params(params.pretrain.model_dump())
            result = task.pretrain(read_splits(data_dir), params, model_dir,
                                   log=lambda metrics, step: track.metrics(metrics, step=step),
                                   checkpoint_dir=checkpoint_root(model_dir, params.pretrain.checkpoint_dir))
            note(f"pretrain: {result.architecture} ({result.parameters / 1e6:.2f}M params), self-supervised "
                 f"on {result.train_clips} unlabelled clips ({result.real_clips} real recordings), "
                 f"{result.steps} steps in {result.train_seconds:.0f}s; held-out contrastive loss "
                 f"{result.heldout_contrastive_before:.3f} -> {result.heldout_contrastive:.3f}, true frame "
                 f"picked {result.heldout_accuracy_before:.1%} -> {result.heldout_accuracy:.1%}")
            track.metrics({"pretrain_contrastive_loss": result.heldout_contrastive,
                           "pretrain_contrastive_loss_before": result.heldout_contrastive_before},
                          parent=True)
            track.json({k: v for k, v in asdict(result).items() if k != "history"}, "pretrain_result.json")
        return None
    if params.task.kind != "text":  # supervised, on another data set; its figures go to MLflow
        with step_run(ctx, "pretrain") as track:
            track.params({**params.pretrain.model_dump(), "source_md5": data_md5(
                get_task(params).resolve_source(params.pretrain.source))})
            result = train_on_source(model_dir, params,
                                     log=lambda metrics, step: track.metrics(metrics, step=step))
            note(f"pretrain: {params.pretrain.base_model} trained on {params.pretrain.source}, "
                 f"{result.steps} steps in {result.train_seconds:.0f}s, val accuracy "
                 f"{result.val_accuracy:.4f}; finetune starts from it with a new head")
            track.metrics({"pretrain_val_accuracy": result.val_accuracy}, parent=True)
        return None
    processes = spread.processes_for(params.pretrain.processes, "pretrain.processes")
    if processes > 1 and not spread.inside_torchrun():
        return PretrainResult(**spread.run_spread("pretrain", processes, data_dir, model_dir, params, ctx))
    if not distributed.current().is_main:
        return train(data_dir, model_dir, params)
    with step_run(ctx, "pretrain") as track:
        track.params(params.pretrain.model_dump())
        result = train(data_dir, model_dir, params,
                       log=lambda metrics, step: track.metrics(metrics, step=step))
        note(f"pretrain: {result.objective} ({result.mode}, {result.architecture}, "
             f"{result.parameters / 1e6:.1f}M params) {result.steps} steps in {result.train_seconds:.0f}s "
             f"({result.world_size} process(es)); "
             f"held-out perplexity {result.perplexity_before:.1f} -> {result.perplexity:.1f}")
        track.metrics({"pretrain_perplexity": result.perplexity,
                       "pretrain_perplexity_before": result.perplexity_before}, parent=True)
        track.metrics({"perplexity_before": result.perplexity_before, "train_seconds": result.train_seconds,
                       "samples_per_second": result.samples_per_second})
        track.json({k: v for k, v in asdict(result).items() if k != "history"}, "pretrain_result.json")
    return result

"""The pretrain step as the pipeline runs it: LM pretraining on the splits' text, tracked."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from components.core.config import Params
from components.core.dataset import TEXT, read_splits
from components.core.tracking import RunContext, note, step_run
from components.pretrain.pretrain import LogFn, PretrainResult, pretrain
from components.tasks.text import check_checkpoint
from components.training import distributed, spread
from components.training.checkpoint import checkpoint_root

SKIPPED_FILE = "pretrain_skipped.json"


def train(data_dir: Path, model_dir: Path, params: Params, log: LogFn | None = None) -> PretrainResult:
    """Pretrain on the train split's text; the val split's text is the held-out set."""
    cfg = params.pretrain
    if cfg.mode == "continued":
        check_checkpoint(cfg.base_model, "pretrain.base_model")
    splits = read_splits(data_dir)
    return pretrain(splits["train"][TEXT].tolist(), splits["val"][TEXT].tolist(), cfg, model_dir, log=log,
                    checkpoint_dir=checkpoint_root(model_dir, cfg.checkpoint_dir))


def run(data_dir: Path, model_dir: Path, params: Params, ctx: RunContext) -> PretrainResult | None:
    """Pretrain when pretrain.enabled; otherwise leave a marker and no model, and finetune starts
    from finetune.base_model (so a DAG may wire this step in unconditionally)."""
    if not params.pretrain.enabled:
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / SKIPPED_FILE).write_text(json.dumps({"enabled": False}))
        note("pretrain: disabled (pretrain.enabled=false); finetune starts from finetune.base_model")
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

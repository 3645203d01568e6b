"""The training loop shared by finetune, pretrain and the GPU check.

Plain torch and transformers, no config library, so it runs wherever those two do. The caller
supplies what is task-specific: the batches of each epoch (as keys), how a key becomes tensors,
and the loss of a batch. The loop owns the rest: bf16 autocast, gradient accumulation, clipping,
fused AdamW with warmup and linear decay, data parallelism across torchrun processes, periodic
logging and evaluation, early stopping, and checkpoints a killed run resumes from.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from components.core.device import autocast_context, synchronize
from components.core.errors import FmpipeError
from components.training import distributed
from components.training.checkpoint import CheckpointStore

LogFn = Callable[[dict[str, float], int], None]
Batch = dict[str, Any]  # tensor name -> tensor


@dataclass
class LoopSettings:
    epochs: int = 1
    max_steps: int = 0               # 0 = run the epochs
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_accum_steps: int = 1
    max_grad_norm: float = 1.0       # 0 = no clipping
    bf16: bool = True
    compile: bool = False            # torch.compile the forward (and so backward) pass
    compile_mode: str | None = None  # torch.compile mode, e.g. "max-autotune-no-cudagraphs"
    log_every_steps: int = 20
    eval_every_steps: int = 0        # 0 = at the end of each epoch
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    checkpoint_every_steps: int = 0  # 0 = no checkpoints
    seed: int = 13
    desc: str = "train"
    progress: bool = True


@dataclass
class LoopResult:
    steps: int
    total_steps: int
    train_seconds: float             # the loop's wall time, evaluations excluded
    samples: int                     # seen by all processes in this run (not before a resume)
    samples_per_second: float
    eval_seconds: float
    final_loss: float
    resumed_from_step: int = 0
    stopped_early: bool = False
    best_step: int = 0
    eval_metrics: dict[str, float] = field(default_factory=dict)  # of the weights returned
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: Any, learning_rate: float, weight_decay: float) -> Any:
    """AdamW over the trainable parameters (no decay on biases and norms), fused where available."""
    import torch

    no_decay = ("bias", "LayerNorm.weight", "layer_norm", "ln_")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in no_decay)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError):  # no fused kernel on this build or device
        return torch.optim.AdamW(groups, lr=learning_rate)


def steps_per_epoch(n_batches: int, grad_accum_steps: int, world_size: int) -> int:
    """Optimizer steps in one pass: each takes grad_accum_steps batches on every process."""
    per_step = grad_accum_steps * world_size
    if n_batches < per_step:
        raise FmpipeError(
            f"an epoch has {n_batches} batch(es) but one optimizer step needs {per_step} "
            f"(grad_accum_steps x processes): use more data or a smaller batch_size/grad_accum_steps")
    return n_batches // per_step


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def _clone_weights(model: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}


@dataclass
class _Best:
    """Early-stopping state: the best score so far, its weights, evaluations since it."""

    score: float = -math.inf
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    weights: dict[str, Any] | None = None
    bad_evals: int = 0


def train_loop(
    model: Any,
    batches_of_epoch: Callable[[int], Sequence[Any]],
    collate: Callable[[Any], Batch],
    compute_loss: Callable[[Any, Batch], Any],
    settings: LoopSettings,
    *,
    device: Any,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    score_key: str = "",
    checkpoints: CheckpointStore | None = None,
    log: LogFn | None = None,
) -> LoopResult:
    """Train `model` in place; return how it went.

    batches_of_epoch(epoch) lists the batch keys of an epoch, the same on every process and on
    every call (seed it from the epoch): a resumed run finds its place by the step number alone.
    Process r of W takes keys r, r+W, ... ; `collate(key)` builds a batch on the CPU and
    `compute_loss(model, batch)` returns the mean loss of a batch already on `device`.
    evaluate(model) runs on rank 0 only; with early stopping, score_key names the metric to maximise
    and the best weights are restored at the end.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    s = settings
    dist = distributed.current()
    log = log if (log and dist.is_main) else (lambda metrics, step: None)
    accum = s.grad_accum_steps
    per_epoch = steps_per_epoch(len(batches_of_epoch(0)), accum, dist.world_size)
    total_steps = s.max_steps or per_epoch * s.epochs
    if s.early_stopping_patience and (evaluate is None or not score_key):
        raise FmpipeError("early stopping needs an evaluation and a metric to watch")

    model.to(device).train()
    # The process group syncs rank 0's weights into the others when it wraps the model.
    forward_model = model
    if dist.world_size > 1:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if s.compile:
        forward_model = torch.compile(forward_model, mode=s.compile_mode)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, s.learning_rate, s.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(s.warmup_ratio * total_steps), total_steps)
    torch.manual_seed(s.seed + dist.rank)  # dropout differs across processes, repeatably

    step, best, history = 0, _Best(), []
    resumed_from = checkpoints.latest() if checkpoints else None
    if resumed_from:
        state = checkpoints.load(resumed_from)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng[dist.rank] if len(rng) == dist.world_size else rng[0])
        if state["cuda_rng"] and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"][min(dist.rank, len(state["cuda_rng"]) - 1)], device)
        step, history = state["step"], state["history"]
        best = _Best(**state["best"])

    eval_seconds = 0.0

    def run_eval() -> dict[str, float]:
        nonlocal eval_seconds
        synchronize(device)
        begin = time.perf_counter()
        metrics = evaluate(model) if (evaluate and dist.is_main) else None
        model.train()
        metrics = distributed.broadcast_from_main(metrics)
        eval_seconds += time.perf_counter() - begin
        return metrics

    def save_checkpoint() -> None:
        rng = distributed.gather_to_all(torch.get_rng_state())
        on_gpu = device.type == "cuda"
        cuda_rng = distributed.gather_to_all(torch.cuda.get_rng_state(device)) if on_gpu else []
        if dist.is_main:
            checkpoints.save(step, {
                "step": step, "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng, "cuda_rng": cuda_rng, "history": history,
                "best": {"score": best.score, "step": best.step, "metrics": best.metrics,
                         "weights": best.weights, "bad_evals": best.bad_evals},
            })
        distributed.barrier()  # nobody runs ahead of a checkpoint still being written

    bar = tqdm(total=total_steps, initial=step, desc=s.desc, unit="step", mininterval=2.0,
               disable=None if (s.progress and dist.is_main) else True)
    running = torch.zeros((), device=device)
    running_n, last_loss, samples, stopped = 0, float("nan"), 0, False
    last_eval: dict[str, float] = {}
    plan_epoch, plan = -1, []
    started = last_note = time.perf_counter()
    while step < total_steps and not stopped:
        epoch, pos = divmod(step, per_epoch)
        if epoch != plan_epoch:
            plan_epoch, plan = epoch, batches_of_epoch(epoch)
        for micro in range(accum):
            batch = {k: v.to(device, non_blocking=True)
                     for k, v in collate(plan[(pos * accum + micro) * dist.world_size + dist.rank]).items()}
            # Gradients are all-reduced once per optimizer step, on its last micro-batch.
            sync = micro == accum - 1 or dist.world_size == 1
            with contextlib.nullcontext() if sync else forward_model.no_sync():
                with autocast_context(device, s.bf16):
                    loss = compute_loss(forward_model, batch)
                (loss / accum).backward()
            running += loss.detach()
            running_n += 1
            samples += next(iter(batch.values())).shape[0] * dist.world_size
        if s.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)

        if step % s.log_every_steps == 0 or step == total_steps:
            distributed.average_(running)  # the loss of every process, not just this one's
            last_loss = running.item() / running_n  # the only host sync: once per log interval
            running.zero_()
            running_n = 0
            point = {"train_loss": last_loss, "learning_rate": scheduler.get_last_lr()[0]}
            history.append({"step": step, **point})
            log(point, step)
            bar.set_postfix(loss=f"{last_loss:.3f}")
        at_epoch_end = step % per_epoch == 0
        due = step % s.eval_every_steps == 0 if s.eval_every_steps else at_epoch_end
        if evaluate and (due or step == total_steps):
            metrics = last_eval = run_eval()
            log(metrics, step)
            history.append({"step": step, **metrics})
            if s.early_stopping_patience:
                if metrics[score_key] > best.score:
                    best = _Best(metrics[score_key], step, metrics, _clone_weights(model), 0)
                else:
                    best.bad_evals += 1
                    stopped = best.bad_evals >= s.early_stopping_patience
        if checkpoints and s.checkpoint_every_steps and step % s.checkpoint_every_steps == 0 \
                and step < total_steps and not stopped:
            save_checkpoint()
        if bar.disable and dist.is_main and s.progress and time.perf_counter() - last_note > 20:
            # Where no live bar can be drawn (a log file, kfp.local): a progress line with an ETA.
            last_note = time.perf_counter()
            rate = samples / (last_note - started - eval_seconds)
            eta = (total_steps - step) * (last_note - started) / max(step - (resumed_from or 0), 1)
            print(f"[fmpipe] {s.desc} step {step}/{total_steps}, loss {last_loss:.3f}, "
                  f"{rate:.0f} samples/s, eta {eta:.0f}s", flush=True)
    synchronize(device)
    train_seconds = time.perf_counter() - started - eval_seconds
    bar.close()

    eval_metrics = dict(last_eval)
    if best.weights is not None and best.step != step:
        _unwrap(model).load_state_dict(best.weights)  # early stopping returns the best weights
        eval_metrics = dict(best.metrics)
    return LoopResult(
        steps=step, total_steps=total_steps, train_seconds=train_seconds, samples=samples,
        samples_per_second=samples / max(train_seconds, 1e-9), eval_seconds=eval_seconds,
        final_loss=last_loss,
        resumed_from_step=resumed_from or 0, stopped_early=stopped, best_step=best.step,
        eval_metrics=eval_metrics, history=history,
    )

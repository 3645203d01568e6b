"""finetune: a fast, plain training loop for sequence classification.

The recipe measured fastest on CPU without losing quality (see DESIGN.md): bf16 autocast, padding
to the longest row of each batch, length-grouped batches whose order is then fully shuffled
(grouping without the shuffle costs F1 on small data), fused AdamW, linear warmup and decay.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.core.config import FinetuneConfig
from components.core.task import TextClassificationTask, save_labels

LogFn = Callable[[dict[str, float], int], None]


@dataclass
class FinetuneResult:
    steps: int
    train_seconds: float
    samples_per_second: float
    final_loss: float
    val_macro_f1: float
    val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(
    lengths: list[int], batch_size: int, rng: np.random.Generator, group: bool
) -> list[np.ndarray]:
    """Batches of row indices. Grouped: rows of similar length share a batch (little padding),
    and the batch order is shuffled so training never sees lengths in order."""
    order = rng.permutation(len(lengths))
    if group:
        # A stable sort of a random permutation: equal lengths end up in random order.
        order = order[np.argsort(np.asarray(lengths)[order], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group:
        rng.shuffle(batches)
    return batches


def macro_f1_and_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return float(f1_score(y_true, y_pred, average="macro")), float(accuracy_score(y_true, y_pred))


def finetune(
    train_texts: list[str], train_labels: list[str],
    val_texts: list[str], val_labels: list[str],
    labels: list[str], cfg: FinetuneConfig, out_dir: Path,
    task: TextClassificationTask | None = None, log: LogFn | None = None,
) -> FinetuneResult:
    """Fine-tune cfg.base_model on the train split; save model, tokenizer and label map to out_dir."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from components.core.device import autocast_context, pick_device

    task = task or TextClassificationTask()
    log = log or (lambda metrics, step: None)
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device()

    tokenizer, model = task.load_pretrained(cfg.base_model, labels)
    model.to(device).train()
    label_ids = {name: i for i, name in enumerate(labels)}
    ids = task.encode(tokenizer, train_texts, cfg.max_length)
    y = torch.tensor([label_ids[v] for v in train_labels], dtype=torch.long)

    steps_per_epoch = -(-len(ids) // cfg.batch_size)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    try:
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)
    except (RuntimeError, TypeError):  # fused kernels missing on this build/device
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total_steps), total_steps)

    rng = np.random.default_rng(cfg.seed)
    lengths = [len(row) for row in ids]
    history: list[dict[str, float]] = []
    step, seen, running, last_loss = 0, 0, 0.0, float("nan")
    started = time.perf_counter()
    # A live bar on a terminal; plain progress lines when the output is a log (kfp.local, CI).
    bar = tqdm(total=total_steps, desc="finetune", unit="step", mininterval=2.0, disable=None)
    last_note = started
    while step < total_steps:
        for batch_idx in length_grouped_batches(lengths, cfg.batch_size, rng, cfg.group_by_length):
            batch = task.collate(tokenizer, [ids[i] for i in batch_idx])
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast_context(device, cfg.bf16):
                logits = model(**batch).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), y[batch_idx].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(batch_idx)
            running += loss.item()
            bar.update(1)
            if step % cfg.log_every_steps == 0 or step == total_steps:
                last_loss = running / (step % cfg.log_every_steps or cfg.log_every_steps)
                running = 0.0
                point = {"train_loss": last_loss, "learning_rate": scheduler.get_last_lr()[0]}
                history.append({"step": step, **point})
                log(point, step)
                bar.set_postfix(loss=f"{last_loss:.3f}")
            if bar.disable and time.perf_counter() - last_note > 20:
                last_note = time.perf_counter()
                rate = step / (last_note - started)
                print(f"[fmpipe] finetune step {step}/{total_steps}, loss {last_loss:.3f}, "
                      f"{seen / (last_note - started):.0f} samples/s, "
                      f"eta {(total_steps - step) / rate:.0f}s", flush=True)
            if step >= total_steps:
                break
    bar.close()
    train_seconds = time.perf_counter() - started

    val_logits = task.predict_logits(model, tokenizer, val_texts, cfg.max_length, bf16=cfg.bf16)
    val_true = np.array([label_ids[v] for v in val_labels])
    val_f1, val_acc = macro_f1_and_accuracy(val_true, val_logits.argmax(axis=1))
    log({"val_macro_f1": val_f1, "val_accuracy": val_acc}, step)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    save_labels(out_dir, labels)
    return FinetuneResult(
        steps=step, train_seconds=train_seconds, samples_per_second=seen / max(train_seconds, 1e-9),
        final_loss=last_loss, val_macro_f1=val_f1, val_accuracy=val_acc, history=history,
    )

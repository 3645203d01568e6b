"""Training a classifier, whatever the task (text, image): a fast, plain loop. The finetune step
runs it on the data set; for images the pretrain step runs it on a source data set first.

The recipe measured fastest on CPU without losing quality (README.md, Training): bf16 autocast, padding
to the longest row of each batch, length-grouped batches whose order is then fully shuffled
(grouping without the shuffle costs F1 on small data), fused AdamW, linear warmup and decay.
Full fine-tuning or LoRA; class weights; early stopping on validation macro-F1; checkpoints that
a restarted run resumes from; data-parallel across torchrun processes. The loop is in loop.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.core.errors import FmpipeError
from components.core.metrics import accuracy, macro_f1
from components.tasks.base import Task
from components.training import distributed
from components.training.batches import length_grouped_batches
from components.training.checkpoint import CheckpointStore
from components.training.loop import LoopSettings, seed_everything, train_loop

if TYPE_CHECKING:  # the config model needs pydantic; this module runs without it (GPU check)
    from components.core.config import FinetuneConfig

LogFn = Callable[[dict[str, float], int], None]
SCORE = "val_macro_f1"
# Settings that change neither the weights nor the batch order: a run may resume across them.
# Settings that don't change what is trained (world_size is hashed on its own, so `processes` is not).
_NOT_SHAPING = ("log_every_steps", "checkpoint_every_steps", "checkpoint_dir", "num_threads", "resources",
                "processes")


@dataclass
class FinetuneResult:
    steps: int
    train_seconds: float
    samples_per_second: float
    final_loss: float
    val_macro_f1: float
    val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    total_steps: int = 0
    resumed_from_step: int = 0
    stopped_early: bool = False
    best_step: int = 0
    trainable_params: int = 0
    world_size: int = 1
    eval_seconds: float = 0.0
    truncated_fraction: float = 0.0  # text: training texts longer than max_length tokens (cut)
    max_length: int = 0              # text: the sequence length it trained at
    val_metrics: dict[str, float] = field(default_factory=dict)  # a ranking task's validation figures


def macro_f1_and_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> tuple[float, float]:
    """On label indices 0..n_labels-1: the same macro-F1 evaluate blesses with (core/metrics.py)."""
    return macro_f1(y_true, y_pred, range(n_labels)), accuracy(y_true, y_pred)


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * count_c), as scikit-learn's "balanced": rare classes weigh more in the loss."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return len(y) / (n_classes * np.maximum(counts, 1.0))


def run_key(cfg: FinetuneConfig, inputs: list[Any], labels: list[str], label_set: list[str],
            world_size: int, task_settings: Any = None) -> str:
    """A digest of everything that shapes a training run: its checkpoints live under this name."""
    digest = hashlib.sha256()
    shaping = {k: v for k, v in cfg.model_dump().items() if k not in _NOT_SHAPING}
    extra = [task_settings] if task_settings is not None else []
    digest.update(json.dumps([shaping, label_set, world_size, *extra], sort_keys=True, default=str).encode())
    for item, label in zip(inputs, labels, strict=True):
        digest.update((item if isinstance(item, bytes) else str(item).encode()) + f"\x00{label}\x01".encode())
    return digest.hexdigest()[:16]


def apply_lora(model: Any, cfg: FinetuneConfig) -> Any:
    """Wrap the model with LoRA adapters; the classification head stays fully trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                        lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules or None)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # peft knows no default target modules for this architecture
        raise FmpipeError(f"LoRA: {exc}; set finetune.lora_target_modules") from None


def finetune(
    train_inputs: list[Any], train_labels: list[str],
    val_inputs: list[Any], val_labels: list[str],
    labels: list[str], cfg: FinetuneConfig, out_dir: Path,
    task: Task | None = None, log: LogFn | None = None,
    checkpoint_dir: Path | None = None,
) -> FinetuneResult:
    """Fine-tune cfg.base_model on the train split; save model, processor and label map to out_dir.
    The task (text by default) loads the model and turns inputs into batches.

    With checkpoint_dir (and cfg.checkpoint_every_steps), checkpoints go to a sub-folder named by
    run_key(); a run started again with the same settings and data resumes from the latest one.
    Under torchrun every process calls this; rank 0 evaluates and saves.
    """
    import torch

    from components.core.device import attention_implementation, pick_device

    if task is None:
        from components.tasks import get_task

        task = get_task()
    dist = distributed.current()
    unknown = sorted(set(train_labels) - set(labels))
    if unknown:
        raise FmpipeError(f"training labels {unknown[:5]} are not in the label set {labels}")
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device()

    processor, model = task.load_pretrained(
        cfg.base_model, labels, dropout=cfg.dropout,
        attn_implementation=attention_implementation(device, cfg.attention))
    if cfg.method == "lora":
        model = apply_lora(model, cfg)
    elif cfg.freeze_embeddings:
        task.freeze_for_speed(model)
    if cfg.freeze_layers:
        task.freeze_lower_layers(model, cfg.freeze_layers)
    label_ids = {name: i for i, name in enumerate(labels)}
    prepared = task.prepare(processor, model, train_inputs, cfg)
    lengths = prepared.lengths
    if prepared.report.get("max_length"):  # text: chosen from the data when finetune.max_length is 0
        cfg = cfg.model_copy(update={"max_length": int(prepared.report["max_length"])})
    y = np.array([label_ids[v] for v in train_labels], dtype=np.int64)
    val_true = np.array([label_ids.get(v, -1) for v in val_labels])
    weight = None
    if cfg.class_weights == "balanced":
        weight = torch.tensor(balanced_class_weights(y, len(labels)), dtype=torch.float32, device=device)

    def batches_of_epoch(epoch: int) -> list[np.ndarray]:
        # Seeded by the epoch alone: every process, and a resumed run, sees the same plan.
        return length_grouped_batches(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]),
                                      cfg.group_by_length)

    def collate(rows: np.ndarray) -> dict[str, Any]:
        # Augmentation (where the task has any) drawn from the batch's own rows: reproducible.
        rng = np.random.default_rng([cfg.seed, *(int(r) for r in rows[:8])])
        return {**task.collate(processor, prepared.features, rows, rng), "labels": torch.from_numpy(y[rows])}

    def compute_loss(net: Any, batch: dict[str, Any]) -> Any:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = net(**inputs).logits
        return torch.nn.functional.cross_entropy(logits.float(), batch["labels"], weight=weight)

    def evaluate(net: Any) -> dict[str, float]:
        logits = task.predict_logits(net, processor, val_inputs, bf16=cfg.bf16)
        f1, acc = macro_f1_and_accuracy(val_true, logits.argmax(axis=1), len(labels))
        return {SCORE: f1, "val_accuracy": acc}

    store = None
    if checkpoint_dir is not None and cfg.checkpoint_every_steps:
        key = run_key(cfg, train_inputs, train_labels, labels, dist.world_size,
                      getattr(task, "settings", None))
        store = CheckpointStore(Path(checkpoint_dir) / key,
                                info={"base_model": cfg.base_model, "train_rows": len(train_inputs)})
    settings = LoopSettings(
        epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
        grad_accum_steps=cfg.grad_accum_steps, max_grad_norm=cfg.max_grad_norm, bf16=cfg.bf16,
        compile=cfg.compile, compile_mode=None if cfg.compile_mode == "default" else cfg.compile_mode,
        log_every_steps=cfg.log_every_steps, eval_every_steps=cfg.eval_every_steps,
        early_stopping_patience=cfg.early_stopping_patience,
        checkpoint_every_steps=cfg.checkpoint_every_steps, seed=cfg.seed, desc="finetune",
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with task.training_shortcuts(model):
        loop = train_loop(model, batches_of_epoch, collate, compute_loss, settings, device=device,
                          evaluate=evaluate, score_key=SCORE, checkpoints=store, log=log)

    if dist.is_main:
        if cfg.method == "lora":
            model = model.merge_and_unload()  # a plain checkpoint: evaluate and export need no peft
        out_dir.mkdir(parents=True, exist_ok=True)
        task.save(processor, model, out_dir, labels)
        if store:
            store.clear()  # the model is saved: nothing left to resume
    return FinetuneResult(
        steps=loop.steps, train_seconds=loop.train_seconds, samples_per_second=loop.samples_per_second,
        final_loss=loop.final_loss, val_macro_f1=loop.eval_metrics.get(SCORE, float("nan")),
        val_accuracy=loop.eval_metrics.get("val_accuracy", float("nan")), history=loop.history,
        total_steps=loop.total_steps, resumed_from_step=loop.resumed_from_step,
        stopped_early=loop.stopped_early, best_step=loop.best_step, trainable_params=trainable,
        world_size=dist.world_size, eval_seconds=loop.eval_seconds,
        truncated_fraction=float(prepared.report.get("truncated_fraction", 0.0)),
        max_length=int(prepared.report.get("max_length", 0)),
    )

"""GPU check of the training loop: samples/s of transformers' Trainer (bf16) against our loop
(bf16 autocast + fused AdamW), eager and with torch.compile, on the same machine in one run.

A random-init BERT of MiniLM's size (6 layers, hidden 384, 12 heads, intermediate 1536, vocab
30522), sequence 128, batch 256, synthetic token ids (throughput does not depend on the words).
Each contender trains `--warmup` steps, then is timed over `--steps` steps (the clock is read
after the GPU has finished, at the same step boundaries). Goal (issue 4): our loop >= 2.5x Trainer.

Contenders: Trainer with default settings but bf16; our loop eager; our loop compiled with CUDA
graphs (reduce-overhead), all three on the same recipe (dropout 0.1, every weight trains); and
the compiled loop on finetune's shipped recipe (params.yaml: dropout 0, word embeddings frozen),
the one whose macro-F1 bench_finetune.py checks against Trainer's on the real corpus. Trainer's
own whole-run figure (train_samples_per_second, start-up included) is printed beside its timed
window; the ratios use the window, the stricter of the two.

Needs torch and transformers only (no pydantic, mlflow or kfp); from the repo root:

    PYTHONPATH=. python bench/gpu_train_check.py            # on the GPU machine (< 5 minutes)
    PYTHONPATH=. python bench/gpu_train_check.py --smoke    # anywhere: tiny model, few steps, CPU ok

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from components.core.device import attention_implementation, bf16_supported, pick_device, synchronize  # noqa: E402
from components.training.loop import LoopSettings, seed_everything, train_loop  # noqa: E402

MINILM_SHAPE = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                "intermediate_size": 1536}
TINY_SHAPE = {"vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 128}


def make_model(shape: dict, device, attn: str, shipped_recipe: bool = False):  # noqa: ANN001, ANN201
    """BERT of `shape`; shipped_recipe = finetune's defaults: no dropout, word embeddings frozen."""
    from transformers import BertConfig, BertForSequenceClassification

    seed_everything(0)
    dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0} if shipped_recipe else {}
    config = BertConfig(**shape, **dropout, max_position_embeddings=512, num_labels=3,
                        attn_implementation=attn)
    model = BertForSequenceClassification(config).to(device)
    if shipped_recipe:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def synthetic_batches(n: int, batch: int, seq: int, vocab: int, pin: bool) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        b = {"input_ids": torch.randint(1000, vocab, (batch, seq), generator=g),
             "attention_mask": torch.ones(batch, seq, dtype=torch.long),
             "token_type_ids": torch.zeros(batch, seq, dtype=torch.long),
             "labels": torch.randint(0, 3, (batch,), generator=g)}
        out.append({k: v.pin_memory() for k, v in b.items()} if pin else b)
    return out


def time_trainer(shape: dict, batches: list[dict], warmup: int, steps: int, device,  # noqa: ANN001
                 bf16: bool) -> tuple[float, float]:
    """Trainer with default settings except bf16=True (and no checkpoints, logging or reports):
    samples/s in the timed window, and Trainer's own whole-run train_samples_per_second."""
    import tempfile

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    rows = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["labels"]))]

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict:
            return rows[i]

    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            if state.global_step in (warmup, warmup + steps):
                synchronize(device)
                marks[state.global_step] = time.perf_counter()

    model = make_model(shape, device, attention_implementation(device))
    batch = len(batches[0]["labels"])
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=warmup + steps,
                                 bf16=bf16, save_strategy="no", report_to="none", disable_tqdm=True,
                                 logging_strategy="no", seed=0, use_cpu=device.type == "cpu")
        report = Trainer(model=model, args=args, train_dataset=Rows(), callbacks=[Clock()]).train()
    return steps * batch / (marks[warmup + steps] - marks[warmup]), report.metrics["train_samples_per_second"]


def time_loop(shape: dict, batches: list[dict], warmup: int, steps: int, device, bf16: bool,  # noqa: ANN001
              compile: bool, compile_mode: str | None = None, shipped_recipe: bool = False) -> float:
    """Our loop, as finetune() runs it; the clock is read at the loop's own log points, where it
    waits for the GPU to report the loss (the only host sync of the loop)."""
    import torch

    model = make_model(shape, device, attention_implementation(device), shipped_recipe)
    marks: dict[int, float] = {}

    def log(metrics: dict, step: int) -> None:
        marks[step] = time.perf_counter()

    def compute_loss(net, batch: dict):  # noqa: ANN001, ANN202
        logits = net(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])

    settings = LoopSettings(max_steps=warmup + steps, learning_rate=1e-4, warmup_ratio=0.06, bf16=bf16,
                            compile=compile, compile_mode=compile_mode, progress=False, desc="gpu-check",
                            log_every_steps=warmup if steps % warmup == 0 else 1)
    train_loop(model, lambda epoch: list(range(len(batches))), lambda i: batches[i], compute_loss, settings,
               device=device, log=log)
    batch = len(batches[0]["labels"])
    return steps * batch / (marks[warmup + steps] - marks[warmup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, few steps (CPU ok)")
    parser.add_argument("--steps", type=int, help="timed steps per contender (default 200; smoke 4)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 20; smoke 2)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile contenders")
    parser.add_argument("--compile-mode", default="reduce-overhead",
                        help="torch.compile mode of the compiled contenders (default reduce-overhead: "
                             "CUDA graphs; 'default' for plain inductor)")
    parser.add_argument("--compile-modes", nargs="*", default=[], metavar="MODE",
                        help="also time these modes on the same recipe (e.g. max-autotune)")
    args = parser.parse_args()

    import torch
    import transformers

    device = pick_device()
    if args.smoke:
        shape, batch, seq, warmup, steps = TINY_SHAPE, 8, 32, args.warmup or 2, args.steps or 4
    else:
        shape, batch, seq, warmup, steps = MINILM_SHAPE, 256, 128, args.warmup or 20, args.steps or 200
    steps = -(-steps // warmup) * warmup  # a multiple of warmup: the loop's log points fall on it
    bf16 = bf16_supported(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"bf16 {'yes' if bf16 else 'no'}; model {shape['num_hidden_layers']} layers x "
          f"{shape['hidden_size']}, batch {batch}, seq {seq}; {warmup} warm-up + {steps} timed steps each",
          flush=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (optimizer, loss) on tensor cores too
    n_batches = warmup + steps
    batches = synthetic_batches(min(n_batches, 16), batch, seq, shape["vocab_size"], device.type == "cuda")
    batches = [batches[i % len(batches)] for i in range(n_batches)]

    figures: dict = {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
                     "batch": batch, "seq": seq, "timed_steps": steps, "bf16": bf16}
    started = time.perf_counter()
    window, whole_run = time_trainer(shape, batches, warmup, steps, device, bf16)
    trainer = figures["trainer_samples_per_s"] = round(window, 1)
    figures["trainer_whole_run_samples_per_s"] = round(whole_run, 1)
    print(f"{'Trainer (bf16=True)':<44s} {trainer:10.1f} samples/s "
          f"(its own whole-run figure: {whole_run:.1f})", flush=True)

    mode = None if args.compile_mode == "default" else args.compile_mode
    # (key, label, compile, mode, shipped recipe)
    contenders = [("loop", "our loop, eager", False, None, False)]
    if not args.no_compile:
        contenders += [("compiled", f"our loop, compiled {args.compile_mode}", True, mode, False)]
        contenders += [(f"compiled_{m}", f"our loop, compiled {m}", True, m, False)
                       for m in args.compile_modes]
        contenders += [("compiled_shipped_recipe", f"our loop, compiled {args.compile_mode}, shipped recipe",
                        True, mode, True)]
    for key, label, compiled, compile_mode, shipped in contenders:
        rate = time_loop(shape, batches, warmup, steps, device, bf16, compiled, compile_mode, shipped)
        figures[f"{key}_samples_per_s"] = round(rate, 1)
        figures[f"{key}_ratio"] = round(rate / trainer, 3)
        print(f"{label:<44s} {rate:10.1f} samples/s  {rate / trainer:5.2f}x Trainer", flush=True)

    same = [figures[f"{key}_ratio"] for key, *_, shipped in contenders if not shipped]
    figures["best_same_recipe_ratio"] = max(same)
    figures["goal_met_same_recipe"] = bool(max(same) >= 2.5)
    if "compiled_shipped_recipe_ratio" in figures:
        figures["goal_met_shipped_recipe"] = bool(figures["compiled_shipped_recipe_ratio"] >= 2.5)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(f"best ratio vs Trainer's timed window, same recipe: {max(same):.2f}x"
          + (f"; shipped recipe: {figures['compiled_shipped_recipe_ratio']:.2f}x"
             if "compiled_shipped_recipe_ratio" in figures else "")
          + f" (goal >= 2.5x); {figures['seconds']:.0f}s in all")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

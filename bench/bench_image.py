"""Image task speed on the CPU: training images/s against the textbook PyTorch loop, and the ONNX
variants' inference against PyTorch, with quality beside each figure (issue 20's image rows).

Training: the ResNet of params.fashion-mnist.yaml (1.2M parameters, built from its config, random
init) on Fashion-MNIST (Debian's dataset-fashion-mnist), split by the image task's own code, batch
128, 1 epoch, seed 13, both in the same run:

- textbook loop: fp32, NCHW tensors, AdamW at the recipe's learning rate and weight decay, one
  `model(x) / loss.backward() / step()` per batch, as a PyTorch tutorial writes it;
- ours: finetune() with params.fashion-mnist.yaml's recipe (bf16 autocast, channels-last
  convolutions, the loop of every task; pass -S key=value to change it, e.g. -S finetune.compile=true).

Images/s is wall time of the training loop alone (decoding the images once, before, is left out of
both); quality is test accuracy and macro-F1. MFU: the model's forward and backward FLOPs (counted
by torch's FlopCounterMode on one batch) per second, as a share of this CPU's bf16 matrix-product
peak measured in the same run.

Export: ours exported as the pipeline's export step does (fp32, fused, int8, OpenVINO bf16 and
int8 where the CPU has them, the int8 variant calibrated on 300 training images), each timed at
batch 1 and 32 against PyTorch in the same process, with its test macro-F1.

    .venv/bin/python bench/bench_image.py [--train-rows N] [--epochs E] [-S finetune.key=value ...]

Needs `make image-data`. Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_finetune import OtherLoad, bf16_matmul_peak  # noqa: E402
from bench_onnx import timing_table, variant_macro_f1  # noqa: E402

from pipelines.env import apply_defaults  # noqa: E402

BATCH, SEED = 128, 13


def load_split(params: object, train_rows: int) -> dict:
    """Fashion-MNIST through the image task's read / clean / split; a stratified train subset if asked."""
    from sklearn.model_selection import train_test_split

    from components.core.splitting import split_by_key
    from components.tasks import get_task

    task = get_task(params)
    frame, _ = task.read(task.resolve_source("fashion-mnist"))
    cleaned, _ = task.clean(frame)
    splits = split_by_key(cleaned, task.group_keys(cleaned), params.ingest, "fashion-mnist")
    train = splits["train"]
    if 0 < train_rows < len(train):
        train, _ = train_test_split(train, train_size=train_rows, stratify=train["label"], random_state=SEED)
    return {"task": task, "train": train.reset_index(drop=True), "val": splits["val"], "test": splits["test"],
            "labels": sorted(cleaned["label"].unique())}


def quality(task: object, model: object, processor: object, data: dict, labels: list[str]) -> dict:
    from components.export_onnx.export import macro_f1

    test = data["test"]
    logits = task.predict_logits(model, processor, test["image"].tolist())
    accuracy = float(np.mean([labels[i] == t for i, t in zip(logits.argmax(1), test["label"], strict=True)]))
    return {"test_accuracy": accuracy, "test_macro_f1": macro_f1(logits, labels, test["label"].tolist())}


def run_textbook(data: dict, cfg: object, epochs: int) -> dict:
    """The plain loop: fp32, NCHW, AdamW, no schedule, no autocast."""
    import torch

    task, labels = data["task"], data["labels"]
    torch.manual_seed(SEED)
    processor, model = task.load_pretrained(cfg.base_model, labels)
    model = model.to(memory_format=torch.contiguous_format).train()
    pixels = task.prepare(processor, model, data["train"]["image"].tolist(), cfg).features
    index = {name: i for i, name in enumerate(labels)}
    targets = torch.tensor([index[v] for v in data["train"]["label"]])
    mean = torch.tensor(processor.mean)[None, :, None, None]
    std = torch.tensor(processor.std)[None, :, None, None]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(SEED)
    started = time.perf_counter()
    with OtherLoad() as load:
        for _ in range(epochs):
            for rows in torch.randperm(len(pixels), generator=generator).split(BATCH):
                x = (torch.from_numpy(pixels[rows.numpy()]).float() / 255.0 - mean) / std
                loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, targets[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    seconds = time.perf_counter() - started
    return {"images_per_s": len(pixels) * epochs / seconds, "train_seconds": seconds,
            "other_load": load.share, **quality(task, model.eval(), processor, data, labels)}


def run_ours(data: dict, cfg: object, out: Path) -> dict:
    from components.training.classifier import finetune

    task, train, val = data["task"], data["train"], data["val"]
    with OtherLoad() as load:
        result = finetune(train["image"].tolist(), train["label"].tolist(), val["image"].tolist(),
                          val["label"].tolist(), data["labels"], cfg, out, task=task)
    processor, model, labels = task.load_finetuned(out)
    return {"images_per_s": result.samples_per_second, "train_seconds": result.train_seconds,
            "other_load": load.share, **quality(task, model, processor, data, labels)}


def flops_per_image(data: dict, cfg: object) -> float:
    """Forward + backward FLOPs of one training batch, per image (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    task = data["task"]
    processor, model = task.load_pretrained(cfg.base_model, data["labels"])
    pixels = task.prepare(processor, model, data["train"]["image"].tolist()[:BATCH], cfg).features
    batch = task.collate(processor, pixels)
    counter = FlopCounterMode(display=False)
    with counter:
        model(**batch).logits.sum().backward()
    return counter.get_total_flops() / len(pixels)


def report(name: str, r: dict, mfu: float) -> None:
    other = "" if r["other_load"] is None else f"; other processes used {r['other_load']:.0%} of the CPUs"
    print(f"{name:16s} {r['images_per_s']:8.0f} images/s ({r['train_seconds']:.0f}s, MFU {mfu:.1%})  test "
          f"accuracy {r['test_accuracy']:.4f}, macro-F1 {r['test_macro_f1']:.4f}{other}", flush=True)


def export_figures(data: dict, model_dir: Path, work: Path, params: object, repeats: tuple[int, int]) -> dict:
    from components.export_onnx.export import build_variants, time_variants
    from components.serving.serving import open_classifier

    task, cfg = data["task"], params.export_onnx
    calibration_images = data["train"].sample(min(cfg.calibration_rows, len(data["train"])),
                                              random_state=0)["image"].tolist()
    task.write_serving(model_dir, work / "serve", "bench", "onnxruntime")

    def calibration(graph: Path) -> list:
        reader = open_classifier(work / "serve", model_file=graph, runtime="onnxruntime")
        return [reader.feeds([image]) for image in calibration_images]

    variants, _ = build_variants(model_dir, work / "export", cfg, task, calibration)
    print(f"variants built here: {', '.join(variants)}", flush=True)
    figures = timing_table(time_variants(variants, model_dir, task, repeats=repeats), unit="img")
    figures.update(variant_macro_f1(task, model_dir, work / "serve", variants, data["test"]["image"].tolist(),
                                    data["test"]["label"].tolist()))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=0, help="stratified train subset (default: all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, nargs=2, default=[100, 20], metavar=("B1", "B32"),
                        help="timed calls at batch 1 and 32 per export contender")
    parser.add_argument("--no-export", action="store_true", help="training figures only")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override our finetune settings, e.g. -S finetune.compile=true")
    args = parser.parse_args()
    apply_defaults(REPO)
    import torch

    from components.core.config import load_params

    params = load_params(REPO / "params.fashion-mnist.yaml", [
        f"finetune.batch_size={BATCH}", f"finetune.epochs={args.epochs}", f"finetune.seed={SEED}",
        "finetune.checkpoint_every_steps=0", *args.set])
    cfg = params.finetune
    data = load_split(params, args.train_rows)
    sizes = {k: len(data[k]) for k in ("train", "val", "test")}
    print(f"data: fashion-mnist, split by the image task; train {sizes['train']}, val {sizes['val']}, test "
          f"{sizes['test']}; {cfg.base_model}, batch {BATCH}, {args.epochs} epoch(s), "
          f"{torch.get_num_threads()} threads", flush=True)
    peak, per_image = bf16_matmul_peak(), flops_per_image(data, cfg)
    print(f"this CPU's bf16 matrix-product peak (measured): {peak / 1e9:.0f} GFLOP/s; training FLOPs per "
          f"image: {per_image / 1e6:.1f} MFLOP", flush=True)
    figures: dict = {"train_rows": sizes["train"], "test_rows": sizes["test"], "epochs": args.epochs,
                     "bf16_peak_gflops": round(peak / 1e9, 1),
                     "train_mflop_per_image": round(per_image / 1e6, 2),
                     "ours_overrides": args.set}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, run in (("textbook", lambda: run_textbook(data, cfg, args.epochs)),
                          ("ours", lambda: run_ours(data, cfg, work / "ours"))):
            r = run()
            mfu = r["images_per_s"] * per_image / peak
            report("textbook fp32" if name == "textbook" else "finetune() ours", r, mfu)
            figures.update({f"{name}_images_per_s": round(r["images_per_s"], 1), f"{name}_mfu": round(mfu, 4),
                            f"{name}_test_accuracy": round(r["test_accuracy"], 4),
                            f"{name}_test_macro_f1": round(r["test_macro_f1"], 4)})
        figures["ratio"] = round(figures["ours_images_per_s"] / figures["textbook_images_per_s"], 3)
        delta = figures["ours_test_macro_f1"] - figures["textbook_test_macro_f1"]
        print(f"training: ours {figures['ratio']:.2f}x the textbook loop; macro-F1 ours - textbook = "
              f"{delta:+.4f}", flush=True)
        if not args.no_export:
            figures.update(export_figures(data, work / "ours", work, params, tuple(args.repeats)))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

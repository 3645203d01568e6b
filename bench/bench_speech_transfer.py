"""Transfer learning for speech: what wav2vec 2.0 pretraining on unlabelled audio is worth when
fine-tuning keyword spotting, at small label budgets, against the same network from scratch.

The main job's data and settings (params.speech.yaml): the generated keyword set (espeak-ng and
flite voices, whole voices held out for test), split as the pipeline splits it. Pretraining runs
once, as the pretrain step does (the training clips without labels plus real ktuberling / klettres
recordings), unless --pretrained names a checkpoint it made. Then, per budget (labelled training
clips per class, drawn stratified and seeded), finetune() runs from the pretrained checkpoint and
from scratch with the same steps, seed and settings (--seeds N repeats that with N label draws and
training seeds, and reports the mean), and MFCC statistics + logistic regression
(the evaluate step's baseline) is fit on the same clips. The figure is test accuracy on unseen
voices. An out-of-distribution check goes with the largest budget: real human speech (300 of the
ktuberling / klettres recordings: words, letters and syllables in 20-odd languages, none of them a
keyword) through each model; the share it calls a keyword is its false-alarm rate on real speech.
Ends with one JSON line: {"budgets": {n: {"scratch": acc, "pretrained": acc, "mfcc": acc}},
"false_alarms": {...}, "ratio": pretrained / scratch accuracy at the smallest budget, ...}.

    PYTHONPATH=. python bench/bench_speech_transfer.py [--budgets 10,30,all] [--seeds 3] [--pretrained DIR]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="10,30,all", help="labelled training clips per class")
    parser.add_argument("--pretrained", default="", help="a checkpoint the pretrain step made "
                        "(skips pretraining)")
    parser.add_argument("--min-steps", type=int, default=300, help="optimizer steps of a run at least")
    parser.add_argument("--seeds", type=int, default=1, help="runs per budget (label draw and training seed)")
    parser.add_argument("--set", action="append", default=[], help="params overrides (section.key=value)")
    args = parser.parse_args()

    from components.core.config import load_params
    from components.tasks import get_task

    start = time.perf_counter()
    params = load_params(REPO / "params.speech.yaml", args.set)
    task = get_task(params)
    frame, _ = task.read(task.resolve_source(params.data.source))
    cleaned, _ = task.clean(frame)
    splits = task.split(cleaned, params.ingest, params.data.source)
    work = Path(tempfile.mkdtemp(prefix="bench_speech_"))
    pretrained = args.pretrained
    pretrain_figures = {}
    if not pretrained:
        result = task.pretrain(splits, params, work / "pretrained")
        pretrained = str(work / "pretrained")
        pretrain_figures = {"heldout_contrastive_before": round(result.heldout_contrastive_before, 3),
                            "heldout_contrastive": round(result.heldout_contrastive, 3),
                            "pretrain_seconds": round(result.train_seconds, 1)}
        print(f"pretrained in {result.train_seconds:.0f}s: held-out contrastive loss "
              f"{result.heldout_contrastive_before:.3f} -> {result.heldout_contrastive:.3f}", flush=True)
    train, test = splits["train"], splits["test"]
    figures: dict[str, dict[str, object]] = {}
    false_alarms: dict[str, float] = {}  # of the last (largest) budget's models, first seed
    for budget in args.budgets.split(","):
        runs: dict[str, list[float]] = {"scratch": [], "pretrained": [], "mfcc": []}
        for seed in range(params.finetune.seed, params.finetune.seed + args.seeds):
            rows = pick(train, budget, seed)
            for name, base in (("scratch", params.finetune.base_model), ("pretrained", pretrained)):
                accuracy, alarms = finetune_and_score(task, params, rows, splits["val"], test, base, work,
                                                      args.min_steps, seed)
                runs[name].append(accuracy)
                if seed == params.finetune.seed:
                    false_alarms[name] = alarms
            mfcc = task.baselines(rows[task.input_column].tolist(), rows["label"].tolist(),
                                  test[task.input_column].tolist(), seed=seed)["mfcc_logreg"]
            runs["mfcc"].append(round(float(np.mean(np.array(mfcc) == test["label"].to_numpy())), 4))
        figures[budget] = {"clips": len(rows), **{k: round(float(np.mean(v)), 4) for k, v in runs.items()},
                           "runs": runs}
        mean = figures[budget]
        print(f"budget {budget:>4} per class ({len(rows)} clips), mean of {args.seeds} seed(s): scratch "
              f"{mean['scratch']:.3f} {runs['scratch']}, pretrained {mean['pretrained']:.3f} "
              f"{runs['pretrained']}, MFCC + logistic regression {figures[budget]['mfcc']:.3f}", flush=True)
    smallest = args.budgets.split(",")[0]
    ratio = figures[smallest]["pretrained"] / max(figures[smallest]["scratch"], 1e-9)
    print(f"real speech called a keyword (false alarms, {args.budgets.split(',')[-1]} labels): "
          + ", ".join(f"{k} {v:.1%}" for k, v in false_alarms.items()), flush=True)
    print(json.dumps({"budgets": figures, "false_alarms": false_alarms, **pretrain_figures,
                      "test_clips": len(test), "seeds": args.seeds,
                      "ratio": round(ratio, 3), "seconds": round(time.perf_counter() - start, 1)}))


def pick(train, budget: str, seed: int):  # noqa: ANN001, ANN201 - pandas frames
    """`budget` training clips of each class (all: every clip), drawn with a fixed seed."""
    if budget == "all":
        return train
    rng = np.random.default_rng(seed)
    keep = [i for _, rows in train.groupby("label") for i in rng.permutation(rows.index)[: int(budget)]]
    return train.loc[sorted(keep)]


def finetune_and_score(task, params, rows, val, test, base: str, work: Path,  # noqa: ANN001
                       min_steps: int, seed: int) -> tuple[float, float]:
    """Test accuracy of finetune() from `base` on these rows (at least min_steps optimizer steps), and
    the share of real non-keyword recordings it calls a keyword."""
    from components.tasks.audio_synth import SILENCE, UNKNOWN, real_recordings
    from components.training.classifier import finetune

    labels = sorted(params.validate_data.labels or test["label"].unique())
    per_epoch = -(-len(rows) // params.finetune.batch_size)
    epochs = max(params.finetune.epochs, -(-min_steps // per_epoch))
    cfg = params.finetune.model_copy(update={"base_model": base, "epochs": epochs, "seed": seed,
                                             "checkpoint_every_steps": 0})
    out = work / f"model-{len(rows)}-{seed}-{Path(base).name}"
    column = task.input_column
    finetune(rows[column].tolist(), rows["label"].tolist(), val[column].tolist(), val["label"].tolist(),
             labels, cfg, out, task=task)
    processor, model, names = task.load_finetuned(out)
    predicted = task.predict_logits(model, processor, test[column].tolist()).argmax(axis=1)
    accuracy = round(float(np.mean(np.array(names)[predicted] == test["label"].to_numpy())), 4)
    real = [str(p) for p in real_recordings(300)]
    heard = np.array(names)[task.predict_logits(model, processor, real).argmax(axis=1)] if real else []
    return accuracy, round(float(np.mean([h not in (UNKNOWN, SILENCE) for h in heard])) if real else -1.0, 4)


if __name__ == "__main__":
    main()

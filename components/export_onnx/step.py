"""The export_onnx step as the pipeline runs it: export, parity on the test split, smoke check."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from components.core.config import Params
from components.core.task import TextClassificationTask
from components.core.tracking import RunContext, note, step_run
from components.export_onnx.export import Parity, check_parity, export_onnx, serving_smoke_check
from components.ingest.ingest import TEXT, read_splits


def run(data_dir: Path, model_dir: Path, onnx_dir: Path, params: Params, ctx: RunContext) -> Parity:
    cfg, max_length = params.export_onnx, params.finetune.max_length
    test_texts = read_splits(data_dir)["test"][TEXT].tolist()
    with step_run(ctx, "export_onnx") as track:
        export_onnx(model_dir, onnx_dir, cfg.opset, max_length)
        parity = check_parity(model_dir, onnx_dir, test_texts, cfg, max_length)
        smoke = serving_smoke_check(onnx_dir, list(TextClassificationTask.canary_inputs))
        parity.passed = parity.passed and bool(smoke["passed"])
        track.params({"opset": cfg.opset})
        track.metrics({"parity_max_abs_logit_diff": parity.max_abs_logit_diff,
                       "parity_argmax_agreement": parity.argmax_agreement,
                       "parity_passed": float(parity.passed),
                       "smoke_passed": float(bool(smoke["passed"]))}, parent=True)
        note(f"export_onnx: max |logit diff| {parity.max_abs_logit_diff:.2e}, argmax agreement "
             f"{parity.argmax_agreement:.4f}, smoke check {'ok' if smoke['passed'] else 'FAILED'}")
        track.json({"parity": asdict(parity), "smoke": smoke}, "export_checks.json")
    return parity

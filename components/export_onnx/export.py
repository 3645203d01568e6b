"""export_onnx: export to ONNX with dynamic axes, check the graph, prove parity with PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.core.config import ExportConfig
from components.core.task import TextClassificationTask
from components.export_onnx.serving import MODEL_FILE, SERVING_FILE, OnnxTextClassifier


def export_onnx(
    model_dir: Path, out_dir: Path, opset: int, max_length: int,
    task: TextClassificationTask | None = None,
) -> Path:
    """Write model.onnx (dynamic batch and sequence axes), tokenizer and serving.json to out_dir."""
    import onnx
    import torch

    task = task or TextClassificationTask()
    tokenizer, model, labels = task.load_finetuned(model_dir)
    model.eval()
    example = task.collate(tokenizer, task.encode(tokenizer, ["hello world", "a longer example"], 16))
    names = list(task.onnx_input_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_FILE
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            model, tuple(example[n] for n in names), str(path), input_names=names,
            output_names=["logits"], dynamic_axes=dynamic, opset_version=opset, dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / SERVING_FILE).write_text(json.dumps(
        {"labels": labels, "max_length": max_length, "pad_token_id": tokenizer.pad_token_id}))
    return path


@dataclass
class Parity:
    rows: int
    max_abs_logit_diff: float
    argmax_agreement: float
    passed: bool


def check_parity(
    model_dir: Path, onnx_dir: Path, texts: list[str], cfg: ExportConfig, max_length: int,
    task: TextClassificationTask | None = None,
) -> Parity:
    """Compare fp32 PyTorch logits with onnxruntime logits on the same texts."""
    task = task or TextClassificationTask()
    if cfg.parity_max_rows:
        texts = texts[: cfg.parity_max_rows]
    tokenizer, model, _ = task.load_finetuned(model_dir)
    reference = task.predict_logits(model, tokenizer, texts, max_length, bf16=False)
    exported = OnnxTextClassifier(onnx_dir).logits(texts)
    diff = float(np.abs(reference - exported).max())
    agreement = float((reference.argmax(1) == exported.argmax(1)).mean())
    passed = diff <= cfg.max_abs_logit_diff and agreement >= cfg.min_argmax_agreement
    return Parity(len(texts), diff, agreement, passed)


_SMOKE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from serving import OnnxTextClassifier
model = OnnxTextClassifier(sys.argv[2])
texts = json.loads(sys.argv[3])
logits = model.logits(texts)
print(json.dumps({"shape": list(logits.shape), "labels": model.predict(texts),
                  "torch_loaded": "torch" in sys.modules}))
"""


def serving_smoke_check(onnx_dir: Path, canaries: list[str]) -> dict:
    """Load the artifact in a fresh process with onnxruntime alone; run canary texts."""
    serving_dir = str(Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", _SMOKE, serving_dir, str(onnx_dir), json.dumps(canaries)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        return {"passed": False, "error": proc.stderr.strip().splitlines()[-1:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    labels = json.loads((onnx_dir / SERVING_FILE).read_text())["labels"]
    out["passed"] = (
        out["shape"] == [len(canaries), len(labels)]
        and all(label in labels for label in out["labels"])
        and not out["torch_loaded"]
    )
    return out

"""export_onnx: export to ONNX with dynamic axes, check the graph, prove parity with PyTorch,
and pick the fastest variant that keeps the model's quality.

Variants: `fp32` (the plain export), `optimized` (onnxruntime's transformer optimizer fuses
attention, LayerNorm and GELU) and `int8` (dynamic int8 quantization of the optimized graph).
The fp32 graph must match PyTorch's logits (parity); int8 is shipped only if its macro-F1 on the
test split is within a set loss of PyTorch's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.core.config import ExportConfig
from components.core.task import TextClassificationTask
from components.export_onnx.serving import MODEL_FILE, SERVING_FILE, OnnxTextClassifier


def export_fp32(model_dir: Path, path: Path, opset: int, task: TextClassificationTask | None = None) -> Path:
    """The plain ONNX export (dynamic batch and sequence axes), checked with onnx.checker."""
    import onnx
    import torch
    from transformers import AutoModelForSequenceClassification

    task = task or TextClassificationTask()
    # Eager attention exports as plain MatMul/Softmax, the pattern onnxruntime's optimizer fuses.
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), attn_implementation="eager")
    model.eval()
    tokenizer = task.load_tokenizer(str(model_dir))
    example = task.collate(tokenizer, task.encode(tokenizer, ["hello world", "a longer example"], 16))
    names = list(task.onnx_input_names)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic["logits"] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model, tuple(example[n] for n in names), str(path), input_names=names,
            output_names=["logits"], dynamic_axes=dynamic, opset_version=opset, dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    return path


def optimize_graph(src: Path, dst: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """onnxruntime's transformer optimizer; returns how many of each fused operator it made."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    optimized.save_model_to_file(str(dst))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization of the weights (activations quantized at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused operators come from another domain; tell the quantizer their outputs are float.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return dst


def write_serving_files(model_dir: Path, out_dir: Path, max_length: int, variant: str,
                        task: TextClassificationTask | None = None) -> None:
    """Tokenizer, label map and serving.json next to model.onnx: the artifact stands alone."""
    task = task or TextClassificationTask()
    tokenizer = task.load_tokenizer(str(model_dir))
    labels = json.loads((model_dir / "labels.json").read_text())["labels"]
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / SERVING_FILE).write_text(json.dumps(
        {"labels": labels, "max_length": max_length, "pad_token_id": tokenizer.pad_token_id,
         "variant": variant}))


@dataclass
class Parity:
    rows: int
    max_abs_logit_diff: float
    argmax_agreement: float
    passed: bool


def parity(reference: np.ndarray, exported: np.ndarray, cfg: ExportConfig) -> Parity:
    diff = float(np.abs(reference - exported).max())
    agreement = float((reference.argmax(1) == exported.argmax(1)).mean())
    passed = diff <= cfg.max_abs_logit_diff and agreement >= cfg.min_argmax_agreement
    return Parity(len(reference), diff, agreement, passed)


def macro_f1(logits: np.ndarray, labels: list[str], truth: list[str]) -> float:
    from sklearn.metrics import f1_score

    predicted = [labels[i] for i in logits.argmax(axis=1)]
    return float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0))


@dataclass
class ExportResult:
    shipped: str                       # the variant copied to model.onnx
    parity: Parity                     # of the fp32-precision graph that int8 was made from
    fused: dict[str, int] = field(default_factory=dict)
    macro_f1: dict[str, float] = field(default_factory=dict)   # torch and each ONNX variant
    int8_f1_loss: float | None = None
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    smoke: dict = field(default_factory=dict)


def select_variant(result: ExportResult, cfg: ExportConfig) -> str:
    """int8 if it was made and lost at most max_quantized_f1_loss, else the fp32-precision graph."""
    base = "optimized" if "optimized" in result.macro_f1 else "fp32"
    if result.int8_f1_loss is not None and result.int8_f1_loss <= cfg.max_quantized_f1_loss:
        return "int8"
    return base


def time_variants(paths: dict[str, Path], model_dir: Path, seq: int = 128, threads: int = 0,
                  repeats: tuple[int, int] = (10, 3)) -> dict[str, dict[str, float]]:
    """Latency at batch 1 and throughput at batch 32 (fixed-length rows of `seq` tokens), next to
    PyTorch eager fp32 and bf16 autocast measured in the same process."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    def clock(fn, repeats: int) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats

    rng = np.random.default_rng(0)
    feeds = {}
    for batch in (1, 32):
        ids = rng.integers(1000, 20000, (batch, seq)).astype(np.int64)
        feeds[batch] = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                        "token_type_ids": np.zeros_like(ids)}
    out: dict[str, dict[str, float]] = {}
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    for name, bf16 in (("torch_fp32", False), ("torch_bf16", True)):
        times = {}
        for batch, n in zip((1, 32), repeats, strict=True):
            tensors = {k: torch.from_numpy(v) for k, v in feeds[batch].items()}
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                times[batch] = clock(lambda t=tensors: model(**t), n)
        out[name] = {"b1_ms": times[1] * 1000, "b32_seq_per_s": 32 / times[32]}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        wanted = [i.name for i in session.get_inputs()]
        one, many = ({k: feeds[b][k] for k in wanted} for b in (1, 32))
        b1 = clock(lambda s=session, f=one: s.run(None, f), repeats[0])
        b32 = clock(lambda s=session, f=many: s.run(None, f), repeats[1])
        out[f"onnx_{name}"] = {"b1_ms": b1 * 1000, "b32_seq_per_s": 32 / b32}
    return out


def build_variants(model_dir: Path, work: Path, cfg: ExportConfig) -> tuple[dict[str, Path], dict[str, int]]:
    """Export fp32, then (per params) the optimized and int8 graphs; returns their paths."""
    from transformers import AutoConfig

    paths = {"fp32": export_fp32(model_dir, work / "fp32.onnx", cfg.opset)}
    fused: dict[str, int] = {}
    base = paths["fp32"]
    if cfg.optimize:
        config = AutoConfig.from_pretrained(str(model_dir))
        fused = optimize_graph(base, work / "optimized.onnx", config.num_attention_heads, config.hidden_size)
        paths["optimized"] = base = work / "optimized.onnx"
    if cfg.quantize:
        paths["int8"] = quantize_int8(base, work / "int8.onnx")
    return paths, fused


def export_and_check(
    model_dir: Path, out_dir: Path, work: Path, test_texts: list[str], test_labels: list[str],
    cfg: ExportConfig, max_length: int, task: TextClassificationTask | None = None,
) -> ExportResult:
    """Build the variants, check parity and the int8 gate, ship the chosen one as out_dir/model.onnx."""
    task = task or TextClassificationTask()
    texts, truth = test_texts, test_labels
    if cfg.parity_max_rows:
        texts, truth = texts[: cfg.parity_max_rows], truth[: cfg.parity_max_rows]
    paths, fused = build_variants(model_dir, work, cfg)
    write_serving_files(model_dir, out_dir, max_length, "pending", task)

    tokenizer, model, labels = task.load_finetuned(model_dir)
    reference = task.predict_logits(model, tokenizer, texts, max_length, bf16=False)
    logits = {name: OnnxTextClassifier(out_dir, model_file=path).logits(texts)
              for name, path in paths.items()}
    base = "optimized" if "optimized" in paths else "fp32"
    result = ExportResult(shipped=base, parity=parity(reference, logits[base], cfg), fused=fused)
    result.macro_f1 = {"torch": macro_f1(reference, labels, truth),
                       **{name: macro_f1(lg, labels, truth) for name, lg in logits.items()}}
    if "int8" in logits:
        result.int8_f1_loss = result.macro_f1["torch"] - result.macro_f1["int8"]
    result.shipped = select_variant(result, cfg)
    shutil.copyfile(paths[result.shipped], out_dir / MODEL_FILE)
    write_serving_files(model_dir, out_dir, max_length, result.shipped, task)
    result.smoke = serving_smoke_check(out_dir, list(task.canary_inputs))
    if cfg.benchmark:
        result.timings = time_variants(paths, model_dir)
    return result


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

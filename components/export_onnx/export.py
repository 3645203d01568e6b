"""export_onnx: export to ONNX with dynamic axes, check the graph, prove parity with PyTorch,
and pick the fastest variant that keeps the model's quality.

Variants (an ONNX file and the runtime that runs it):
- `fp32`: the plain export (the task's), on onnxruntime's CPU provider.
- `optimized`: the task's graph optimizer (text: onnxruntime's transformer optimizer fuses
  attention, LayerNorm and GELU; tasks without one skip this variant).
- `int8`: dynamic int8 quantization of the optimized graph.
- `openvino_bf16`: the plain fp32 graph run by OpenVINO in bf16 on CPUs with AMX / AVX512-BF16
  (built only where both exist).
- `openvino_int8`: the plain fp32 graph quantized to int8 by NNCF's post-training quantization,
  calibrated on training inputs, run by OpenVINO on CPUs with int8 dot-product units (AMX-INT8,
  VNNI; built only where they and OpenVINO exist).
The fp32-precision graph a variant comes from must match PyTorch's logits (parity); a
reduced-precision variant (int8, bf16) ships only if its macro-F1 on the test split is within a
set loss of PyTorch's. The first variant in `ship_preference` that passes is shipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.core import metrics
from components.core.config import ExportConfig
from components.core.tracking import note
from components.serving.serving import (
    CANARIES_FILE,
    MODEL_FILE,
    ONNXRUNTIME_CPU,
    OPENVINO_BF16,
    OPENVINO_INT8,
    SERVING_FILE,
    Session,
    encode_canaries,
    open_classifier,
    openvino_bf16_available,
    openvino_int8_available,
)
from components.tasks.base import Task

REDUCED_PRECISION = ("int8", "openvino_bf16", "openvino_int8")


@dataclass(frozen=True)
class Variant:
    path: Path           # the ONNX file
    runtime: str = "onnxruntime"  # see serving.RUNTIMES
    source: str = ""     # the fp32-precision variant it was made from ("" = itself)


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization of the weights (activations quantized at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused operators come from another domain; tell the quantizer their outputs are float.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return dst


def quantize_static_int8(src: Path, dst: Path, calibration: list[dict[str, np.ndarray]],
                         transformer: bool = True) -> Path:
    """Post-training int8 quantization with NNCF: activation ranges from the calibration feeds,
    written as an ONNX graph with QuantizeLinear / DequantizeLinear pairs (OpenVINO runs them as
    int8 kernels; onnxruntime can run the same file)."""
    import logging

    import nncf
    import onnx

    logging.getLogger("nncf").setLevel(logging.WARNING)  # its progress bars would flood the step log
    model_type = nncf.ModelType.TRANSFORMER if transformer else None
    quantized = nncf.quantize(onnx.load(str(src)), nncf.Dataset(calibration), model_type=model_type,
                              subset_size=len(calibration))
    onnx.save(quantized, str(dst))
    return dst


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
    """The macro-F1 of these logits' predictions: evaluate's definition (core/metrics.py)."""
    return metrics.macro_f1(truth, [labels[i] for i in logits.argmax(axis=1)], labels)


@dataclass
class ExportResult:
    shipped: str                       # the variant copied to model.onnx
    parity: Parity                     # of the fp32-precision graph the shipped variant comes from
    runtime: str = "onnxruntime"       # the runtime the shipped variant was gated on
    fused: dict[str, int] = field(default_factory=dict)
    macro_f1: dict[str, float] = field(default_factory=dict)   # torch and each ONNX variant
    f1_loss: dict[str, float] = field(default_factory=dict)    # each reduced-precision variant
    agreement: dict[str, float] = field(default_factory=dict)  # argmax agreement with PyTorch, each variant
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    smoke: dict = field(default_factory=dict)
    champion_floor: float | None = None  # macro-F1 a reduced-precision variant had to reach


def select_variant(built: list[str], f1_loss: dict[str, float], cfg: ExportConfig,
                   macro_f1: dict[str, float] | None = None, f1_floor: float | None = None) -> str:
    """The first variant of cfg.ship_preference that was built and, if it computes at reduced
    precision, lost at most max_quantized_f1_loss macro-F1 and, given f1_floor (what evaluate's
    champion rule asked of the model), still scores at least that; else the optimized graph if
    built, else fp32 (the fp32-precision graphs compute what evaluate blessed)."""
    for name in cfg.ship_preference:
        if name not in built:
            continue
        if name in REDUCED_PRECISION:
            if not f1_loss.get(name, float("inf")) <= cfg.max_quantized_f1_loss:
                continue
            if f1_floor is not None and not (macro_f1 or {}).get(name, -1.0) >= f1_floor:
                continue
        return name
    return "optimized" if "optimized" in built else "fp32"


def time_variants(variants: dict[str, Variant], model_dir: Path, task: Task, threads: int = 0,
                  repeats: tuple[int, int] = (10, 3)) -> dict[str, dict[str, float]]:
    """Latency at batch 1 and throughput at batch 32 (the task's fixed inputs: text rows of 128
    tokens), next to PyTorch eager fp32 and bf16 autocast measured in the same process. threads=0:
    each runtime's default, except under a container CPU limit (a pod's), which every contender
    then gets."""
    import torch

    from components.core.device import container_cpu_limit

    threads = threads or container_cpu_limit() or 0
    torch_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _time_variants(variants, model_dir, task, threads, repeats)
    finally:
        torch.set_num_threads(torch_threads)


def _time_variants(variants: dict[str, Variant], model_dir: Path, task: Task, threads: int,
                   repeats: tuple[int, int]) -> dict[str, dict[str, float]]:
    import torch

    def clock(fn, repeats: int) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats

    feeds = {batch: task.timing_feeds(model_dir, batch) for batch in (1, 32)}
    out: dict[str, dict[str, float]] = {}
    model = task.load_finetuned(model_dir)[1].eval()
    total = 2 + len(variants)
    for done, (name, bf16) in enumerate((("torch_fp32", False), ("torch_bf16", True))):
        note(f"export_onnx: timing {name} ({done + 1}/{total})")
        times = {}
        for batch, n in zip((1, 32), repeats, strict=True):
            tensors = {k: torch.from_numpy(v) for k, v in feeds[batch].items()}
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                times[batch] = clock(lambda t=tensors: model(**t), n)
        out[name] = {"b1_ms": times[1] * 1000, "b32_seq_per_s": 32 / times[32]}
    for done, (name, variant) in enumerate(variants.items(), start=3):
        note(f"export_onnx: timing onnx_{name} ({done}/{total})")
        session = Session(variant.path, variant.runtime, threads)
        one, many = ({k: feeds[b][k] for k in session.input_names} for b in (1, 32))
        b1 = clock(lambda s=session, f=one: s.run(f), repeats[0])
        b32 = clock(lambda s=session, f=many: s.run(f), repeats[1])
        out[f"onnx_{name}"] = {"b1_ms": b1 * 1000, "b32_seq_per_s": 32 / b32}
    return out


def build_variants(model_dir: Path, work: Path, cfg: ExportConfig, task: Task,
                   calibration: Callable[[Path], list[dict[str, np.ndarray]]] | None = None,
                   ) -> tuple[dict[str, Variant], dict[str, int]]:
    """Export fp32, then (per params, the task and this machine) the other variants.
    calibration(fp32 graph): feeds of training inputs, for the int8 variant's activation ranges."""
    fp32 = task.export_onnx(model_dir, work / "fp32.onnx", cfg.opset)
    variants = {"fp32": Variant(fp32)}
    fused: dict[str, int] = {}
    base = "fp32"
    if cfg.optimize and (found := task.optimize_graph(fp32, work / "optimized.onnx", model_dir)) is not None:
        fused = found
        variants["optimized"] = Variant(work / "optimized.onnx")
        base = "optimized"
    if cfg.quantize:
        variants["int8"] = Variant(quantize_int8(variants[base].path, work / "int8.onnx"), source=base)
    if cfg.openvino_bf16 and openvino_bf16_available():
        variants["openvino_bf16"] = Variant(fp32, runtime="openvino_bf16", source="fp32")
    if cfg.openvino_int8 and calibration and openvino_int8_available():
        feeds = calibration(fp32)
        note(f"export_onnx: int8 calibration on {len(feeds)} training inputs (NNCF)")
        path = quantize_static_int8(fp32, work / "openvino_int8.onnx", feeds, task.transformer_graph)
        variants["openvino_int8"] = Variant(path, runtime="openvino_int8", source="fp32")
    return variants, fused


def export_and_check(
    model_dir: Path, out_dir: Path, work: Path, test_inputs: list, test_labels: list[str],
    cfg: ExportConfig, task: Task, champion_floor: float | None = None,
    calibration_inputs: list | None = None,
) -> ExportResult:
    """Build the variants, check parity and the reduced-precision gate, ship the chosen one as
    out_dir/model.onnx (with its runtime in serving.json). champion_floor: the macro-F1 on these
    test inputs that evaluate's champion rule asked of the model; a reduced-precision variant
    below it does not ship, so the shipped artifact beats the champion as the model did.
    calibration_inputs: training inputs (texts, files) the int8 variant is calibrated on."""
    inputs, truth = test_inputs, test_labels
    if cfg.parity_max_rows and cfg.parity_max_rows < len(inputs):
        inputs, truth = inputs[: cfg.parity_max_rows], truth[: cfg.parity_max_rows]
        champion_floor = None  # F1 on part of the split is not comparable with the champion's
    task.write_serving(model_dir, out_dir, "pending", "onnxruntime")

    def calibration(graph: Path) -> list[dict[str, np.ndarray]]:
        reader = open_classifier(out_dir, model_file=graph, runtime="onnxruntime")
        return [reader.feeds([item]) for item in calibration_inputs or []]

    variants, fused = build_variants(model_dir, work, cfg, task, calibration if calibration_inputs else None)

    processor, model, labels = task.load_finetuned(model_dir)
    reference = task.predict_logits(model, processor, inputs, bf16=False)
    logits = {name: open_classifier(out_dir, model_file=v.path, runtime=v.runtime).logits(inputs)
              for name, v in variants.items()}
    macro = {"torch": macro_f1(reference, labels, truth),
             **{name: macro_f1(lg, labels, truth) for name, lg in logits.items()}}
    f1_loss = {name: macro["torch"] - macro[name] for name in REDUCED_PRECISION if name in logits}
    shipped = select_variant(list(variants), f1_loss, cfg, macro, champion_floor)
    chosen = variants[shipped]
    source = chosen.source or shipped
    agreement = {name: float((reference.argmax(1) == lg.argmax(1)).mean()) for name, lg in logits.items()}
    result = ExportResult(shipped=shipped, parity=parity(reference, logits[source], cfg),
                          runtime=chosen.runtime, fused=fused, macro_f1=macro, f1_loss=f1_loss,
                          agreement=agreement, champion_floor=champion_floor)
    shutil.copyfile(chosen.path, out_dir / MODEL_FILE)
    task.write_serving(model_dir, out_dir, shipped, chosen.runtime)
    result.smoke = check_and_record_canaries(out_dir, task.canaries(work))
    if cfg.benchmark:
        result.timings = time_variants(variants, model_dir, task)
    return result


_SMOKE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from serving import open_classifier
model = open_classifier(sys.argv[2])
inputs = json.loads(sys.argv[3])
logits = model.logits(inputs)
# The fallback where the shipped runtime is missing: the same file on onnxruntime.
fallback = open_classifier(sys.argv[2], runtime="onnxruntime")
print(json.dumps({"shape": list(logits.shape), "labels": model.predict(inputs),
                  "backend": model.session.backend, "fallback_labels": fallback.predict(inputs),
                  "torch_loaded": "torch" in sys.modules}))
"""


def serving_smoke_check(onnx_dir: Path, canaries: list) -> dict:
    """Load the artifact in a fresh process with its runtime alone (no torch), the one
    serving.json names, and with onnxruntime (the fallback); run the task's canary inputs (texts,
    image files) on both."""
    import components.serving.serving as serving

    serving_dir = str(Path(serving.__file__).parent)  # the module alone, as the registry ships it
    proc = subprocess.run(
        [sys.executable, "-c", _SMOKE, serving_dir, str(onnx_dir), json.dumps(canaries)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        return {"passed": False, "error": proc.stderr.strip().splitlines()[-1:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    config = json.loads((onnx_dir / SERVING_FILE).read_text())
    labels = config["labels"]
    wanted = {"openvino_bf16": OPENVINO_BF16, "openvino_int8": OPENVINO_INT8}.get(config.get("runtime"),
                                                                                  ONNXRUNTIME_CPU)
    out["passed"] = (
        out["shape"] == [len(canaries), len(labels)]
        and out["backend"] == wanted
        and all(label in labels for label in out["labels"] + out["fallback_labels"])
        and len(out["fallback_labels"]) == len(canaries)
        and not out["torch_loaded"]
    )
    return out


def export_untrained(task: Task, base_model: str, labels: list[str], out_dir: Path, work: Path,
                     optimize: bool = True, seed: int = 0, max_length: int = 128) -> Path:
    """A servable artifact of `base_model` with a fresh (untrained) head, as export would ship its
    fp32 (or optimized) variant: for benchmarks and tests of serving, which need real graphs and
    real preprocessing but no trained weights. Returns out_dir."""
    import torch

    torch.manual_seed(seed)
    model_dir = work / "model"
    processor, model = task.load_pretrained(base_model, labels)
    if getattr(processor, "max_length", None) == 0:  # text: the length finetune would pick from data
        processor.max_length = max_length
    task.save(processor, model, model_dir, labels)
    graph = task.export_onnx(model_dir, work / "fp32.onnx", ExportConfig().opset)
    if optimize and task.optimize_graph(graph, work / "optimized.onnx", model_dir) is not None:
        graph = work / "optimized.onnx"
    variant = "optimized" if graph.name == "optimized.onnx" else "fp32"
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(graph, out_dir / MODEL_FILE)
    task.write_serving(model_dir, out_dir, variant, "onnxruntime")
    smoke = check_and_record_canaries(out_dir, task.canaries(work))
    if not smoke["passed"]:
        raise RuntimeError(f"the artifact of {base_model} failed its smoke check: {smoke}")
    return out_dir


def check_and_record_canaries(out_dir: Path, canaries: list) -> dict:
    """The serving smoke check; when it passes, the canaries and the labels they got are kept in
    the artifact (canaries.json), for a server to re-ask before it serves this version."""
    smoke = serving_smoke_check(out_dir, canaries)
    if smoke["passed"]:
        (out_dir / CANARIES_FILE).write_text(json.dumps(
            {"inputs": encode_canaries(canaries), "labels": smoke["labels"],
             "fallback_labels": smoke["fallback_labels"]}))
    return smoke

"""Serve an exported model with a runtime and its preprocessor only (no torch, no transformers):
tokenizers for text, Pillow + numpy for images, soundfile + scipy for audio. `open_classifier`
reads serving.json's task.

Self-contained on purpose: it is shipped next to the ONNX file in the registry, and the serving
smoke check loads it in a fresh process to prove the artifact stands on its own.

`serving.json` names the runtime the artifact was measured and gated with:
- `onnxruntime`: onnxruntime's CPU execution provider, at the graph's own precision.
- `openvino_bf16`: the same ONNX file run by OpenVINO computing in bf16 on the CPU's AMX /
  AVX512-BF16 units. Where OpenVINO is not installed, or the CPU has no bf16, the fp32 graph
  runs on onnxruntime instead: slower, never a different model.
- `openvino_int8`: an ONNX file quantized to int8 (QuantizeLinear / DequantizeLinear pairs, by
  NNCF) run by OpenVINO with int8 matrix products on the CPU's AMX-INT8 or VNNI units. Where
  OpenVINO or those units are missing, onnxruntime runs the same quantized graph (slower).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np

MODEL_FILE = "model.onnx"
SERVING_FILE = "serving.json"  # {"task": ..., "labels": [...], "runtime": one of RUNTIMES, preprocessing}
# The inputs export checked the artifact with and the labels it gave (on the shipped runtime and on
# the onnxruntime fallback): a server re-asks them before it serves a version. Images are base64.
CANARIES_FILE = "canaries.json"
SEEN_FILE = "seen.npz"  # a recommender's: each known user's items, never recommended to them again
DEFAULT_TEXT_CANARIES = ("what a lovely day", "the battery died after an hour", "ok")
RUNTIMES = ("onnxruntime", "openvino_bf16", "openvino_int8")
OPENVINO_BF16 = "openvino CPU bf16"  # what Session.backend says when the bf16 path really runs
OPENVINO_INT8 = "openvino CPU int8"  # ... and when OpenVINO's matrix products really run in int8
# CPU flags (Linux /proc/cpuinfo) of hardware int8 dot products: AMX tiles, AVX512 / AVX VNNI.
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
ONNXRUNTIME_CPU = "onnxruntime CPUExecutionProvider"  # ... and on onnxruntime's CPU provider


@functools.cache
def openvino_bf16_available() -> bool:
    """Whether the `openvino_bf16` runtime would really compute in bf16 on this machine."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # not installed, or an install that cannot start: serve on onnxruntime
        return False


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def openvino_int8_available() -> bool:
    """Whether the `openvino_int8` runtime would run int8 matrix products in hardware here."""
    if not cpu_flags() & set(INT8_DOT_FLAGS):
        return False
    try:
        import openvino as ov

        return "INT8" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return False


def _int8_products(compiled: object) -> int:
    """How many matrix products / convolutions OpenVINO compiled to run in int8."""
    count = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind, precision = (str(info[k].astype(str)) for k in ("layerType", "runtimePrecision"))
        count += kind in ("FullyConnected", "MatMul", "Convolution") and precision in ("i8", "u8")
    return count


class Session:
    """One ONNX file on one runtime: `run(feeds)` gives the first output (the logits)."""

    def __init__(self, model_file: str | Path, runtime: str = "onnxruntime", threads: int = 0) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
        if runtime == "openvino_bf16" and openvino_bf16_available():
            self._open_openvino(model_file, threads, "bf16")
        elif runtime == "openvino_int8" and openvino_int8_available():
            # The operators left in floating point run in bf16 where the CPU has it.
            self._open_openvino(model_file, threads, "bf16" if openvino_bf16_available() else "f32")
        else:
            self._open_onnxruntime(model_file, threads)

    def _open_onnxruntime(self, model_file: str | Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in session.get_inputs()]
        self.backend = f"onnxruntime {session.get_providers()[0]}"
        self._run = lambda feeds: session.run(None, feeds)[0]

    def _open_openvino(self, model_file: str | Path, threads: int, precision: str) -> None:
        import openvino as ov

        # LATENCY: one request at a time gets every core (how this wrapper serves).
        config: dict = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(model_file), "CPU", config)
        output = compiled.output(0)
        self.input_names = [i.get_any_name() for i in compiled.inputs]
        self.backend = f"openvino CPU {compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()}"
        if _int8_products(compiled):
            self.backend = OPENVINO_INT8
        # A request per call: one request is not safe to share between threads (a scoring server
        # calls from several), and a new one costs ~0.03 ms here.
        self._run = lambda feeds: compiled.create_infer_request().infer(feeds)[output]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._run(feeds)


def open_classifier(model_dir: str | Path, intra_op_threads: int = 0,
                    model_file: str | Path | None = None, runtime: str | None = None) -> OnnxClassifier:
    """The classifier for the artifact in model_dir, of the task its serving.json names."""
    config = json.loads((Path(model_dir) / SERVING_FILE).read_text())
    kinds = {"text": OnnxTextClassifier, "image": OnnxImageClassifier, "audio": OnnxAudioClassifier}
    kind = kinds.get(config.get("task", "text"))
    if kind is None:
        raise ValueError(f"{model_dir}: serving.json names an unknown task {config.get('task')!r}")
    return kind(model_dir, intra_op_threads, model_file, runtime)


class OnnxClassifier:
    """What every task's served model shares: the label map, the session and `predict`."""

    def __init__(self, model_dir: str | Path, intra_op_threads: int = 0,
                 model_file: str | Path | None = None, runtime: str | None = None) -> None:
        model_dir = Path(model_dir)
        self.config = json.loads((model_dir / SERVING_FILE).read_text())
        self.labels: list[str] = self.config["labels"]
        self.runtime: str = runtime or self.config.get("runtime", "onnxruntime")
        self.session = Session(model_file or model_dir / MODEL_FILE, self.runtime, intra_op_threads)
        wanted = {"openvino_bf16": OPENVINO_BF16, "openvino_int8": OPENVINO_INT8}.get(self.runtime)
        if wanted and self.session.backend != wanted:
            graph, path = ("fp32", "bf16") if self.runtime == "openvino_bf16" else ("int8", "int8 units")
            print(f"serving: OpenVINO with {path} is not available here; running the {graph} graph on "
                  f"{self.session.backend} (same model, slower)", file=sys.stderr)
        self.input_names = self.session.input_names

    def feeds(self, inputs: list) -> dict[str, np.ndarray]:
        """The graph's inputs for a batch of raw inputs (what calibration and timing feed it)."""
        raise NotImplementedError

    def logits(self, inputs: list, batch_size: int = 64) -> np.ndarray:
        raise NotImplementedError

    def predict(self, inputs: list) -> list[str]:
        return [self.labels[i] for i in self.logits(inputs).argmax(axis=1)]


class OnnxTextClassifier(OnnxClassifier):
    def __init__(self, model_dir: str | Path, intra_op_threads: int = 0,
                 model_file: str | Path | None = None, runtime: str | None = None) -> None:
        from tokenizers import Tokenizer

        super().__init__(model_dir, intra_op_threads, model_file, runtime)
        model_dir = Path(model_dir)
        self.max_length: int = self.config["max_length"]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        self.pad_id = int(self.config.get("pad_token_id", 0))

    def feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        encoded = self.tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encoded)
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for i, e in enumerate(encoded):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {name: feeds[name] for name in self.input_names}

    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Logits per text; rows are batched by length so little compute goes to padding."""
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]
        order = np.argsort(lengths, kind="stable")
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.session.run(self.feeds([texts[i] for i in idx]))
        return out


class OnnxFileClassifier(OnnxClassifier):
    """A classifier whose inputs are files (encoded bytes or paths): images, audio clips."""

    def logits(self, inputs: list, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(inputs), len(self.labels)), dtype=np.float32)
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            out[start : start + len(chunk)] = self.session.run(self.feeds(chunk))
        return out


class OnnxImageClassifier(OnnxFileClassifier):
    """Images in (encoded bytes, a file path, or an HxW / HxWxC uint8 array); serving.json gives
    the side, the channels and the normalisation the model was trained with."""

    def __init__(self, model_dir: str | Path, intra_op_threads: int = 0,
                 model_file: str | Path | None = None, runtime: str | None = None) -> None:
        super().__init__(model_dir, intra_op_threads, model_file, runtime)
        self.size: int = int(self.config["size"])
        self.channels: int = int(self.config["channels"])
        self.mean = np.asarray(self.config["mean"], dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(self.config["std"], dtype=np.float32).reshape(-1, 1, 1)
        self.resample: str = self.config.get("resample", "bilinear")

    def pixels(self, item: object) -> np.ndarray:
        """One image as a (channels, size, size) float32 array, normalised."""
        pixels = image_array(item, self.size, self.channels, self.resample).astype(np.float32)
        return (pixels / 255.0 - self.mean) / self.std

    def feeds(self, inputs: list) -> dict[str, np.ndarray]:
        return {self.input_names[0]: np.stack([self.pixels(item) for item in inputs])}


def image_array(item: object, size: int, channels: int, resample: str = "bilinear") -> np.ndarray:
    """An image (encoded bytes, a path, or a uint8 array) as uint8 (channels, size, size): converted
    to grey (L) or RGB, resized with `resample` filtering (bilinear, bicubic) when its side differs."""
    import io

    from PIL import Image

    if isinstance(item, np.ndarray):
        image = Image.fromarray(item)
    elif isinstance(item, (bytes, bytearray)):
        image = Image.open(io.BytesIO(item))
    else:
        image = Image.open(str(item))
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling[resample.upper()])
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


class OnnxAudioClassifier(OnnxFileClassifier):
    """Audio clips in (encoded WAV / FLAC / OGG bytes, a file path, or float samples at the model's
    rate); serving.json gives the rate and the clip length the model was trained with."""

    def __init__(self, model_dir: str | Path, intra_op_threads: int = 0,
                 model_file: str | Path | None = None, runtime: str | None = None) -> None:
        super().__init__(model_dir, intra_op_threads, model_file, runtime)
        self.rate: int = int(self.config["sampling_rate"])
        self.samples: int = int(self.config["max_samples"])

    def feeds(self, inputs: list) -> dict[str, np.ndarray]:
        clips = [audio_input(item, self.rate, self.samples) for item in inputs]
        return {self.input_names[0]: np.stack(clips)}


def decode_audio(item: object) -> tuple[np.ndarray, int]:
    """An audio file (bytes or a path) as float32 samples (frames, channels) and its sample rate."""
    import io

    import soundfile as sf

    source = io.BytesIO(item) if isinstance(item, (bytes, bytearray)) else str(item)
    samples, rate = sf.read(source, dtype="float32", always_2d=True)
    return samples, int(rate)


def to_mono_at(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """(frames, channels) samples as mono (the channels' mean) at the target rate (polyphase
    resampling, scipy's resample_poly)."""
    from math import gcd

    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != target:
        from scipy.signal import resample_poly

        g = gcd(rate, target)
        mono = resample_poly(mono, target // g, rate // g)
    return np.asarray(mono, dtype=np.float32)


def fit_length(mono: np.ndarray, length: int) -> np.ndarray:
    """Exactly `length` samples: a longer clip keeps its loudest window (where a keyword is), a
    shorter one is centred between zeros."""
    if len(mono) > length:
        energy = np.concatenate([[0.0], np.cumsum(mono.astype(np.float64) ** 2)])
        start = int(np.argmax(energy[length:] - energy[:-length]))
        return mono[start: start + length]
    out = np.zeros(length, dtype=np.float32)
    offset = (length - len(mono)) // 2
    out[offset: offset + len(mono)] = mono
    return out


def normalise(clip: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (what Wav2Vec2's feature extractor does)."""
    clip = clip.astype(np.float32)
    return (clip - clip.mean()) / np.sqrt(clip.var() + 1e-7)


def audio_input(item: object, rate: int, length: int) -> np.ndarray:
    """One clip as the model takes it: decoded (unless already samples at `rate`), mono, resampled,
    cut or padded to `length` samples, normalised."""
    if isinstance(item, np.ndarray):
        mono = item.astype(np.float32)
    else:
        samples, source_rate = decode_audio(item)
        mono = to_mono_at(samples, source_rate, rate)
    return normalise(fit_length(mono, length))


def open_recommender(model_dir: str | Path, intra_op_threads: int = 0) -> OnnxRecommender:
    config = json.loads((Path(model_dir) / SERVING_FILE).read_text())
    if config.get("task") != "recsys":
        raise ValueError(f"{model_dir}: serving.json names the task {config.get('task')!r}, "
                         "not a recommender")
    return OnnxRecommender(model_dir, intra_op_threads)


class OnnxRecommender:
    """A recommender's scorer: user ids in, every item's ranking score and predicted rating out, and
    the top k each user has not seen. Column 0 of the scores is the unknown item; an unknown user is
    row 0 of the model's table (all zeros), so they get the items' own scores: popularity-like."""

    def __init__(self, model_dir: str | Path, intra_op_threads: int = 0) -> None:
        import onnxruntime as ort

        model_dir = Path(model_dir)
        self.config = json.loads((model_dir / SERVING_FILE).read_text())
        self.labels: list[str] = self.config["labels"]
        self.items: list[str] = self.config["items"]
        self.titles: list[str] = self.config["titles"]
        self.user_row = {u: i + 1 for i, u in enumerate(self.config["users"])}
        self.item_column = {item: i + 1 for i, item in enumerate(self.items)}
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(str(model_dir / MODEL_FILE), options,
                                            providers=["CPUExecutionProvider"])
        self.seen: dict[int, np.ndarray] = {}
        if (model_dir / SEEN_FILE).exists():
            with np.load(model_dir / SEEN_FILE) as seen:
                users, indptr, items = seen["users"], seen["indptr"], seen["items"]
                self.seen = {int(u): items[indptr[i]:indptr[i + 1]] for i, u in enumerate(users)}

    def scores(self, users: list[str], items: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ranking scores, predicted ratings), [users, 1 + items] each; `items` reorders the columns
        to another catalogue's (column 0 and items this model never saw: the unknown item's)."""
        rows = np.array([self.user_row.get(str(u), 0) for u in users], dtype=np.int64)
        ranked, rated = (np.zeros((0, len(self.items) + 1), np.float32),) * 2
        if len(rows):
            ranked, rated = self.session.run(["scores", "ratings"], {"user": rows})
        if items is not None:
            columns = np.array([0] + [self.item_column.get(item, 0) for item in items], dtype=np.int64)
            ranked, rated = ranked[:, columns], rated[:, columns]
            # Items this model never saw are items it cannot recommend: they rank last.
            ranked[:, 1:][:, columns[1:] == 0] = -np.inf
        return ranked, rated

    def recommend(self, users: list[str], top: int = 10) -> list[list[dict]]:
        """Per user, the `top` items they have not interacted with, best first: item id, title, score,
        predicted rating."""
        ranked, rated = self.scores(users)
        out = []
        for row, user in enumerate(users):
            score = ranked[row].astype(np.float64)
            score[0] = -np.inf
            score[self.seen.get(self.user_row.get(str(user), 0), [])] = -np.inf
            best = np.argsort(-score, kind="stable")[:top]
            out.append([{"item": self.items[i - 1], "title": self.titles[i - 1], "score": float(score[i]),
                         "rating": float(rated[row, i])} for i in best if np.isfinite(score[i])])
        return out


def encode_canaries(inputs: list) -> list[str]:
    """Canary inputs as JSON strings: texts as they are, image and audio files as base64 of their bytes."""
    import base64

    return [item if not Path(str(item)).is_file() else base64.b64encode(Path(item).read_bytes()).decode()
            for item in inputs]


def canary_problem(model: OnnxClassifier, model_dir: str | Path) -> str | None:
    """Why `model` (opened from model_dir) should not serve, or None: its canary inputs must give
    finite logits of the right shape and, where export recorded them, the same labels as then.
    An artifact from before canaries.json is asked a few default inputs of its task."""
    import base64

    file = Path(model_dir) / CANARIES_FILE
    recorded = json.loads(file.read_text()) if file.exists() else {}
    inputs = recorded.get("inputs")
    if inputs is None:
        if isinstance(model, OnnxImageClassifier):
            inputs = [np.zeros((28, 28), np.uint8), np.full((40, 30, 3), 255, np.uint8)]
        else:
            inputs = list(DEFAULT_TEXT_CANARIES)
    elif isinstance(model, OnnxFileClassifier):
        inputs = [base64.b64decode(item) for item in inputs]
    try:
        logits = model.logits(inputs)
    except Exception as exc:  # any failure of the graph or the preprocessor refuses the version
        return f"the canary inputs failed: {type(exc).__name__}: {exc}"
    if logits.shape != (len(inputs), len(model.labels)):
        wanted = [len(inputs), len(model.labels)]
        return f"the canaries gave logits of shape {list(logits.shape)}, not {wanted}"
    if not np.isfinite(logits).all():
        return "the canaries gave logits that are not finite (NaN or inf)"
    labels = [model.labels[i] for i in logits.argmax(axis=1)]
    expected = [recorded[k] for k in ("labels", "fallback_labels") if k in recorded]
    if expected and labels not in expected:
        return f"the canaries gave labels {labels}, export recorded {expected[0]}"
    return None

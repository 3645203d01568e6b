"""Serve an exported model with onnxruntime + tokenizers only (no torch, no transformers).

Self-contained on purpose: it is shipped next to the ONNX file in the registry, and the serving
smoke check loads it in a fresh process to prove the artifact stands on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MODEL_FILE = "model.onnx"
SERVING_FILE = "serving.json"  # {"labels": [...], "max_length": N}


class OnnxTextClassifier:
    def __init__(self, model_dir: str | Path, intra_op_threads: int = 0,
                 model_file: str | Path | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        config = json.loads((model_dir / SERVING_FILE).read_text())
        self.labels: list[str] = config["labels"]
        self.max_length: int = config["max_length"]
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_file or model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        self.pad_id = int(config.get("pad_token_id", 0))

    def _batch(self, texts: list[str]) -> dict[str, np.ndarray]:
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
            out[idx] = self.session.run(None, self._batch([texts[i] for i in idx]))[0]
        return out

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.logits(texts).argmax(axis=1)]

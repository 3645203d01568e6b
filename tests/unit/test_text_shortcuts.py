"""The first-token shortcut of the last layer gives the same logits and gradients as the full model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from components.tasks.text_shortcuts import first_token_last_layer  # noqa: E402


def _batch() -> dict:
    ids = torch.tensor([[2, 5, 9, 11, 7, 3], [2, 8, 4, 3, 0, 0], [2, 6, 3, 0, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _model(kind: str, attn: str = "eager") -> object:
    torch.manual_seed(0)
    common = {"vocab_size": 40, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 64, "num_labels": 3, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0}
    if kind == "bert":
        config = transformers.BertConfig(**common)
        return transformers.BertForSequenceClassification._from_config(config, attn_implementation=attn)
    config = transformers.RobertaConfig(**common, pad_token_id=0, max_position_embeddings=20)
    return transformers.RobertaForSequenceClassification._from_config(config, attn_implementation=attn)


def _logits_and_grads(model: object, shortcut: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    with first_token_last_layer(model) if shortcut else _nothing() as applied:
        assert applied is not False or not shortcut
        logits = model(**_batch()).logits
        logits.pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(("kind", "attn"), [("bert", "eager"), ("bert", "sdpa"), ("roberta", "eager")])
def test_same_logits_and_gradients_with_padding(kind: str, attn: str) -> None:
    model = _model(kind, attn)
    model.train()
    full_logits, full_grads = _logits_and_grads(model, shortcut=False)
    short_logits, short_grads = _logits_and_grads(model, shortcut=True)
    torch.testing.assert_close(short_logits, full_logits, atol=1e-5, rtol=1e-5)
    assert full_grads.keys() == short_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(short_grads[name], full_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_padding_is_still_masked() -> None:
    """Changing a padded position's token must not change the logits (the mask reached the shortcut)."""
    model = _model("bert").eval()
    batch = _batch()
    other = {**batch, "input_ids": batch["input_ids"].clone()}
    other["input_ids"][2, 4] = 17  # a padded position of row 2
    with first_token_last_layer(model), torch.no_grad():
        torch.testing.assert_close(model(**other).logits[2], model(**batch).logits[2])


def test_forward_restored_and_other_heads_untouched() -> None:
    model = _model("bert")
    layer = model.bert.encoder.layer[-1]
    with first_token_last_layer(model) as applied:
        assert applied and "forward" in vars(layer)
    assert "forward" not in vars(layer)  # the class's own forward again: a saved model is plain
    gpt = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
        vocab_size=40, n_embd=32, n_layer=1, n_head=2, num_labels=2))  # reads the last token
    with first_token_last_layer(gpt) as applied:
        assert applied is False


def test_freeze_lower_layers_stops_the_backward_below_them() -> None:
    from components.core.errors import FmpipeError
    from components.tasks.text import TextTask

    model = _model("bert")
    TextTask().freeze_lower_layers(model, 1)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in trained)
    assert any(n.startswith("bert.encoder.layer.1.") for n in trained) and "classifier.weight" in trained
    model(**_batch()).logits.sum().backward()
    assert model.bert.encoder.layer[0].output.dense.weight.grad is None
    with pytest.raises(FmpipeError, match="freeze_layers=2: the model has 2 layers"):
        TextTask().freeze_lower_layers(_model("bert"), 2)

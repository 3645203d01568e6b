"""Dropping an all-ones attention mask (so SDPA may take its flash kernel under torch.compile)
changes nothing a model computes, and the training loop really drops it."""

from __future__ import annotations

import pytest
import torch

from components.finetune.loop import LoopSettings, train_loop


def _tiny_bert(attn: str):  # noqa: ANN202
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=3, attn_implementation=attn)
    return BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_no_mask_gives_the_same_hidden_states_as_an_all_ones_mask(attn):
    encoder = _tiny_bert(attn).bert
    ids = torch.randint(5, 100, (4, 16), generator=torch.Generator().manual_seed(1))
    padded_mask = torch.ones_like(ids)
    padded_mask[0, 8:] = 0
    with torch.no_grad():
        masked = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        unmasked = encoder(input_ids=ids).last_hidden_state
        padded = encoder(input_ids=ids, attention_mask=padded_mask).last_hidden_state
    torch.testing.assert_close(unmasked, masked, rtol=0, atol=1e-5)
    assert (padded[0, :8] - masked[0, :8]).abs().max() > 1e-3  # the check can tell a real mask


def test_the_loop_drops_full_masks_and_keeps_padded_ones():
    model = _tiny_bert("sdpa").train()
    ids = torch.randint(5, 100, (4, 16), generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(4, dtype=torch.long)
    full = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    padded = {**full, "attention_mask": torch.ones_like(ids).index_fill_(1, torch.tensor([15]), 0)}
    seen: list[bool] = []

    def compute_loss(net, batch):  # noqa: ANN001, ANN202
        seen.append("attention_mask" in batch)
        logits = net(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return torch.nn.functional.cross_entropy(logits, batch["labels"])

    settings = LoopSettings(epochs=1, bf16=False, progress=False, log_every_steps=1)
    train_loop(model, lambda epoch: [full, padded], lambda b: b, compute_loss, settings,
               device=torch.device("cpu"))
    assert seen == [False, True]

import torch

from components.finetune.loop import without_full_attention_mask


def _batch(mask: list[list[int]]) -> dict:
    return {"input_ids": torch.ones(len(mask), len(mask[0]), dtype=torch.long),
            "attention_mask": torch.tensor(mask), "labels": torch.zeros(len(mask), dtype=torch.long)}


def test_an_all_ones_mask_is_dropped_and_the_rest_kept():
    out = without_full_attention_mask(_batch([[1, 1, 1], [1, 1, 1]]))
    assert set(out) == {"input_ids", "labels"}


def test_a_mask_with_padding_is_kept():
    batch = _batch([[1, 1, 1], [1, 1, 0]])
    out = without_full_attention_mask(batch)
    assert torch.equal(out["attention_mask"], batch["attention_mask"])


def test_a_batch_without_a_mask_passes_through():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    assert without_full_attention_mask(batch) is batch

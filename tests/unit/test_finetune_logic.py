import numpy as np

from components.training.batches import length_grouped_batches


def test_every_row_once_and_batches_hold_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 64, size=1000).tolist()
    batches = length_grouped_batches(lengths, 32, np.random.default_rng(1), group=True)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(np.asarray(lengths)[b]) for b in batches])
    assert spread < 3  # grouped: a batch spans few lengths, so padding is small


def test_grouped_batch_order_is_shuffled_not_sorted():
    lengths = list(range(640))
    batches = length_grouped_batches(lengths, 32, np.random.default_rng(1), group=True)
    firsts = [int(b[0]) for b in batches]
    assert firsts != sorted(firsts)


def test_ungrouped_batches_mix_lengths():
    lengths = list(range(640))
    batches = length_grouped_batches(lengths, 32, np.random.default_rng(1), group=False)
    assert np.mean([np.ptp(b) for b in batches]) > 300

"""Batch plans for the training loop."""

from __future__ import annotations

import numpy as np


def length_grouped_batches(
    lengths: list[int], batch_size: int, rng: np.random.Generator, group: bool
) -> list[np.ndarray]:
    """Batches of row indices. Grouped: rows of similar length share a batch (little padding),
    and the batch order is shuffled so training never sees lengths in order."""
    order = rng.permutation(len(lengths))
    if group:
        # A stable sort of a random permutation: equal lengths end up in random order.
        order = order[np.argsort(np.asarray(lengths)[order], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group:
        rng.shuffle(batches)
    return batches

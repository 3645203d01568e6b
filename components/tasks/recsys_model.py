"""The recommender's model and its figures: matrix factorisation with biases, an item tower that can
start from a text base model, ranking and rating metrics, and the baselines it must beat.

Pure numpy / torch, no pipeline types: the recsys task (recsys.py) wires them into the steps.

The model predicts a rating, r(u, i) = mu + b_u + b_i + p_u . q_i, and ranks a user's unseen items by
the same score. It trains on two losses at once: squared error on the observed ratings (what RMSE
measures) and BPR on sampled negatives (an observed item must outscore a random one; what ranking
measures). With an item tower, q_i = e_i + W t_i and b_i = e'_i + w . t_i, where t_i is a frozen
text embedding of the item's title and genres (MiniLM) and e_i, e'_i start at zero: an item nobody
rated is still placed by its text (cold start).
Index 0 of the user and item tables is "unknown": never trained, all zeros, so an unknown user gets
the popularity-like ranking mu + b_i and an unknown item its text's score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

UNKNOWN = 0  # the row of an unknown user or item


def build_model(
    n_users: int,
    n_items: int,
    dim: int,
    global_mean: float,
    item_text: np.ndarray | None = None,
    seed: int = 0,
) -> Any:
    """A fresh MatrixFactorization (n_users / n_items include the unknown row 0)."""
    import torch

    torch.manual_seed(seed)
    text = torch.from_numpy(np.asarray(item_text, dtype=np.float32)) if item_text is not None else None
    return _model_class()(n_users, n_items, dim, global_mean, text)


def _model_class() -> type:
    import torch
    from torch import nn

    class MatrixFactorization(nn.Module):
        """Two heads over one user / item index: ratings (mu + b_u + b_i + p_u . q_i, fit by squared
        error) and ranking scores (c_i + x_u . y_i, fit by BPR). Sharing one score made each loss
        spoil the other (measured: RMSE rose above the item-mean baseline as NDCG improved)."""

        def __init__(
            self, n_users: int, n_items: int, dim: int, global_mean: float, item_text: torch.Tensor | None
        ) -> None:
            super().__init__()
            self.dim = dim
            self.user = nn.Embedding(n_users, 2 * dim)  # [rating p_u | ranking x_u]
            self.item = nn.Embedding(n_items, 2 * dim)  # [rating q_i | ranking y_i]
            self.user_bias = nn.Embedding(n_users, 1)
            self.item_bias = nn.Embedding(n_items, 2)  # [rating b_i | ranking c_i]
            self.global_mean = nn.Parameter(torch.tensor(float(global_mean)))
            nn.init.normal_(self.user.weight, std=0.1)
            for table in (self.user_bias, self.item_bias):
                nn.init.zeros_(table.weight)
            if item_text is None:
                nn.init.normal_(self.item.weight, std=0.1)  # no tower: the free vectors break symmetry
                self.text_tower = None
            else:
                nn.init.zeros_(self.item.weight)  # the tower's share breaks symmetry; free parts start at 0
                self.register_buffer("item_text", item_text)
                self.text_tower = nn.Linear(item_text.shape[1], 2 * dim + 2)
                nn.init.normal_(self.text_tower.weight, std=0.1)
                nn.init.zeros_(self.text_tower.bias)
            with torch.no_grad():
                self.user.weight[UNKNOWN] = 0
                self.item.weight[UNKNOWN] = 0

        def item_vectors(self, free: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            """(vectors, biases) of every item: free parts plus, with a tower, the text's share.
            free: per item, 1 to keep its free part, 0 to score it by its text alone."""
            vectors, biases = self.item.weight, self.item_bias.weight
            if free is not None:
                vectors, biases = vectors * free[:, None], biases * free[:, None]
            if self.text_tower is not None:
                tower = self.text_tower(self.item_text)
                tower = tower * (torch.arange(len(tower), device=tower.device) != UNKNOWN)[:, None]
                vectors, biases = vectors + tower[:, :-2], biases + tower[:, -2:]
            return vectors, biases

        def pair_scores(
            self, user: torch.Tensor, item: torch.Tensor, free: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """(predicted rating, ranking score) of (user, item) pairs."""
            vectors, biases = self.item_vectors(free)
            u, v, d = self.user(user), vectors[item], self.dim
            rating = (
                self.global_mean
                + self.user_bias(user)[:, 0]
                + biases[item, 0]
                + (u[:, :d] * v[:, :d]).sum(-1)
            )
            return rating, biases[item, 1] + (u[:, d:] * v[:, d:]).sum(-1)

        def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
            """Predicted ratings of (user, item) pairs."""
            return self.pair_scores(user, item)[0]

        def score_all(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(ranking scores, predicted ratings) of every item for each user: two [users, items]."""
            vectors, biases = self.item_vectors()
            u, d = self.user(user), self.dim
            ratings = (
                self.global_mean + self.user_bias(user) + biases[None, :, 0] + u[:, :d] @ vectors[:, :d].T
            )
            return biases[None, :, 1] + u[:, d:] @ vectors[:, d:].T, ratings

    return MatrixFactorization


def scoring_module(model: Any) -> Any:
    """The served graph: user indices in, every item's score out (what ONNX export traces)."""
    from torch import nn

    class Scorer(nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, user: Any) -> Any:
            return self.inner.score_all(user)

    return Scorer(model)


def joint_loss(
    model: Any, batch: dict[str, Any], ranking_weight: float, l2_rating: float, l2_ranking: float
) -> Any:
    """Squared error on the observed ratings, plus ranking_weight x BPR against the sampled
    negatives, plus an L2 penalty on the user and item vectors the batch used, per head (ratings
    want much more of it than ranking: measured, 0.05 vs 0.01). Weight decay would instead shrink
    every row at every step, whether the batch used it or not."""
    import torch

    user, item, d = batch["user"], batch["item"], model.dim
    free = batch.get(
        "free"
    )  # with a text tower: items whose free part this batch drops (cold-start practice)
    rating, positive = model.pair_scores(user, item, free)
    loss = torch.nn.functional.mse_loss(rating.float(), batch["rating"])
    items = model.item_vectors(free)[0]  # free part plus the tower's: the tower is held to the same L2
    used = [model.user(user), items[item]]
    if ranking_weight:
        negative = model.pair_scores(user, batch["negative"], free)[1]
        loss = loss + ranking_weight * -torch.nn.functional.logsigmoid(positive - negative).mean()
        used.append(items[batch["negative"]])
    for vectors in used:
        squares = vectors**2
        loss = loss + l2_rating * squares[:, :d].sum(-1).mean() + l2_ranking * squares[:, d:].sum(-1).mean()
    return loss


def score_users(model: Any, users: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(ranking scores, predicted ratings) of every item for each user index: [users, items] each."""
    import torch

    model.eval()
    scores, ratings = [], []
    with torch.inference_mode():
        for start in range(0, len(users), batch_size):
            chunk = torch.from_numpy(np.asarray(users[start : start + batch_size], dtype=np.int64))
            ranked, rated = model.score_all(chunk)
            scores.append(ranked.float().numpy())
            ratings.append(rated.float().numpy())
    if not scores:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(scores), np.concatenate(ratings)


# -- figures ---------------------------------------------------------------------------------------
@dataclass
class Interactions:
    """Index-coded interactions of one split (user and item as table rows, 0 = unknown)."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray

    def by_user(self) -> dict[int, np.ndarray]:
        order = np.argsort(self.user, kind="stable")
        users, starts = np.unique(self.user[order], return_index=True)
        return dict(zip(users.tolist(), np.split(self.item[order], starts[1:]), strict=True))


def top_k(scores: np.ndarray, seen: list[np.ndarray], k: int) -> np.ndarray:
    """Per row, the k best item indices, skipping the row's seen items and the unknown item; -1 fills
    the places of a row with fewer than k items left to recommend."""
    scores = scores.astype(np.float32, copy=True)
    scores[:, UNKNOWN] = -np.inf
    for row, items in enumerate(seen):
        scores[row, items] = -np.inf
    k = min(k, scores.shape[1] - 1)
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(-scores, best, axis=1).argsort(axis=1, kind="stable")
    best = np.take_along_axis(best, order, axis=1)
    best[~np.isfinite(np.take_along_axis(scores, best, axis=1))] = -1
    return best


def ranking_metrics(
    recommended: np.ndarray, relevant: list[np.ndarray], n_items: int, k: int
) -> dict[str, Any]:
    """recall@k, NDCG@k, MAP@k (each averaged over users) and catalogue coverage, with per-user
    NDCG kept for slices. relevant: per row, the held-out items of that user."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg, ap = (np.zeros(len(relevant)) for _ in range(3))
    for row, items in enumerate(relevant):
        items = np.unique(items)  # an item held out twice counts once
        hits = np.isin(recommended[row, :k], items)
        if not len(items):
            continue
        recall[row] = hits.sum() / len(items)
        ideal = discounts[: min(len(items), k)].sum()
        ndcg[row] = (hits * discounts[: len(hits)]).sum() / ideal
        precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        ap[row] = (precision_at * hits).sum() / min(len(items), k)
    shown = np.unique(recommended[:, :k])
    coverage = int((shown > UNKNOWN).sum()) / max(n_items - 1, 1)
    return {
        f"recall_at_{k}": float(recall.mean()),
        f"ndcg_at_{k}": float(ndcg.mean()),
        f"map_at_{k}": float(ap.mean()),
        "coverage": float(coverage),
        "users": len(relevant),
        "per_user": {"recall": recall, "ndcg": ndcg},
    }


def rating_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    error = np.asarray(predicted, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    if not len(error):
        return {"rmse": float("nan"), "mae": float("nan")}
    return {"rmse": float(np.sqrt((error**2).mean())), "mae": float(np.abs(error).mean())}


# -- baselines (scores of every item per user, like the model's) ----------------------------------
def most_popular_scores(train: Interactions, n_items: int) -> np.ndarray:
    """One row: each item's count of training interactions."""
    return np.bincount(train.item, minlength=n_items).astype(np.float32)[None, :]


def item_mean_ratings(train: Interactions, n_items: int, shrink: float = 0.0) -> np.ndarray:
    """Each item's mean training rating (the global mean where it has none), shrunk toward the
    global mean by `shrink` pseudo-ratings."""
    mean = float(train.rating.mean()) if len(train.rating) else 0.0
    sums = np.bincount(train.item, weights=train.rating, minlength=n_items)
    counts = np.bincount(train.item, minlength=n_items)
    return ((sums + shrink * mean) / np.maximum(counts + shrink, 1e-9)).astype(np.float32) * (
        counts + shrink > 0
    ) + mean * (counts + shrink == 0)


def item_knn_scores(
    train: Interactions, users: np.ndarray, n_users: int, n_items: int, neighbours: int = 50
) -> np.ndarray:
    """Item-based kNN on the binary interaction matrix: cosine similarity, each item's top
    `neighbours` kept; a user's score of an item is the summed similarity to the items they had."""
    from scipy import sparse

    matrix = sparse.csr_matrix(
        (np.ones(len(train.user), np.float32), (train.user, train.item)), shape=(n_users, n_items)
    )
    matrix.data[:] = 1.0  # repeated pairs count once
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0))).ravel()
    norms[norms == 0] = 1.0
    normalised = matrix @ sparse.diags(1.0 / norms)
    similarity = (normalised.T @ normalised).toarray()
    np.fill_diagonal(similarity, 0.0)
    if neighbours < n_items:
        cut = np.partition(similarity, -neighbours, axis=1)[:, -neighbours][:, None]
        similarity[similarity < cut] = 0.0
    return np.asarray(matrix[users] @ similarity, dtype=np.float32)

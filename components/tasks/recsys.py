"""The recommender task: matrix factorisation on (user, item, rating, time) interactions, with an item
tower that starts from the text base model (MiniLM embeddings of each item's title and genres).

Unlike the classifiers it ranks: finetune, evaluate and export call its `fit`, `assess` and
`export_scorer` (the steps check `task.ranking`); ingest calls its `split` (per user, by time) and
`catalogue`. Its data code is recsys_data.py, its model and figures recsys_model.py; the served
scorer (top-k without torch) is serving.py's OnnxRecommender.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from components.core.errors import FmpipeError
from components.core.evaluation import Blessing, Check, Evaluation
from components.tasks import recsys_data as data
from components.tasks import recsys_model as mf
from components.tasks.base import LABEL, CleanReport, DriftFigure, ReadReport, Task

if TYPE_CHECKING:
    from components.core.config import EvaluateConfig, FinetuneConfig, Params, RecsysTaskConfig

MODEL_FILE = "recommender.pt"
INFO_FILE = "recommender.json"
TEXT_FILE = "item_text.npy"
TEXT_MODELS = ("minilm", "none")
NOT_A_CLASSIFIER = "the recommender ranks items; it has no {} (a classifier's hook)"


def embed_texts(texts: list[str], max_tokens: int = 64, batch: int = 128) -> np.ndarray:
    """MiniLM sentence embeddings (mean-pooled, unit length) of the texts: all-MiniLM-L6-v2's recipe."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from components.tasks.text import resolve_checkpoint

    path = resolve_checkpoint("minilm")
    tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            encoded = tokenizer(
                texts[start : start + batch],
                padding=True,
                truncation=True,
                max_length=max_tokens,
                return_tensors="pt",
            )
            hidden = encoder(**encoded).last_hidden_state
            mask = encoded["attention_mask"][..., None].float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


class Coding:
    """User and item ids as table rows (0 = unknown), the catalogue's text, the users' history."""

    def __init__(self, users: list[str], items: list[str]) -> None:
        self.users, self.items = users, items
        self.user_row = {u: i + 1 for i, u in enumerate(users)}
        self.item_row = {t: i + 1 for i, t in enumerate(items)}

    @property
    def n_users(self) -> int:
        return len(self.users) + 1

    @property
    def n_items(self) -> int:
        return len(self.items) + 1

    def interactions(self, frame: pd.DataFrame) -> mf.Interactions:
        return mf.Interactions(
            frame[data.USER].map(self.user_row).fillna(mf.UNKNOWN).to_numpy(np.int64),
            frame[data.ITEM].map(self.item_row).fillna(mf.UNKNOWN).to_numpy(np.int64),
            frame[data.RATING].to_numpy(np.float32),
        )


def catalogue_of(splits: dict[str, pd.DataFrame], catalogue: pd.DataFrame | None) -> pd.DataFrame:
    """Every item the model may recommend: the catalogue file's, plus any item the interactions name."""
    seen = pd.concat([part[[data.ITEM]] for part in splits.values()]).drop_duplicates()
    base = catalogue if catalogue is not None else pd.DataFrame(columns=[data.ITEM, data.TITLE, data.GENRES])
    extra = seen[~seen[data.ITEM].isin(base[data.ITEM])].assign(**{data.TITLE: "", data.GENRES: ""})
    out = pd.concat([base, extra], ignore_index=True).dropna(subset=[data.ITEM])
    return out.sort_values(data.ITEM, kind="stable").reset_index(drop=True)


def item_texts(catalogue: pd.DataFrame) -> list[str]:
    return [
        f"{t}. {g}".strip(". ") or str(i)
        for i, t, g in zip(
            catalogue[data.ITEM],
            catalogue[data.TITLE].fillna(""),
            catalogue[data.GENRES].fillna(""),
            strict=True,
        )
    ]


def seen_by_user(coding: Coding, *frames: pd.DataFrame) -> dict[int, np.ndarray]:
    """Per user row, the item rows they interacted with in these frames (not recommended again)."""
    merged: dict[int, list[np.ndarray]] = {}
    for frame in frames:
        for user, items in coding.interactions(frame).by_user().items():
            merged.setdefault(user, []).append(items)
    return {user: np.unique(np.concatenate(parts)) for user, parts in merged.items()}


class RecsysTask(Task):
    kind = "recsys"
    contract_task = "recommendation"
    input_column = data.USER
    key_column = data.PAIR
    input_type = "string"
    ranking = True
    builtin_sources = {data.MOVIELENS: "MovieLens 100k from the installed recbole wheel"}
    rule_names = {key: name for key, name in data.RULE_NAMES.items()}

    def __init__(self, params: Params | None = None) -> None:
        from components.core.config import RecsysTaskConfig

        self.settings: RecsysTaskConfig = params.task.recsys if params is not None else RecsysTaskConfig()
        self._catalogue: pd.DataFrame | None = None

    # -- data --------------------------------------------------------------------------------------
    def resolve_source(self, source: str) -> Path:
        return data.resolve_source(source)

    def read(self, source: Path) -> tuple[pd.DataFrame, ReadReport]:
        frame, self._catalogue, report = data.read(source, self.settings)
        return frame, report

    def catalogue(self) -> pd.DataFrame | None:
        """The item catalogue the last `read` found (ingest writes it next to the splits)."""
        return self._catalogue

    def clean(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, CleanReport]:
        return data.clean(frame)

    def group_keys(self, frame: pd.DataFrame) -> pd.Series:
        return frame[data.PAIR]

    def split(
        self, frame: pd.DataFrame, cfg: Any, source: str, label_name: str = LABEL
    ) -> dict[str, pd.DataFrame]:
        return data.time_split(
            frame,
            cfg.val_fraction,
            cfg.test_fraction,
            source,
            self.settings.min_users,
            cfg.sample_cap,
            cfg.seed,
        )

    def profile(self, train: pd.DataFrame, seed: int) -> dict[str, Any]:
        return data.profile(train)

    def drift(self, reference: dict[str, Any], new: dict[str, Any], train: pd.DataFrame) -> list[DriftFigure]:
        from components.tasks.base import population_stability_index

        s = self.settings
        if "activity" not in reference:  # the production model's data is not interactions
            return [
                DriftFigure(
                    "label_psi",
                    population_stability_index(reference.get("label_counts", {}), new["label_counts"]),
                    0.2,
                    True,
                )
            ]
        figures = data.drift_figures(reference, new)
        limits = {
            "label_psi": 0.2,
            "activity_psi": s.max_activity_psi,
            "popularity_psi": s.max_popularity_psi,
            "new_user_share": s.max_new_user_share,
            "new_item_share": s.max_new_item_share,
        }
        return [
            DriftFigure(name, value, limits[name], value <= limits[name]) for name, value in figures.items()
        ]

    def expectations(self, labels: list[str], cfg: Any) -> list[Any]:
        return data.expectations(self.settings)

    def column_names(self, params: Any) -> dict[str, str]:
        s = self.settings
        names = {
            data.USER: s.user_column,
            data.ITEM: s.item_column,
            data.RATING: s.rating_column,
            data.TIME: s.timestamp_column,
        }
        return {k: v for k, v in names.items() if v}

    def settings_for(self, expectation_type: str, column: str | None) -> str | None:
        return data.SETTINGS.get(data.RULE_NAMES.get((expectation_type, column or ""), ""))

    # -- model: what the classifier hooks would be -------------------------------------------------
    def check_checkpoint(self, base_model: str, setting: str) -> None:
        if base_model not in TEXT_MODELS:
            raise FmpipeError(
                f"{setting}={base_model!r}: the recommender's item tower starts from "
                f"{' or '.join(TEXT_MODELS)} (no text model)"
            )

    def resolve_checkpoint(self, base_model: str) -> str:
        """The item tower's text model (its folder, so a rerun digest covers its weights)."""
        from components.tasks.text import resolve_checkpoint

        return resolve_checkpoint(base_model) if base_model == "minilm" else base_model

    def load_pretrained(self, base_model: str, labels: list[str], **_: Any) -> tuple[Any, Any]:
        raise FmpipeError(NOT_A_CLASSIFIER.format("classification head"))

    def prepare(self, processor: Any, model: Any, inputs: list[Any], cfg: Any) -> Any:
        raise FmpipeError(NOT_A_CLASSIFIER.format("token or pixel features"))

    def collate(self, processor: Any, features: Any, rows: np.ndarray, rng: Any = None) -> dict[str, Any]:
        raise FmpipeError(NOT_A_CLASSIFIER.format("batches of features"))

    def predict_logits(
        self, model: Any, processor: Any, inputs: list[Any], batch_size: int = 128, bf16: bool = False
    ) -> np.ndarray:
        raise FmpipeError(NOT_A_CLASSIFIER.format("logits"))

    def baselines(
        self, train_inputs: list[Any], train_labels: list[str], test_inputs: list[Any], seed: int = 0
    ) -> dict[str, list[str]]:
        raise FmpipeError(NOT_A_CLASSIFIER.format("label baselines"))

    def slice_masks(self, test: pd.DataFrame) -> dict[str, np.ndarray]:
        raise FmpipeError(NOT_A_CLASSIFIER.format("row slices"))

    def timing_feeds(self, model_dir: Path, batch: int) -> dict[str, np.ndarray]:
        info = json.loads((Path(model_dir) / INFO_FILE).read_text())
        return {"user": (np.arange(batch) % max(len(info["users"]), 1) + 1).astype(np.int64)}

    def canaries(self, work: Path) -> list[Any]:
        return []

    # -- the trained model on disk -----------------------------------------------------------------
    def save(self, processor: Any, model: Any, out_dir: Path, labels: list[str]) -> None:
        import torch

        coding, catalogue = processor
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out_dir / MODEL_FILE)
        info = {
            "users": coding.users,
            "items": coding.items,
            "dim": model.dim,
            "labels": labels,
            "titles": catalogue[data.TITLE].fillna("").tolist(),
            "genres": catalogue[data.GENRES].fillna("").tolist(),
            "text_model": "minilm" if model.text_tower is not None else "none",
        }
        (out_dir / INFO_FILE).write_text(json.dumps(info))
        if model.text_tower is not None:
            np.save(out_dir / TEXT_FILE, model.item_text.numpy())

    def load_finetuned(self, model_dir: Path) -> tuple[Any, Any, list[str]]:
        """((coding, catalogue), model, labels)."""
        import torch

        model_dir = Path(model_dir)
        info = json.loads((model_dir / INFO_FILE).read_text())
        coding = Coding(info["users"], info["items"])
        text = np.load(model_dir / TEXT_FILE) if (model_dir / TEXT_FILE).exists() else None
        model = mf.build_model(coding.n_users, coding.n_items, info["dim"], 0.0, text)
        model.load_state_dict(torch.load(model_dir / MODEL_FILE, weights_only=True))
        catalogue = pd.DataFrame(
            {data.ITEM: info["items"], data.TITLE: info["titles"], data.GENRES: info["genres"]}
        )
        return (coding, catalogue), model.eval(), info["labels"]

    # -- finetune ----------------------------------------------------------------------------------
    def fit(
        self,
        splits: dict[str, pd.DataFrame],
        catalogue: pd.DataFrame | None,
        labels: list[str],
        cfg: FinetuneConfig,
        model_dir: Path,
        log: Any = None,
        checkpoint_dir: Path | None = None,
    ) -> Any:
        """Train on the train split (validated on val by NDCG@k), save to model_dir; a FinetuneResult."""
        import torch

        from components.training.checkpoint import CheckpointStore
        from components.training.classifier import FinetuneResult
        from components.training.loop import LoopSettings, seed_everything, train_loop

        s, k = self.settings, self.settings.k
        self.check_checkpoint(cfg.base_model, "finetune.base_model")
        seed_everything(cfg.seed)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        items = catalogue_of(splits, catalogue)
        coding = Coding(sorted(splits["train"][data.USER].dropna().unique()), items[data.ITEM].tolist())
        train, val = coding.interactions(splits["train"]), coding.interactions(splits["val"])
        text = None
        if cfg.base_model == "minilm":
            started = time.perf_counter()
            embedded = embed_texts(item_texts(items), s.text_max_tokens)
            text = np.vstack([np.zeros((1, embedded.shape[1]), np.float32), embedded])
            if log:
                log({"item_text_seconds": time.perf_counter() - started}, 0)
        model = mf.build_model(
            coding.n_users, coding.n_items, s.dim, float(train.rating.mean()), text, cfg.seed
        )
        seen_train = seen_by_user(coding, splits["train"])
        val_users = np.array(sorted(set(val.by_user()) - {mf.UNKNOWN}), dtype=np.int64)
        val_relevant = [val.by_user()[u] for u in val_users]
        val_seen = [seen_train.get(u, np.zeros(0, np.int64)) for u in val_users]
        score_key = f"val_{s.primary_metric}_at_{k}"

        def batches_of_epoch(epoch: int) -> list[np.ndarray]:
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train.user))
            return [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]

        def collate(rows: np.ndarray) -> dict[str, Any]:
            rng = np.random.default_rng([cfg.seed, *(int(r) for r in rows[:8])])
            batch = {
                "user": torch.from_numpy(train.user[rows]),
                "item": torch.from_numpy(train.item[rows]),
                "rating": torch.from_numpy(train.rating[rows]),
                "negative": torch.from_numpy(rng.integers(1, coding.n_items, len(rows))),
            }
            if text is not None and s.cold_dropout:
                batch["free"] = torch.from_numpy(
                    (rng.random(coding.n_items) >= s.cold_dropout).astype(np.float32)
                )
            return batch

        def compute_loss(net: Any, batch: dict[str, Any]) -> Any:
            return mf.joint_loss(net, batch, s.ranking_weight, s.l2_rating, s.l2_ranking)

        def evaluate(net: Any) -> dict[str, float]:
            scores, ratings = mf.score_users(net, val_users)
            found = mf.ranking_metrics(mf.top_k(scores, val_seen, k), val_relevant, coding.n_items, k)
            rated = ratings[np.searchsorted(val_users, val.user), val.item] if len(val_users) else np.zeros(0)
            net.train()
            return {
                score_key: found[f"{s.primary_metric}_at_{k}"],
                "val_rmse": mf.rating_metrics(rated, val.rating)["rmse"],
            }

        store = None
        if checkpoint_dir is not None and cfg.checkpoint_every_steps:
            digest = run_digest(cfg, s, coding, train, val, text)
            store = CheckpointStore(
                Path(checkpoint_dir) / digest,
                info={"base_model": cfg.base_model, "train_rows": len(train.user)},
            )
        settings = LoopSettings(
            epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            warmup_ratio=cfg.warmup_ratio,
            grad_accum_steps=cfg.grad_accum_steps,
            max_grad_norm=cfg.max_grad_norm,
            bf16=False,
            log_every_steps=cfg.log_every_steps,
            eval_every_steps=cfg.eval_every_steps,
            early_stopping_patience=cfg.early_stopping_patience,
            checkpoint_every_steps=cfg.checkpoint_every_steps,
            seed=cfg.seed,
            desc="finetune",
        )
        loop = train_loop(
            model,
            batches_of_epoch,
            collate,
            compute_loss,
            settings,
            device=torch.device("cpu"),
            evaluate=evaluate,
            score_key=score_key,
            checkpoints=store,
            log=log,
        )
        self.save((coding, items), model, model_dir, labels)
        if store:
            store.clear()
        return FinetuneResult(
            steps=loop.steps,
            train_seconds=loop.train_seconds,
            samples_per_second=loop.samples_per_second,
            final_loss=loop.final_loss,
            val_macro_f1=float("nan"),
            val_accuracy=float("nan"),
            history=loop.history,
            total_steps=loop.total_steps,
            resumed_from_step=loop.resumed_from_step,
            stopped_early=loop.stopped_early,
            best_step=loop.best_step,
            trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
            eval_seconds=loop.eval_seconds,
            val_metrics=dict(loop.eval_metrics),
        )

    # -- evaluate ----------------------------------------------------------------------------------
    def assess(
        self,
        model_dir: Path,
        splits: dict[str, pd.DataFrame],
        cfg: EvaluateConfig,
        champion: tuple[str, Path] | None = None,
    ) -> Evaluation:
        """Rating and ranking figures on the test split against the baselines, by slice, with the
        champion (version, its served artifact) scored the same way, and the blessing."""
        from components.core.contract import ContractError, contract_of

        (coding, _), model, labels = self.load_finetuned(model_dir)
        test = self._test_view(coding, splits)
        scores, ratings = mf.score_users(model, test.users)
        ours = self._figures(test, scores, ratings[test.row_of_pair, test.pairs.item])
        ours.update(self._text_alone(model, test))
        baselines = self._baselines(coding, splits, test)
        champ = None
        if champion is not None:
            version, artifact = champion
            from components.serving.serving import open_recommender

            served = open_recommender(artifact)
            if why := contract_of(self, labels).difference(contract_of(self, served.labels)):
                raise ContractError(
                    f"the champion (version {version}) is another kind of model ({why}): it "
                    "cannot be compared, and this model must not replace it"
                )
            c_scores, c_ratings = served.scores([coding.users[u - 1] for u in test.users], items=coding.items)
            figures = self._figures(test, c_scores, c_ratings[test.row_of_pair, test.pairs.item])
            champ = {"version": version, "metrics": _public(figures), "slices": figures.pop("_slices")}
        slices = ours.pop("_slices")
        blessing = self.decide(ours, baselines, slices, cfg, champ)
        primary = f"{self.settings.primary_metric}_at_{self.settings.k}"
        k = self.settings.k
        return Evaluation(
            labels=labels,
            model=_public(ours),
            baselines=baselines,
            blessing=blessing,
            slices=slices,
            champion=champ,
            primary=primary,
            headline=[f"ndcg_at_{k}", f"recall_at_{k}", f"map_at_{k}", "coverage", "rmse", "mae"],
        )

    def _test_view(self, coding: Coding, splits: dict[str, pd.DataFrame]) -> Any:
        from types import SimpleNamespace

        pairs = coding.interactions(splits["test"])
        known = pairs.user != mf.UNKNOWN
        pairs = mf.Interactions(pairs.user[known], pairs.item[known], pairs.rating[known])
        by_user = pairs.by_user()
        users = np.array(sorted(by_user), dtype=np.int64)
        seen = seen_by_user(coding, splits["train"], splits["val"])
        train = coding.interactions(splits["train"])
        return SimpleNamespace(
            pairs=pairs,
            users=users,
            relevant=[by_user[u] for u in users],
            seen=[seen.get(u, np.zeros(0, np.int64)) for u in users],
            row_of_pair=np.searchsorted(users, pairs.user),
            n_items=coding.n_items,
            train=train,
            train_counts=np.bincount(train.user, minlength=coding.n_users),
            item_counts=np.bincount(train.item, minlength=coding.n_items),
        )

    def _figures(self, test: Any, scores: np.ndarray, rated: np.ndarray) -> dict[str, Any]:
        """Ranking figures of these scores (rows: test.users), rating figures of `rated` (per test
        pair), and the slices."""
        k = self.settings.k
        top = mf.top_k(scores, test.seen, k)
        found = mf.ranking_metrics(top, test.relevant, test.n_items, k)
        per_user = found.pop("per_user")
        figures: dict[str, Any] = {**found, **mf.rating_metrics(rated, test.pairs.rating)}
        figures["_slices"] = self._slices(test, top, per_user, scores)
        return figures

    def _slices(
        self, test: Any, top: np.ndarray, per_user: dict[str, np.ndarray], scores: np.ndarray | None = None
    ) -> dict[str, dict[str, Any]]:
        """Users by activity (cold, light, heavy), items by popularity (head, tail) and cold-start items;
        each with recall@k (user slices: the mean over their users; item slices: the share of the
        slice's held-out interactions that made their user's top k)."""
        s, k, min_rows = self.settings, self.settings.k, 30
        key = f"recall_at_{k}"
        activity = test.train_counts[test.users]
        out: dict[str, dict[str, Any]] = {}
        for name, mask in (
            ("users: cold (<= 5 train interactions)", activity <= 5),
            (f"users: light (<= {s.light_user_max})", (activity > 5) & (activity <= s.light_user_max)),
            (f"users: heavy (>= {s.heavy_user_min})", activity >= s.heavy_user_min),
        ):
            rows = int(mask.sum())
            out[name] = (
                {
                    "rows": rows,
                    "scored": True,
                    key: float(per_user["recall"][mask].mean()),
                    f"ndcg_at_{k}": float(per_user["ndcg"][mask].mean()),
                }
                if rows >= min_rows
                else {"rows": rows, "scored": False, "note": f"fewer than {min_rows} users"}
            )
        counts = test.item_counts
        ranked = np.argsort(-counts[1:], kind="stable") + 1
        head = np.zeros(len(counts), bool)
        head[ranked[: max(1, int(round((len(counts) - 1) * s.head_item_share)))]] = True
        head &= counts > 0
        cold = counts == 0
        cold[mf.UNKNOWN] = False
        for name, chosen in (
            (f"items: head (top {s.head_item_share:.0%} by popularity)", head),
            ("items: tail", ~head & ~cold),
            ("items: cold start (no training interactions)", cold),
        ):
            hits = total = 0
            for row, items in enumerate(test.relevant):
                wanted = items[chosen[items]]
                total += len(wanted)
                hits += int(np.isin(wanted, top[row]).sum())
            out[name] = (
                {"rows": total, "scored": True, key: hits / total}
                if total >= min_rows
                else {
                    "rows": total,
                    "scored": False,
                    "note": f"fewer than {min_rows} interactions",
                    **({key: hits / total} if total else {}),
                }
            )
        # The new-items shelf: each user's cold-start test items ranked among the cold-start items
        # alone (by the item tower, as a "new arrivals" row would be), against a random shelf.
        if cold.any() and scores is not None:
            shelf = scores.astype(np.float32, copy=True)
            shelf[:, ~cold] = -np.inf
            shelf_top = mf.top_k(shelf, test.seen, k)
            hits = total = 0
            for row, items in enumerate(test.relevant):
                wanted = items[cold[items]]
                total += len(wanted)
                hits += int(np.isin(wanted, shelf_top[row]).sum())
            chance = min(k, int(cold.sum())) / int(cold.sum())
            out["items: cold start, ranked among new items only"] = {
                "rows": total,
                "scored": total >= min_rows,
                key: hits / total if total else 0.0,
                "chance": chance,
                **({} if total >= min_rows else {"note": f"fewer than {min_rows} interactions"}),
            }
        return out

    def _text_alone(self, model: Any, test: Any) -> dict[str, float]:
        """The item tower alone (every item scored by its text, as a cold-start item is): NDCG@k,
        next to a random ranking's, so cold-start recommendations are measured on every user."""
        import torch

        if model.text_tower is None:
            return {}
        k = self.settings.k
        with torch.inference_mode():
            vectors, biases = model.item_vectors(torch.zeros(test.n_items))
            users = model.user(torch.from_numpy(test.users))[:, model.dim :]
            scores = (biases[None, :, 1] + users @ vectors[:, model.dim :].T).numpy()
        alone = mf.ranking_metrics(mf.top_k(scores, test.seen, k), test.relevant, test.n_items, k)
        chance = np.random.default_rng(0).random(scores.shape).astype(np.float32)
        rand = mf.ranking_metrics(mf.top_k(chance, test.seen, k), test.relevant, test.n_items, k)
        return {
            f"text_tower_ndcg_at_{k}": alone[f"ndcg_at_{k}"],
            f"text_tower_recall_at_{k}": alone[f"recall_at_{k}"],
            f"random_ndcg_at_{k}": rand[f"ndcg_at_{k}"],
        }

    def _baselines(
        self, coding: Coding, splits: dict[str, pd.DataFrame], test: Any
    ) -> dict[str, dict[str, Any]]:
        """Trained here, on the same train split: global and item mean (ratings), most popular and
        item-kNN (ranking)."""
        k, train = self.settings.k, test.train
        out: dict[str, dict[str, Any]] = {}
        popular = np.repeat(mf.most_popular_scores(train, test.n_items), len(test.users), axis=0)
        knn = mf.item_knn_scores(
            train, test.users, coding.n_users, test.n_items, self.settings.knn_neighbours
        )
        for name, scores in (("most_popular", popular), ("item_knn", knn)):
            found = mf.ranking_metrics(mf.top_k(scores, test.seen, k), test.relevant, test.n_items, k)
            found.pop("per_user")
            out[name] = found
        item_mean = mf.item_mean_ratings(train, test.n_items)
        out["item_mean"] = mf.rating_metrics(item_mean[test.pairs.item], test.pairs.rating)
        out["global_mean"] = mf.rating_metrics(
            np.full(len(test.pairs.item), train.rating.mean()), test.pairs.rating
        )
        return out

    def decide(
        self,
        ours: dict[str, Any],
        baselines: dict[str, dict[str, Any]],
        slices: dict[str, dict[str, Any]],
        cfg: EvaluateConfig,
        champion: dict[str, Any] | None,
    ) -> Blessing:
        """Blessed when: the primary ranking metric beats most-popular and item-kNN's... only where
        evaluate.require_beat_baselines; RMSE beats the item mean; and, with a champion, the primary
        metric keeps evaluate.champion's rule and no scored slice's recall@k falls further than
        max_slice_regression."""
        primary = f"{self.settings.primary_metric}_at_{self.settings.k}"
        checks: list[Check] = []
        if cfg.require_beat_baselines:
            base = baselines["most_popular"][primary]
            checks.append(
                Check(f"{primary} > most_popular baseline", ours[primary], base, ours[primary] > base)
            )
            worst = baselines["item_mean"]["rmse"]
            checks.append(
                Check(
                    "rmse < item_mean baseline",
                    ours["rmse"],
                    worst,
                    bool(np.isfinite(ours["rmse"]) and ours["rmse"] < worst),
                )
            )
        if champion is not None:
            policy = cfg.champion
            best = champion["metrics"][primary]
            needed = best - policy.tolerance if policy.allow_within_tolerance else best + policy.min_delta
            how = f"within {policy.tolerance}" if policy.allow_within_tolerance else f"by {policy.min_delta}"
            checks.append(
                Check(
                    f"{primary} vs champion ({how})",
                    ours[primary],
                    needed,
                    ours[primary] >= needed,
                    note=f"on {primary}",
                )
            )
            key = f"recall_at_{self.settings.k}"
            for name, mine in slices.items():
                theirs = champion["slices"].get(name, {})
                if mine.get("scored") and theirs.get("scored"):
                    floor = theirs[key] - policy.max_slice_regression
                    checks.append(
                        Check(
                            f"slice '{name}' regression <= {policy.max_slice_regression}",
                            mine[key],
                            floor,
                            mine[key] >= floor,
                        )
                    )
        return Blessing(blessed=all(c.passed for c in checks), checks=checks)

    # -- export ------------------------------------------------------------------------------------
    def export_onnx(self, model_dir: Path, path: Path, opset: int) -> Path:
        """The scorer: `user` (row indices, int64 [batch]) in; `scores` (ranking) and `ratings`
        (predicted), both [batch, items], out."""
        import onnx
        import torch

        _, model, _ = self.load_finetuned(model_dir)
        scorer = mf.scoring_module(model).eval()
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            torch.onnx.export(
                scorer,
                (torch.tensor([1, 2], dtype=torch.int64),),
                str(path),
                input_names=["user"],
                output_names=["scores", "ratings"],
                dynamic_axes={"user": {0: "batch"}, "scores": {0: "batch"}, "ratings": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        onnx.checker.check_model(str(path), full_check=True)
        return path

    def write_serving(self, model_dir: Path, out_dir: Path, variant: str, runtime: str) -> None:
        """serving.json (ids, titles, labels) and seen.npz (each user's known items, never recommended
        again) next to model.onnx."""
        from components.serving.serving import SERVING_FILE

        info = json.loads((Path(model_dir) / INFO_FILE).read_text())
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SERVING_FILE).write_text(
            json.dumps(
                {
                    "task": "recsys",
                    "variant": variant,
                    "runtime": runtime,
                    "labels": info["labels"],
                    "users": info["users"],
                    "items": info["items"],
                    "titles": info["titles"],
                    "genres": info["genres"],
                    "k": self.settings.k,
                }
            )
        )

    def export_scorer(
        self,
        model_dir: Path,
        out_dir: Path,
        work: Path,
        splits: dict[str, pd.DataFrame],
        opset: int,
        max_abs_diff: float,
    ) -> dict[str, Any]:
        """Export, check parity with PyTorch on every test user (scores, ratings, the top k), write
        the served artifact, and load it in a fresh process without torch (the smoke check)."""
        import shutil

        from components.serving.serving import MODEL_FILE, SEEN_FILE, open_recommender

        graph = self.export_onnx(model_dir, work / "fp32.onnx", opset)
        self.write_serving(model_dir, out_dir, "fp32", "onnxruntime")
        shutil.copyfile(graph, out_dir / MODEL_FILE)
        (coding, _), model, _ = self.load_finetuned(model_dir)
        seen = seen_by_user(coding, *splits.values())
        seen.pop(mf.UNKNOWN, None)  # users with no training rows are unknown to the model: nothing to hide
        users = np.array(sorted(seen), dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum([len(seen[u]) for u in users])]).astype(np.int64)
        np.savez_compressed(
            out_dir / SEEN_FILE,
            users=users,
            indptr=indptr,
            items=np.concatenate([seen[u] for u in users]) if len(users) else np.zeros(0, np.int64),
        )
        test_users = np.array(
            sorted({coding.user_row[u] for u in splits["test"][data.USER] if u in coding.user_row})
        )
        ref_scores, ref_ratings = mf.score_users(model, test_users)
        served = open_recommender(out_dir)
        ids = [coding.users[u - 1] for u in test_users]
        got_scores, got_ratings = served.scores(ids)
        diff = float(
            max(
                np.abs(ref_scores - got_scores).max(initial=0.0),
                np.abs(ref_ratings - got_ratings).max(initial=0.0),
            )
        )
        k = self.settings.k
        no_seen = [np.zeros(0, np.int64)] * len(test_users)
        agreement = (
            float((mf.top_k(ref_scores, no_seen, k) == mf.top_k(got_scores, no_seen, k)).all(axis=1).mean())
            if len(test_users)
            else 1.0
        )
        smoke = smoke_check(out_dir, ids[:3] + ["no-such-user"])
        return {
            "rows": len(test_users),
            "max_abs_diff": diff,
            "top_k_agreement": agreement,
            "passed": diff <= max_abs_diff and agreement >= 0.99,
            "smoke": smoke,
        }


def run_digest(
    cfg: Any,
    settings: Any,
    coding: Coding,
    train: mf.Interactions,
    val: mf.Interactions,
    text: np.ndarray | None,
) -> str:
    """What shapes a training run (its checkpoints live under this name): the settings that change the
    weights (not threads, logging or where checkpoints go), the users and catalogue, every training
    and validation interaction with its rating, and the item texts' embeddings."""
    from components.training.classifier import _NOT_SHAPING

    shaping = {k: v for k, v in cfg.model_dump().items() if k not in _NOT_SHAPING}
    digest = hashlib.sha256(
        json.dumps(
            [shaping, settings.model_dump(), coding.users, coding.items], sort_keys=True, default=str
        ).encode()
    )
    for part in (train, val):
        digest.update(np.ascontiguousarray(np.stack([part.user, part.item])).tobytes())
        digest.update(np.ascontiguousarray(part.rating).tobytes())
    if text is not None:
        digest.update(np.ascontiguousarray(text).tobytes())
    return digest.hexdigest()[:16]


def _public(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if not k.startswith("_")}


_SMOKE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from serving import open_recommender
model = open_recommender(sys.argv[2])
found = model.recommend(json.loads(sys.argv[3]), top=5)
print(json.dumps({"recommended": [[r["item"] for r in rows] for rows in found],
                  "torch_loaded": "torch" in sys.modules}))
"""


def smoke_check(artifact: Path, users: list[str]) -> dict[str, Any]:
    """The artifact in a fresh process with onnxruntime alone (no torch): top 5 for a few users and
    an unknown one (who gets the popularity-like ranking)."""
    import subprocess
    import sys

    import components.serving.serving as serving

    proc = subprocess.run(
        [sys.executable, "-c", _SMOKE, str(Path(serving.__file__).parent), str(artifact), json.dumps(users)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        return {"passed": False, "error": proc.stderr.strip().splitlines()[-1:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["passed"] = (
        len(out["recommended"]) == len(users)
        and all(len(r) == 5 for r in out["recommended"])
        and not out["torch_loaded"]
    )
    return out


def summary_of(result: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(result).items() if k != "history"}

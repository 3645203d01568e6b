"""The recommender's data: interactions (user, item, rating, time) and an item catalogue (title,
genres), read from MovieLens 100k inside the installed `recbole` wheel or from a user's CSV /
Parquet file; the per-user time split; the derived columns validation checks; profile and drift.

MovieLens 100k is read from the wheel at run time and never copied into the repository: its licence
forbids redistribution.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.core.dataset import LABEL
from components.core.errors import DataError, FmpipeError
from components.tasks.base import CleanReport, ReadReport

USER, ITEM, RATING, TIME = "user", "item", "rating", "timestamp"
PAIR = "pair"  # user and item: the same pair in two splits is leakage
USER_ROWS = "user_interactions"  # the user's interactions in the whole table
ITEM_SEEN = "item_in_train"  # 1 when the item has training interactions (0: cold start)
TITLE, GENRES = "title", "genres"
MOVIELENS = "movielens-100k"


def movielens_folder() -> Path:
    """MovieLens 100k inside the installed recbole wheel (found without importing recbole)."""
    from importlib import metadata

    try:
        folder = Path(metadata.distribution("recbole").locate_file("recbole/dataset_example/ml-100k"))
    except metadata.PackageNotFoundError:
        raise FmpipeError(
            "the data set movielens-100k comes from the recbole wheel, which is not installed: "
            "run `make setup`"
        ) from None
    if not (folder / "ml-100k.inter").is_file():
        raise FmpipeError(f"the recbole wheel has no MovieLens 100k at {folder}")
    return folder


def resolve_source(source: str) -> Path:
    if source == MOVIELENS:
        return movielens_folder()
    path = Path(source)
    if not path.exists():
        raise FmpipeError(f"data.source={source!r}: no such file or folder (or use the built-in {MOVIELENS})")
    return path


def _read_recbole(path: Path) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, header `name:type`), columns named without the types."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":  # as text, like a CSV: parsing is the reader's job below
            frame = pd.read_parquet(path, dtype_backend="numpy_nullable")  # ids with gaps stay integers
            return frame.astype(object).where(frame.notna(), None).map(lambda v: v if v is None else str(v))
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(
                path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False, na_values=[""]
            )
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(str(path), None, "readable_table", f"cannot be read as {suffix[1:]}: {exc}") from None
    raise DataError(str(path), None, "readable_table", f"unknown file type {suffix!r} (CSV, TSV or Parquet)")


def read(source: Path, cfg: Any) -> tuple[pd.DataFrame, pd.DataFrame | None, ReadReport]:
    """(interactions with the canonical columns, the item catalogue or None, report). cfg: the
    task.recsys settings (column names, items file). Values stay as read: what is wrong with them
    is for validation to name."""
    if source.is_dir():
        inter = next(iter(sorted(source.glob("*.inter"))), None)
        if inter is None:
            raise DataError(
                str(source), None, "readable_table", "a folder source needs a RecBole .inter file"
            )
        raw = _read_recbole(inter)
        columns = {"user_id": USER, "item_id": ITEM, "rating": RATING, "timestamp": TIME}
        items_path = next(iter(sorted(source.glob("*.item"))), None)
        items = (
            _read_recbole(items_path).rename(columns={"item_id": ITEM, "movie_title": TITLE, "class": GENRES})
            if items_path
            else None
        )
        where = str(inter)
    else:
        raw = _read_table(source)
        columns = {cfg.user_column: USER, cfg.item_column: ITEM, cfg.timestamp_column: TIME}
        if cfg.rating_column:
            columns[cfg.rating_column] = RATING
        items = None
        if cfg.items_file:
            raw_items = _read_table(Path(cfg.items_file))
            if cfg.item_column not in raw_items.columns:
                raise DataError(
                    cfg.items_file,
                    cfg.item_column,
                    "required_column",
                    f"the items file has no column {cfg.item_column!r} (columns: "
                    f"{list(raw_items.columns)[:10]})",
                )
            items = raw_items.rename(
                columns={cfg.item_column: ITEM, cfg.title_column: TITLE, cfg.genres_column: GENRES}
            )
        where = str(source)
    missing = [name for name in columns if name not in raw.columns]
    if missing:
        raise DataError(
            where,
            missing[0],
            "required_column",
            f"no column {missing[0]!r} (columns: {list(raw.columns)[:10]}; set the task.recsys column names)",
        )
    frame = raw[list(columns)].rename(columns=columns)
    if RATING not in frame:
        frame[RATING] = "1"  # implicit feedback: every interaction is a positive
    frame[RATING] = pd.to_numeric(frame[RATING], errors="coerce")
    frame[TIME] = parse_times(frame[TIME])
    for column in (USER, ITEM):  # ids as trimmed text; empty or missing: None, for validation to name
        frame[column] = [None if pd.isna(v) or not str(v).strip() else str(v).strip() for v in frame[column]]
    if items is not None:
        items = catalogue_table(items, year_column="release_year")
    report = ReadReport(
        rows_read=len(frame),
        counts={
            "unparseable_timestamps": int(frame[TIME].isna().sum()),
            "unparseable_ratings": int(frame[RATING].isna().sum()),
            "missing_ids": int(frame[USER].isna().sum() + frame[ITEM].isna().sum()),
        },
    )
    return frame, items, report


def parse_times(values: pd.Series) -> pd.Series:
    """Seconds since the epoch (float; NaN where a value is not a time): numbers are epoch seconds,
    anything else is parsed as a date and time."""
    numbers = pd.to_numeric(values, errors="coerce")
    dates = pd.to_datetime(values.where(numbers.isna()), errors="coerce", utc=True, format="mixed")
    # Timestamp.timestamp() per value: placeholder dates (0001-01-01, 9999-12-31) stay numbers, which
    # the future rule then names, where nanosecond arithmetic would overflow.
    seconds = pd.Series([d.timestamp() if pd.notna(d) else np.nan for d in dates], index=values.index)
    return numbers.fillna(seconds).astype(float)


def catalogue_table(items: pd.DataFrame, year_column: str = "") -> pd.DataFrame:
    """One row per item: id, title and genres (text the item tower embeds)."""
    out = pd.DataFrame({ITEM: items[ITEM].astype(str).str.strip()})
    title = items[TITLE].fillna("").astype(str) if TITLE in items else pd.Series("", index=items.index)
    if year_column and year_column in items:
        year = items[year_column].fillna("").astype(str)
        title = title.where(year == "", title + " (" + year + ")")
    out[TITLE] = title.to_numpy()
    out[GENRES] = items[GENRES].fillna("").astype(str).to_numpy() if GENRES in items else ""
    return out.drop_duplicates(ITEM).reset_index(drop=True)


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, CleanReport]:
    """Add the columns every later step uses. Nothing is dropped: a missing id, an out-of-range
    rating or a duplicated event is an error that validation names, not a row to lose quietly."""
    report = CleanReport(rows_in=len(frame), rows_out=len(frame))
    frame = frame.copy()
    frame[LABEL] = frame[RATING].map(lambda r: None if pd.isna(r) else f"{r:g}")
    frame[PAIR] = frame[USER].fillna("?") + "\x1f" + frame[ITEM].fillna("?")
    # Rows without a user count nowhere (NaN: the user_id_present rule names them, not this one).
    frame[USER_ROWS] = frame.groupby(USER)[ITEM].transform("size")
    return frame.reset_index(drop=True), report


def sample_users(frame: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """Whole users, chosen by a seeded hash of their id, until about `cap` interactions: a smaller
    data set with every kept user's full history (ingest.sample_cap)."""
    from components.core.splitting import stable_fraction

    sizes = frame.groupby(USER).size()
    order = sorted(sizes.index, key=lambda user: stable_fraction(str(user), seed))
    kept = sizes[order].cumsum()
    users = kept.index[: int(np.searchsorted(kept.to_numpy(), cap)) + 1]
    return frame[frame[USER].isin(set(users)) | frame[USER].isna()]  # rows without a user: for validation


def time_split(
    frame: pd.DataFrame,
    val_fraction: float,
    test_fraction: float,
    source: str,
    min_users: int,
    sample_cap: int = 0,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Per user, the latest interactions are test, the ones before them val, the rest train (ties in
    time broken by item id), so no model is scored on the past of what it trained on. A user with
    fewer than three interactions stays in train (validation's per-user minimum names them)."""
    if frame.empty:
        raise DataError(source, USER, "rows_after_cleaning", "no interactions")
    if sample_cap and len(frame) > sample_cap:
        frame = sample_users(frame, sample_cap, seed)
    users = frame[USER].nunique()
    if users < min_users:
        raise DataError(
            source,
            USER,
            "min_users",
            f"{users} distinct user(s); a recommender needs at least {min_users} (task.recsys.min_users)",
        )
    ordered = frame.assign(_t=frame[TIME].fillna(-np.inf)).sort_values([USER, "_t", ITEM], kind="stable")
    newest = ordered.groupby(USER, dropna=False).cumcount(ascending=False).to_numpy()
    size = ordered[USER_ROWS].to_numpy()
    # At least one test and one val row per user of three or more, and always one training row left.
    n_test = np.where(size >= 3, np.minimum(np.maximum(1, np.round(size * test_fraction)), size - 2), 0)
    n_val = np.where(
        size >= 3, np.minimum(np.maximum(1, np.round(size * val_fraction)), size - 1 - n_test), 0
    )
    where = np.where(newest < n_test, "test", np.where(newest < n_test + n_val, "val", "train"))
    ordered = ordered.drop(columns="_t")
    train = ordered[where == "train"]
    seen_items = set(train[ITEM].dropna())
    splits = {}
    for name in ("train", "val", "test"):
        part = ordered[where == name].copy()
        part[ITEM_SEEN] = part[ITEM].isin(seen_items).astype(int)
        splits[name] = part.reset_index(drop=True)
    return splits


def expectations(cfg: Any, now: float | None = None) -> list[Any]:
    """The recommender's rules on each split table (cfg: task.recsys)."""
    import great_expectations.expectations as gxe

    now = time.time() if now is None else now
    return [
        gxe.ExpectColumnValuesToNotBeNull(column=USER),
        gxe.ExpectColumnValuesToNotBeNull(column=ITEM),
        gxe.ExpectColumnValuesToNotBeNull(column=TIME),
        gxe.ExpectColumnValuesToBeBetween(column=TIME, max_value=now + cfg.max_clock_skew_s),
        gxe.ExpectColumnValuesToNotBeNull(column=RATING),
        gxe.ExpectColumnValuesToBeBetween(column=RATING, min_value=cfg.rating_min, max_value=cfg.rating_max),
        gxe.ExpectColumnValuesToBeBetween(column=USER_ROWS, min_value=cfg.min_user_interactions),
        gxe.ExpectColumnMeanToBeBetween(column=ITEM_SEEN, min_value=1.0 - cfg.max_cold_item_share),
    ]


RULE_NAMES = {
    ("expect_column_values_to_not_be_null", USER): "user_id_present",
    ("expect_column_values_to_not_be_null", ITEM): "item_id_present",
    ("expect_column_values_to_not_be_null", TIME): "timestamp_parseable",
    ("expect_column_values_to_be_between", TIME): "timestamp_not_in_future",
    ("expect_column_values_to_not_be_null", RATING): "rating_numeric",
    ("expect_column_values_to_be_between", RATING): "rating_in_range",
    ("expect_column_values_to_be_between", USER_ROWS): "min_interactions_per_user",
    ("expect_column_mean_to_be_between", ITEM_SEEN): "max_cold_start_item_share",
    ("expect_column_proportion_of_unique_values_to_be_between", PAIR): "no_duplicate_interactions",
    ("expect_column_values_to_be_unique", PAIR): "no_pair_in_two_splits",
}

SETTINGS = {
    "rating_in_range": "task.recsys.rating_min / rating_max",
    "timestamp_not_in_future": "task.recsys.max_clock_skew_s",
    "min_interactions_per_user": "task.recsys.min_user_interactions",
    "max_cold_start_item_share": "task.recsys.max_cold_item_share",
    "no_duplicate_interactions": "validate_data.max_duplicate_rate",
}


# -- profile and drift -----------------------------------------------------------------------------
ACTIVITY_EDGES = [5, 20, 50, 100, 200]  # interactions per user, bucket edges
POPULARITY_EDGES = [1, 5, 20, 50, 100]  # interactions per item, bucket edges


def _buckets(counts: pd.Series, edges: list[int]) -> dict[str, int]:
    which = np.digitize(counts.to_numpy(), edges)
    labels = (
        [f"<{edges[0]}"]
        + [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:], strict=False)]
        + [f">={edges[-1]}"]
    )
    found = pd.Series(which).value_counts()
    return {labels[i]: int(found.get(i, 0)) for i in range(len(labels))}


def profile(train: pd.DataFrame) -> dict[str, Any]:
    """The training interactions' shape: ratings, activity per user, popularity per item, the ids."""
    from components.tasks.base import label_counts

    return {
        "rows": len(train),
        "label_counts": label_counts(train),
        "activity": _buckets(train.groupby(USER).size(), ACTIVITY_EDGES),
        "popularity": _buckets(train.groupby(ITEM).size(), POPULARITY_EDGES),
        "users": sorted(train[USER].dropna().unique().tolist()),
        "items": sorted(train[ITEM].dropna().unique().tolist()),
    }


def drift_figures(reference: dict[str, Any], new: dict[str, Any]) -> dict[str, float]:
    """Rating PSI, activity PSI, popularity PSI, and the shares of new users and new items."""
    from components.tasks.base import population_stability_index as psi

    def new_share(key: str) -> float:
        now = set(new.get(key, []))
        return len(now - set(reference.get(key, []))) / max(len(now), 1)

    return {
        "label_psi": psi(reference["label_counts"], new["label_counts"]),
        "activity_psi": psi(reference["activity"], new["activity"]),
        "popularity_psi": psi(reference["popularity"], new["popularity"]),
        "new_user_share": new_share("users"),
        "new_item_share": new_share("items"),
    }

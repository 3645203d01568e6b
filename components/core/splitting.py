"""The split every task shares: stratified train/val/test by a seeded hash of each example's key,
stable as the data set grows. The task says what the key is (a normalized text, an image's
content hash), so examples that are the same example never land in two splits.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from components.core.config import IngestConfig
from components.core.dataset import LABEL, SPLITS
from components.core.errors import DataError


def split_by_key(
    frame: pd.DataFrame, keys: pd.Series, cfg: IngestConfig, source: str, label_name: str = LABEL
) -> dict[str, pd.DataFrame]:
    """Stratified train/val/test split, stable as the data grows (after an optional sample cap).

    The unit is an example, not a row: rows with the same key (a text up to case and spacing, an
    image's content hash) form one group with one seeded-hash rank, and a group goes to one split
    whatever its labels, so no example is shared between splits.
    Per class (a group counts under its most frequent label), the lowest-ranked
    groups go to test, the next to val, the rest to train. As a data set grows, ranks don't
    change, so only groups at a class's cut-off move: a champion is not scored on texts it was
    trained on. label_name is the user's name for the label column, for error messages.
    """
    if frame.empty:
        raise DataError(source, None, "rows_after_cleaning",
                        "no rows left after cleaning (all inputs or labels empty or missing)")
    counts = frame[LABEL].value_counts()
    if len(counts) < 2:
        raise DataError(source, label_name, "at_least_two_classes",
                        f"only one label value ({counts.index[0]!r}) after cleaning")
    if counts.min() < 3:
        raise DataError(source, label_name, "min_rows_per_class",
                        f"label {counts.idxmin()!r} has {counts.min()} row(s); need at least 3 "
                        "to split into train/val/test")
    df = frame.assign(_key=keys, _rank=keys.map(lambda key: stable_fraction(key, cfg.seed)))
    if cfg.sample_cap and len(df) > cfg.sample_cap:
        df = _capped(df, cfg.sample_cap, cfg.seed)
    groups = _key_groups(df)
    place: dict[str, str] = {}
    for label, members in groups.groupby("label", sort=True):
        ordered = members.sort_values("_rank", kind="stable").index
        n_test = max(1, round(len(ordered) * cfg.test_fraction))
        n_val = max(1, round(len(ordered) * cfg.val_fraction))
        if len(ordered) - n_test - n_val < 1:
            raise DataError(source, label_name, "stratified_split",
                            f"label {label!r} has {len(ordered)} distinct text(s): too few for "
                            f"{n_test} test, {n_val} val and at least one training text")
        place.update(dict.fromkeys(ordered[:n_test], "test"))
        place.update(dict.fromkeys(ordered[n_test:n_test + n_val], "val"))
        place.update(dict.fromkeys(ordered[n_test + n_val:], "train"))
    where = df["_key"].map(place)
    # Rows in rank order: a fixed shuffle that does not depend on the source file's order.
    return {name: df[where == name].sort_values("_rank", kind="stable").drop(columns=["_key", "_rank"])
            .reset_index(drop=True) for name in SPLITS}


def _key_groups(df: pd.DataFrame) -> pd.DataFrame:
    """One row per normalized text (index), with its rank and its most frequent label (ties:
    the first label by name)."""
    counts = df.groupby(["_key", LABEL], sort=False).agg(n=("_rank", "size"), _rank=("_rank", "first"))
    counts = counts.reset_index().sort_values(["_key", "n", LABEL], ascending=[True, False, True])
    return counts.drop_duplicates("_key").set_index("_key").rename(columns={LABEL: "label"})


def _capped(df: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """About `cap` rows with each class's share kept, chosen by a second seeded hash so that
    the sample, too, stays the same as the data set grows."""
    pick = df["_key"].map(lambda key: stable_fraction(key, seed + 1))
    keep = []
    for _, rows in df.assign(_pick=pick).groupby(LABEL, sort=True):
        n = max(3, round(cap * len(rows) / len(df)))
        keep.append(rows.sort_values("_pick", kind="stable").head(n))
    return pd.concat(keep).drop(columns="_pick")


def stable_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by key and seed, the same on every machine and Python run."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64

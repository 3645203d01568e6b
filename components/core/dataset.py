"""The data set record every step shares: canonical columns, the split files, the ingest report
and the profile drift is measured against. Ingest writes them; every later step reads them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

TEXT, LABEL = "text", "label"  # canonical column names inside the pipeline
SPLITS = ("train", "val", "test")
REPORT_FILE = "ingest_report.json"
CATALOGUE_FILE = "items.parquet"  # the recommender's item catalogue, next to the splits


def read_catalogue(data_dir: Path) -> pd.DataFrame | None:
    path = Path(data_dir) / CATALOGUE_FILE
    return pd.read_parquet(path) if path.exists() else None


def file_md5(path: Path) -> str:
    """MD5 of the file's bytes: the same hash DVC records for a single file."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_md5(path: Path) -> str:
    """A file's MD5, or for a folder the MD5 of its files' relative paths and MD5s (sorted): the
    same content gives the same digest wherever the folder lies."""
    path = Path(path)
    if not path.is_dir():
        return file_md5(path)
    digest = hashlib.md5()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{file_md5(item)}\n".encode())
    return digest.hexdigest()


def write_splits(out_dir: Path, splits: dict[str, pd.DataFrame]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        part.to_parquet(out_dir / f"{name}.parquet", index=False)


def read_splits(data_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(Path(data_dir) / f"{name}.parquet") for name in SPLITS}


def label_set(declared: list[str], data_dir: Path) -> list[str]:
    """The declared labels, or (none declared) the labels the training split holds, sorted."""
    if declared:
        return list(declared)
    return sorted(pd.read_parquet(Path(data_dir) / "train.parquet", columns=[LABEL])[LABEL].dropna().unique())


# The profile of a training split (the task makes it): what a later run's drift is measured against.
PROFILE_FILE = "data_profile.json"

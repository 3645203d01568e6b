"""The data set record every step shares: canonical columns, the split files, the ingest report
and the profile drift is measured against. Ingest writes them; every later step reads them.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TEXT, LABEL = "text", "label"  # canonical column names inside the pipeline
SPLITS = ("train", "val", "test")
REPORT_FILE = "ingest_report.json"


def file_md5(path: Path) -> str:
    """MD5 of the file's bytes: the same hash DVC records for a single file."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
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
    return sorted(pd.read_parquet(Path(data_dir) / "train.parquet", columns=[LABEL])[LABEL].unique())


# The profile of a training split: what a later run's drift is measured against. (Text-specific
# today: lengths and vocabulary; it moves to the task when tasks become plug-ins.)
PROFILE_FILE = "data_profile.json"
_WORD = re.compile(r"\w+")
MAX_LENGTH_SAMPLE = 5000
MAX_VOCABULARY = 50_000


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def profile(train: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """What drift is measured against: label counts, text lengths (a sample), vocabulary."""
    lengths = train[TEXT].str.len().to_numpy()
    if len(lengths) > MAX_LENGTH_SAMPLE:
        lengths = np.random.default_rng(seed).choice(lengths, MAX_LENGTH_SAMPLE, replace=False)
    vocab = Counter(w for text in train[TEXT] for w in words(text))
    return {
        "rows": len(train),
        "label_counts": {str(k): int(v) for k, v in train[LABEL].value_counts().items()},
        "text_lengths": sorted(int(x) for x in lengths),
        "vocabulary": [w for w, _ in vocab.most_common(MAX_VOCABULARY)],
    }

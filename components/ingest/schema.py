"""A data set's schema, inferred once at its first ingest and kept beside it (as TFX's SchemaGen does).

`data/<name>.schema.yaml` says which columns hold the text and the label, the label set, the
text-length bounds (with headroom over what was seen) and the class shares seen. It is plain YAML
for people to read and edit, committed to git next to the `.dvc` file, so it is versioned with the
data. Later versions of the data set are validated against it; params.yaml keeps only the rules
that hold for every data set, and a setting there still wins over the schema.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from components.core.config import DataConfig, Params
from components.core.dataset import LABEL, TEXT, file_md5
from components.core.errors import DataError, FmpipeError
from components.tasks.text_data import read_table

SCHEMA_SUFFIX = ".schema.yaml"
TEXT_HEADROOM = 1.5  # the longest text seen, times this, is the schema's bound (rounded up to 100s)


@dataclass
class DataSchema:
    name: str
    text_column: str
    label_column: str
    labels: list[str]
    text_min_chars: int
    text_max_chars: int
    task: str = "text-classification"
    # What the first version showed (for people; the rules above are what later versions must meet).
    observed: dict = field(default_factory=dict)


def schema_path(repo_root: Path, name: str) -> Path:
    return repo_root / "data" / f"{name}{SCHEMA_SUFFIX}"


def load_schema(path: Path) -> DataSchema | None:
    if not path.exists():
        return None
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return DataSchema(**raw)
    except (yaml.YAMLError, TypeError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise FmpipeError(f"{path} is not a valid schema ({first}); fix it, or delete it to infer "
                          "it again at the next ingest") from None


def write_schema(path: Path, schema: DataSchema) -> None:
    header = (f"# The schema of data set '{schema.name}', inferred by fmpipe at its first ingest.\n"
              "# Later versions of the data set are validated against it: edit it to change what\n"
              "# they must satisfy (a setting in params.yaml still wins). Commit it with the .dvc file.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(asdict(schema), sort_keys=False, allow_unicode=True))


def infer_schema(source: Path, name: str, data: DataConfig) -> tuple[DataSchema, list[str]]:
    """The schema of the data in `source` (columns given in `data`, else guessed), and notes on
    what was guessed."""
    frame, _ = read_table(source, data)
    notes = []
    text_column, label_column = frame.attrs["text_column"], frame.attrs["label_column"]
    for role, given, found in (("text", data.text_column, text_column), ("label", data.label_column,
                                                                         label_column)):
        if not given:
            how = "found by its name" if found == role else "guessed: pass --" + role + "-column to change it"
            notes.append(f"{role} column '{found}' ({how})")
    texts = frame[TEXT].dropna().astype(str)
    labels = frame[LABEL].dropna()
    labels = labels[labels != ""]
    longest = int(texts.str.len().max()) if len(texts) else 0
    shares = (labels.value_counts(normalize=True).sort_index().round(4)).to_dict()
    schema = DataSchema(
        name=name, text_column=text_column, label_column=label_column,
        labels=sorted(labels.unique().tolist()), text_min_chars=1,
        text_max_chars=max(100, math.ceil(longest * TEXT_HEADROOM / 100) * 100),
        observed={"file": source.name, "md5": file_md5(source), "rows": len(frame),
                  "longest_text_chars": longest, "class_shares": shares,
                  "inferred_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    if len(schema.labels) < 2:
        raise DataError(str(source), label_column, "at_least_two_classes",
                        f"only {len(schema.labels)} label value(s): not a labelled data set")
    return schema, notes


def ensure_schema(source: Path, name: str, repo_root: Path, data: DataConfig
                  ) -> tuple[DataSchema, Path, list[str]]:
    """The data set's stored schema; at its first ingest (or when columns other than the stored
    ones are given), one inferred from `source` and written. Returns (schema, its path, notes)."""
    path = schema_path(repo_root, name)
    stored = load_schema(path)
    if stored is not None and data.text_column in ("", stored.text_column) \
            and data.label_column in ("", stored.label_column):
        return stored, path, []
    columns = DataConfig(**{**data.model_dump(),
                            "text_column": data.text_column or (stored.text_column if stored else ""),
                            "label_column": data.label_column or (stored.label_column if stored else "")})
    schema, notes = infer_schema(source, name, columns)
    write_schema(path, schema)
    return schema, path, [("new schema" if stored is None else "schema re-inferred for the new columns"),
                          *notes]


def apply_schema(params: Params, schema: DataSchema) -> None:
    """What the data set's schema says, wherever params leave it open (empty / 0)."""
    params.data.text_column = params.data.text_column or schema.text_column
    params.data.label_column = params.data.label_column or schema.label_column
    checks = params.validate_data
    checks.labels = checks.labels or list(schema.labels)
    checks.text_max_chars = checks.text_max_chars or schema.text_max_chars

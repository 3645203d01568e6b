"""The task protocol: what a kind of model (text, image, ...) supplies to the task-agnostic steps.

The steps, the DAG, the runner, the registry and promotion know nothing of the modality; they
ask the task. A task is one module in this package with one class implementing `Task`; the
`task.kind` setting in params picks it (components/tasks/__init__.py: get_task).

Hooks, by the step that calls them:
- ingest: `resolve_source`, `read`, `clean`, `profile`; `key_column` names the column that says
  when two examples are the same example (split grouping, duplicates, leakage).
- validate_data: `expectations` (Great Expectations on the split tables), `drift`;
  `exclusive_columns` name columns whose values must each stay in one split (audio: the speaker).
- pretrain: `pretrain`, where `unlabelled_pretraining` is true (audio: wav2vec 2.0 on unlabelled clips).
- finetune: `load_pretrained`, `prepare`, `collate`, `predict_logits`, `save`.
- evaluate: `load_finetuned`, `baselines`, `slice_masks`, `plots`, `explain`.
- export_onnx: `export_onnx`, `optimize_graph`, `timing_feeds`, `write_serving`, `canaries`.
- register / serving: `contract`; the artifact's serving.json names the task for the runtime.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

LABEL = "label"  # the label column in every task's split tables


@dataclass
class ReadReport:
    """What reading the source found, by task-defined counter (e.g. lines with invalid UTF-8)."""

    rows_read: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class CleanReport:
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    changed: dict[str, int] = field(default_factory=dict)  # rule -> rows modified

    def drop(self, frame: pd.DataFrame, mask: pd.Series, reason: str) -> pd.DataFrame:
        """frame without the rows in mask, counted under reason."""
        self.dropped[reason] = int(mask.sum())
        return frame[~mask]


@dataclass
class Prepared:
    """Training inputs in the form the task's collate takes, plus what the run should report."""

    features: Any                 # indexable by row: token ids, decoded pixels, ...
    lengths: list[int]            # per row, for length-grouped batches (constant where shapes are fixed)
    report: dict[str, float] = field(default_factory=dict)  # e.g. truncated_fraction, max_length


@dataclass
class DriftFigure:
    name: str
    value: float
    threshold: float
    passed: bool


class Task(ABC):
    """One kind of base model. Instances are built from params (`get_task(params)`)."""

    kind: str                       # the task.kind that selects it
    ranking: bool = False           # True: not a classifier; finetune, evaluate and export call the
                                    # task's fit / assess / export_scorer (components/tasks/recsys.py)
    contract_task: str              # the registry contract's task name, e.g. text-classification
    input_column: str               # the column of the split tables the model reads
    key_column: str                 # the column whose equal values are "the same example"
    input_type: str                 # what a caller sends the served model (contract), e.g. string
    builtin_sources: dict[str, Any] = {}   # data-set names that resolve without a path
    exclusive_columns: tuple[str, ...] = ()  # a value of these (e.g. a speaker) never in two splits
    unlabelled_pretraining: bool = False   # the pretrain step calls `pretrain` (self-supervised)
    transformer_graph: bool = True         # int8 quantization (NNCF) treats the graph as a transformer's
    rule_names: dict[tuple[str, str], str] = {}  # (expectation type, column) -> the rule's name in reports

    # -- data ------------------------------------------------------------------------------------
    @abstractmethod
    def resolve_source(self, source: str) -> Path:
        """A built-in data-set name or a path, as an existing path (file or folder)."""

    @abstractmethod
    def read(self, source: Path) -> tuple[pd.DataFrame, ReadReport]:
        """The source as a table with the task's canonical columns (input, `label`, ...)."""

    @abstractmethod
    def clean(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, CleanReport]:
        """Counted cleaning rules; every dropped row is counted under a reason."""

    @abstractmethod
    def group_keys(self, frame: pd.DataFrame) -> pd.Series:
        """Per row, the key that keeps near-identical examples in one split."""

    def split(self, frame: pd.DataFrame, cfg: Any, source: str, label_name: str = LABEL
              ) -> dict[str, pd.DataFrame]:
        """train / val / test (cfg: the ingest settings). Classifiers: stratified by label, grouped by
        `group_keys` (components/core/splitting.py); the recommender splits each user's history by time."""
        from components.core.splitting import split_by_key

        keys = self.group_keys(frame) if len(frame) else frame[LABEL]
        return split_by_key(frame, keys, cfg, source, label_name)

    def catalogue(self) -> pd.DataFrame | None:
        """A table ingest keeps next to the splits (the recommender's items); None for classifiers."""
        return None

    @abstractmethod
    def profile(self, train: pd.DataFrame, seed: int) -> dict[str, Any]:
        """A small JSON record of the training split that later runs measure drift against."""

    @abstractmethod
    def drift(self, reference: dict[str, Any], new: dict[str, Any], train: pd.DataFrame) -> list[DriftFigure]:
        """Drift figures of the new profile against the reference one."""

    @abstractmethod
    def expectations(self, labels: list[str], cfg: Any) -> list[Any]:
        """Great Expectations expectations every split table must meet (fresh objects per call);
        cfg: the validate_data settings."""

    def column_names(self, params: Any) -> dict[str, str]:
        """The pipeline's column names -> the user's, for error messages (label -> sentiment)."""
        names = {self.input_column: params.data.text_column, LABEL: params.data.label_column}
        return {k: v for k, v in names.items() if v}

    def settings_for(self, expectation_type: str, column: str | None) -> str | None:
        """The setting that changes a failed rule's bound, for the error message."""
        return None

    # -- model -----------------------------------------------------------------------------------
    @abstractmethod
    def check_checkpoint(self, base_model: str, setting: str) -> None:
        """One clear line (FmpipeError) when `base_model` names nothing this task can load here."""

    @abstractmethod
    def resolve_checkpoint(self, base_model: str) -> str:
        """What `base_model` loads from (a path, or a name for models built from a config)."""

    @abstractmethod
    def load_pretrained(self, base_model: str, labels: list[str], *, dropout: float | None = None,
                        attn_implementation: str | None = None) -> tuple[Any, Any]:
        """(processor, model) with a fresh classification head for `labels`."""

    @abstractmethod
    def load_finetuned(self, model_dir: Path) -> tuple[Any, Any, list[str]]:
        """(processor, model, labels) of a model `save` wrote."""

    @abstractmethod
    def prepare(self, processor: Any, model: Any, inputs: list[Any], cfg: Any) -> Prepared:
        """Turn the training inputs into features once, before the epochs (cfg: the finetune
        settings; text takes its max_length there)."""

    @abstractmethod
    def collate(self, processor: Any, features: Any, rows: np.ndarray,
                rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Model inputs (tensors) for these rows; rng given = a training batch (augment if set)."""

    @abstractmethod
    def predict_logits(self, model: Any, processor: Any, inputs: list[Any], batch_size: int = 128,
                       bf16: bool = False) -> np.ndarray:
        """Logits per input, in input order."""

    @abstractmethod
    def save(self, processor: Any, model: Any, out_dir: Path, labels: list[str]) -> None:
        """Save the model, its processor and its label order for load_finetuned."""

    def pretrain(self, splits: dict[str, pd.DataFrame], params: Any, out_dir: Path, log: Any = None,
                 checkpoint_dir: Path | None = None) -> Any:
        """Self-supervised pretraining on the splits' inputs without their labels (and what
        pretrain.source adds); saves a checkpoint finetune starts from into out_dir and returns a
        dataclass of its figures. Only where `unlabelled_pretraining` is true."""
        raise NotImplementedError(f"the {self.kind} task has no self-supervised pretraining")

    def pretrain_source_md5(self, source: str) -> str:
        """The content digest of pretrain.source (one clear line when it is missing): a rerun with
        other pretraining data is another run."""
        from components.core.dataset import data_md5

        return data_md5(self.resolve_source(source))

    def freeze_for_speed(self, model: Any) -> None:
        """What finetune.freeze_embeddings freezes (nothing by default)."""
        return None

    def freeze_lower_layers(self, model: Any, n: int) -> None:
        """What finetune.freeze_layers freezes: the input side and the bottom n layers (nothing here)."""
        return None

    def training_shortcuts(self, model: Any) -> contextlib.AbstractContextManager:
        """Exact shortcuts for the training loop (same logits and gradients, less work); none by default."""
        return contextlib.nullcontext()

    # -- evaluate --------------------------------------------------------------------------------
    @abstractmethod
    def baselines(self, train_inputs: list[Any], train_labels: list[str], test_inputs: list[Any],
                  seed: int = 0) -> dict[str, list[str]]:
        """Predictions of the simple models the trained one must beat, by name."""

    @abstractmethod
    def slice_masks(self, test: pd.DataFrame) -> dict[str, np.ndarray]:
        """Boolean row masks of the test table: the slices metrics are reported on."""

    def plots(self, test: pd.DataFrame, predicted: list[str], out_dir: Path) -> list[Path]:
        """The task's own pictures of the test results (PNG files written into out_dir)."""
        return []

    # -- export and serving ----------------------------------------------------------------------
    @abstractmethod
    def export_onnx(self, model_dir: Path, path: Path, opset: int) -> Path:
        """The plain fp32 ONNX graph, dynamic batch axis, checked."""

    def optimize_graph(self, src: Path, dst: Path, model_dir: Path) -> dict[str, int] | None:
        """A fused graph and its fused-operator counts; None when the task has no optimizer."""
        return None

    @abstractmethod
    def timing_feeds(self, model_dir: Path, batch: int) -> dict[str, np.ndarray]:
        """Fixed inputs for timing the variants at this batch size."""

    @abstractmethod
    def write_serving(self, model_dir: Path, out_dir: Path, variant: str, runtime: str) -> None:
        """serving.json and what the runtime needs next to model.onnx (no torch at serving)."""

    def explain(self, model: Any, processor: Any, inputs: list[Any], targets: list[int]
                ) -> list[dict[str, Any]]:
        """Attributions of each input towards its target class, for the model card (captum): text
        gives {"tokens", "attributions"}, images {"overlay_png"}; a task without them gives {}."""
        return [{} for _ in inputs]

    @abstractmethod
    def canaries(self, work: Path) -> list[Any]:
        """Inputs the served artifact must answer in a fresh process (JSON-able: texts, paths)."""


# -- helpers tasks share ---------------------------------------------------------------------------
def population_stability_index(expected: dict[str, int], actual: dict[str, int]) -> float:
    """PSI over the union of categories; a small floor keeps empty bins finite."""
    import math

    keys = sorted(set(expected) | set(actual))
    e_total, a_total = max(sum(expected.values()), 1), max(sum(actual.values()), 1)
    psi = 0.0
    for key in keys:
        e = max(expected.get(key, 0) / e_total, 1e-4)
        a = max(actual.get(key, 0) / a_total, 1e-4)
        psi += (a - e) * math.log(a / e)
    return psi


def label_counts(train: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in train[LABEL].value_counts().items()}


def majority_baseline(train_labels: list[str], rows: int) -> list[str]:
    """The most frequent training label, for every row."""
    values, counts = np.unique(np.asarray(train_labels), return_counts=True)
    return [str(values[counts.argmax()])] * rows


def logits_only(model: Any, input_name: str) -> Any:
    """The model as a plain module taking one input tensor and returning the logits tensor (what an
    exported classifier graph outputs)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, inputs: Any) -> Any:
            return self.model(**{input_name: inputs}).logits

    return LogitsOnly().eval()


def clean_by_content(frame: pd.DataFrame, content_key: str, decode_error: str
                     ) -> tuple[pd.DataFrame, CleanReport]:
    """The cleaning rules of file-based tasks (images, audio), counted: drop rows without a label,
    repeated files (same content, same label) and files given two labels. Files that do not decode
    stay: validation names them."""
    report = CleanReport(rows_in=len(frame))
    df = frame.copy()
    df = report.drop(df, df[LABEL].isna() | (df[LABEL].astype(str).str.strip() == ""), "missing_label")
    repeated = df.duplicated([content_key, LABEL], keep="first") & (df[decode_error] == "")
    df = report.drop(df, repeated, "exact_duplicate")
    df = report.drop(df, df.groupby(content_key)[LABEL].transform("nunique") > 1, "conflicting_labels")
    report.rows_out = len(df)
    return df.reset_index(drop=True), report


def export_checked(model: Any, example: tuple[Any, ...], names: list[str], dynamic: dict[str, dict[int, str]],
                   path: Path, opset: int) -> Path:
    """torch.onnx.export (the TorchScript exporter: fast, exact) of `model` with these inputs and
    dynamic axes, a `logits` output with a dynamic batch, then onnx.checker's full check."""
    import onnx
    import torch

    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, example, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes={**dynamic, "logits": {0: "batch"}}, opset_version=opset, dynamo=False)
    onnx.checker.check_model(str(path), full_check=True)
    return path

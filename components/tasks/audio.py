"""The audio task: keyword spotting (or any clip classification) with transformers' Wav2Vec2,
pretrained self-supervised on unlabelled audio (masked spans, contrastive and diversity loss over
a learned quantiser: `Wav2Vec2ForPreTraining`), then fine-tuned with a classification head
(`Wav2Vec2ForSequenceClassification`): transfer learning, as for text and images.

Its data code is in audio_data.py; the built-in data set is made by audio_synth.py. The served
preprocessor (decode, mono, resample, cut or pad, normalise) is serving.py's OnnxAudioClassifier,
which runs without torch; training uses the very same functions, so what was trained on is what
is served.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from components.core.errors import FmpipeError
from components.tasks.audio_data import (
    ACTIVE,
    AUDIO,
    CHANNELS,
    CLIPPED,
    DECODE_ERROR,
    DURATION,
    FAMILY,
    PATH,
    RMS_DB,
    SAMPLE_RATE,
    SHA,
    SILENT,
    SPEAKER,
    SYNTH_SET,
    clean_clips,
    read_clips,
    resolve_source,
)
from components.tasks.base import (
    LABEL,
    DriftFigure,
    Prepared,
    Task,
    export_checked,
    label_counts,
    logits_only,
    majority_baseline,
    population_stability_index,
)

if TYPE_CHECKING:
    from components.core.config import AudioTaskConfig, Params

PREPROCESSOR_FILE = "preprocessor.json"
LABELS_FILE = "labels.json"
KDE_RECORDINGS = "kde-recordings"  # pretrain.source: real speech from Debian's ktuberling / klettres data


def _wav2vec2(conv: int, hidden: int, layers: int, **extra: Any) -> Any:
    """A Wav2Vec2 built from a config: wav2vec2-base's shape (7 strided convolutions, 20 ms frames,
    a transformer over them), narrower and shallower so that it trains on 2 CPU cores."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        conv_dim=(conv,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        feat_extract_norm="group", do_stable_layer_norm=False, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=4, intermediate_size=4 * hidden, num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=8, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, classifier_proj_size=hidden // 2,
        # The quantiser and the contrastive task of pretraining, sized for ~50 frames a second.
        num_codevector_groups=2, num_codevectors_per_group=64, codevector_dim=hidden // 2,
        proj_codevector_dim=hidden // 2, num_negatives=20, mask_time_prob=0.05, mask_time_length=4,
        mask_time_min_masks=1, diversity_loss_weight=0.1, **extra)


# Models built from a config (random init): name -> (conv channels, hidden size, layers).
CONFIG_MODELS = {"wav2vec2-small": (64, 128, 2), "wav2vec2-tiny": (16, 32, 1)}


@dataclass
class AudioProcessor:
    """How a clip becomes the model's input: decoded, mono, resampled to `sampling_rate`, cut to its
    loudest `max_samples` or centred between zeros, normalised (serving.py: audio_input)."""

    sampling_rate: int = 16_000
    max_samples: int = 16_000

    def save(self, out_dir: Path) -> None:
        (Path(out_dir) / PREPROCESSOR_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, model_dir: Path) -> AudioProcessor:
        return cls(**json.loads((Path(model_dir) / PREPROCESSOR_FILE).read_text()))


def clips_array(inputs: list[Any], processor: AudioProcessor) -> np.ndarray:
    """Encoded clips (bytes or paths) as one float32 array (n, max_samples), exactly as served."""
    from components.serving.serving import audio_input

    out = np.empty((len(inputs), processor.max_samples), dtype=np.float32)
    for i, item in enumerate(inputs):
        out[i] = audio_input(item, processor.sampling_rate, processor.max_samples)
    return out


# -- MFCC: the baseline's features, in numpy ------------------------------------------------------
def mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters evenly spaced on the mel scale, (n_mels, n_fft // 2 + 1)."""
    def mel(hz: Any) -> Any:
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def hz(m: Any) -> Any:
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(20.0), mel(rate / 2), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - low) / (centre - low)
    falling = (high - bins[None]) / (high - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def mfcc(clip: np.ndarray, rate: int, n_mfcc: int = 13, n_mels: int = 40) -> np.ndarray:
    """MFCCs (frames, n_mfcc) of a mono clip: 25 ms Hamming windows every 10 ms, power spectrum,
    log mel energies, DCT-II."""
    from scipy.fft import dct

    win, hop = int(0.025 * rate), int(0.010 * rate)
    if len(clip) < win:
        clip = np.pad(clip, (0, win - len(clip)))
    starts = np.arange(0, len(clip) - win + 1, hop)
    frames = clip[starts[:, None] + np.arange(win)[None]] * np.hamming(win)[None]
    n_fft = 1 << (win - 1).bit_length()
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft
    energies = np.log(power @ mel_filterbank(rate, n_fft, n_mels).T + 1e-10)
    return dct(energies, type=2, axis=1, norm="ortho")[:, :n_mfcc]


def mfcc_statistics(clip: np.ndarray, rate: int) -> np.ndarray:
    """A fixed-length summary of a clip: the mean and standard deviation over time of its MFCCs and
    of their deltas, plus the MFCCs of each third of the clip (a coarse time order)."""
    coefficients = mfcc(clip, rate)
    delta = np.diff(coefficients, axis=0) if len(coefficients) > 1 else np.zeros_like(coefficients)
    thirds = [part.mean(axis=0) for part in np.array_split(coefficients, 3)]
    return np.concatenate([coefficients.mean(0), coefficients.std(0), delta.mean(0), delta.std(0), *thirds])


@dataclass
class AudioTask(Task):
    """Audio classification: one encoded clip in, one label out."""

    params: Params | None = None
    kind = "audio"
    contract_task = "audio-classification"
    input_column = AUDIO
    key_column = SHA
    input_type = "binary"
    exclusive_columns = (SPEAKER,)
    unlabelled_pretraining = True
    rule_names = {("expect_column_values_to_be_in_set", DECODE_ERROR): "audio_decodes",
                  ("expect_column_values_to_be_between", SAMPLE_RATE): "sample_rate",
                  ("expect_column_values_to_be_between", CHANNELS): "channels",
                  ("expect_column_values_to_be_between", DURATION): "duration",
                  ("expect_column_values_to_be_between", SILENT): "silence_ratio",
                  ("expect_column_values_to_be_between", CLIPPED): "clipping_ratio",
                  ("expect_column_values_to_be_unique", SPEAKER): "no_speaker_in_two_splits"}
    builtin_sources = {SYNTH_SET: SYNTH_SET}

    @property
    def cfg(self) -> AudioTaskConfig:
        from components.core.config import AudioTaskConfig

        return self.params.task.audio if self.params is not None else AudioTaskConfig()

    @property
    def settings(self) -> dict[str, Any]:
        """What shapes training besides the finetune section (part of the checkpoint key)."""
        return self.cfg.model_dump()

    def processor(self) -> AudioProcessor:
        return AudioProcessor(self.cfg.sampling_rate, round(self.cfg.clip_seconds * self.cfg.sampling_rate))

    # -- data ------------------------------------------------------------------------------------
    def resolve_source(self, source: str) -> Path:
        return resolve_source(source)

    def read(self, source: Path) -> tuple[pd.DataFrame, Any]:
        return read_clips(Path(source))

    def clean(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        return clean_clips(frame)

    def group_keys(self, frame: pd.DataFrame) -> pd.Series:
        """The speaker where the manifest names one (a voice lands in one split only: the test
        measures unseen voices), else the clip's content."""
        speaker = frame[SPEAKER].fillna("").astype(str)
        return speaker.where(speaker != "", "clip:" + frame[SHA])

    def split(self, frame: pd.DataFrame, cfg: Any, source: str, label_name: str = LABEL
              ) -> dict[str, pd.DataFrame]:
        """Whole speakers per split, where the manifest names them: the test measures voices never
        heard in training. Voices are drawn per family (espeak, flite, real) when every family has
        three voices or more, so each family is heard in each split; else from all voices at once.
        Without speakers, clips are split as images are (stratified by label, grouped by content)."""
        from components.core.errors import DataError
        from components.core.splitting import split_by_key, stable_fraction

        speakers = frame[SPEAKER].fillna("").astype(str) if SPEAKER in frame else None
        if speakers is None or (speakers == "").any():
            return split_by_key(frame, self.group_keys(frame) if len(frame) else frame[LABEL], cfg, source,
                                label_name)
        split_by_key(frame, frame[SHA], cfg, source, label_name)  # the label checks: 2+ classes, 3+ clips
        if speakers.nunique() < 3:
            raise DataError(source, SPEAKER, "min_speakers",
                            f"{speakers.nunique()} speaker(s): each speaker stays in one split, so train, "
                            "val and test need at least 3")
        if cfg.sample_cap and len(frame) > cfg.sample_cap:  # a fixed sample, stable as the set grows
            pick = frame[SHA].map(lambda sha: stable_fraction(sha, cfg.seed + 1))
            frame = frame.loc[pick.sort_values(kind="stable").index[: cfg.sample_cap]]
            speakers = speakers.loc[frame.index]
        families = frame[FAMILY].fillna("").astype(str) if FAMILY in frame else pd.Series("", frame.index)
        by_family = families.nunique() > 1 and speakers.groupby(families).nunique().min() >= 3
        strata = families if by_family else pd.Series("", frame.index)
        place: dict[str, str] = {}
        for _, voices in speakers.groupby(strata):
            ranked = sorted(set(voices), key=lambda voice: stable_fraction(voice, cfg.seed))
            n_test = max(1, round(len(ranked) * cfg.test_fraction))
            n_val = max(1, round(len(ranked) * cfg.val_fraction))
            place.update(dict.fromkeys(ranked[:n_test], "test"))
            place.update(dict.fromkeys(ranked[n_test: n_test + n_val], "val"))
            place.update(dict.fromkeys(ranked[n_test + n_val:], "train"))
        where = speakers.map(place)
        rank = frame[SHA].map(lambda sha: stable_fraction(sha, cfg.seed))  # a fixed shuffle of the rows
        return {name: frame[where == name].assign(_rank=rank).sort_values("_rank", kind="stable")
                .drop(columns="_rank").reset_index(drop=True) for name in ("train", "val", "test")}

    def profile(self, train: pd.DataFrame, seed: int) -> dict[str, Any]:
        """Label counts and samples of per-clip duration and loudness."""
        rng = np.random.default_rng(seed)

        def sample(column: str) -> list[float]:
            values = train[column].dropna().to_numpy(dtype=float)
            if len(values) > 5000:
                values = rng.choice(values, 5000, replace=False)
            return sorted(float(v) for v in values)

        return {"rows": len(train), "label_counts": label_counts(train), "duration": sample(DURATION),
                "rms_db": sample(RMS_DB)}

    def drift(self, reference: dict[str, Any], new: dict[str, Any], train: pd.DataFrame) -> list[DriftFigure]:
        from scipy.stats import ks_2samp

        from components.core.config import DriftConfig

        drift_cfg = self.params.validate_data.drift if self.params is not None else DriftConfig()
        label_psi = population_stability_index(reference["label_counts"], new["label_counts"])
        figures = [DriftFigure("label_psi", label_psi, drift_cfg.max_label_psi,
                               label_psi <= drift_cfg.max_label_psi)]
        bound = self.cfg.min_ks_pvalue
        for name in ("duration", "rms_db"):
            if reference.get(name) and new.get(name):
                p = float(ks_2samp(reference[name], new[name]).pvalue)
                figures.append(DriftFigure(f"{name}_ks_pvalue", p, bound, p >= bound))
        return figures

    def expectations(self, labels: list[str], cfg: Any) -> list[Any]:
        import great_expectations.expectations as gxe

        c = self.cfg
        return [
            gxe.ExpectTableColumnsToMatchSet(column_set=[AUDIO, LABEL, SHA, PATH], exact_match=False),
            gxe.ExpectColumnValuesToBeInSet(column=DECODE_ERROR, value_set=[""]),
            gxe.ExpectColumnValuesToBeBetween(column=SAMPLE_RATE, min_value=c.min_sample_rate,
                                              max_value=c.max_sample_rate),
            gxe.ExpectColumnValuesToBeBetween(column=CHANNELS, min_value=1, max_value=c.max_channels),
            gxe.ExpectColumnValuesToBeBetween(column=DURATION, min_value=c.min_duration_s,
                                              max_value=c.max_duration_s),
            gxe.ExpectColumnValuesToBeBetween(column=SILENT, min_value=0, max_value=c.max_silent_fraction),
            gxe.ExpectColumnValuesToBeBetween(column=CLIPPED, min_value=0, max_value=c.max_clipped_fraction),
        ]

    def settings_for(self, expectation_type: str, column: str | None) -> str | None:
        return {DECODE_ERROR: "the clip itself (re-export it as WAV, FLAC or OGG, or remove it)",
                SAMPLE_RATE: "task.audio.min_sample_rate / max_sample_rate",
                CHANNELS: "task.audio.max_channels", DURATION: "task.audio.min_duration_s / max_duration_s",
                SILENT: "task.audio.max_silent_fraction (a clip of digital silence: remove it, or label "
                        "background noise as _silence_)",
                CLIPPED: "task.audio.max_clipped_fraction (re-record the clip at a lower gain)",
                SPEAKER: "the manifest's speaker column (the split keeps each speaker in one split)",
                }.get(column or "")

    # -- model -----------------------------------------------------------------------------------
    def check_checkpoint(self, base_model: str, setting: str) -> None:
        if base_model in CONFIG_MODELS:
            return
        path = Path(base_model).expanduser()
        if path.is_dir() and (path / "config.json").exists():
            return
        raise FmpipeError(f"{setting}={base_model!r} is not an audio model: use one of "
                          f"{', '.join(CONFIG_MODELS)}, or a folder with a transformers Wav2Vec2 model "
                          "(config.json)")

    def resolve_checkpoint(self, base_model: str) -> str:
        return base_model if base_model in CONFIG_MODELS else str(Path(base_model).expanduser())

    def load_pretrained(self, base_model: str, labels: list[str], *, dropout: float | None = None,
                        attn_implementation: str | None = None) -> tuple[AudioProcessor, Any]:
        from transformers import Wav2Vec2ForSequenceClassification

        head = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}}
        # SpecAugment-style time masks while fine-tuning (wav2vec 2.0's recipe), a light dose.
        augment = {"mask_time_prob": self.cfg.mask_time_prob, "mask_time_length": 4, "mask_time_min_masks": 1}
        if base_model in CONFIG_MODELS:
            config = _wav2vec2(*CONFIG_MODELS[base_model], **head)
            config.update(augment)
            return self.processor(), Wav2Vec2ForSequenceClassification(config)
        source = Path(base_model).expanduser()
        model = Wav2Vec2ForSequenceClassification.from_pretrained(str(source), ignore_mismatched_sizes=True,
                                                                  **head, **augment)
        processor = AudioProcessor.load(source) if (source / PREPROCESSOR_FILE).exists() else self.processor()
        return processor, model

    def load_finetuned(self, model_dir: Path) -> tuple[AudioProcessor, Any, list[str]]:
        from transformers import Wav2Vec2ForSequenceClassification

        model_dir = Path(model_dir)
        labels = json.loads((model_dir / LABELS_FILE).read_text())["labels"]
        model = Wav2Vec2ForSequenceClassification.from_pretrained(str(model_dir))
        return AudioProcessor.load(model_dir), model.eval(), labels

    def prepare(self, processor: AudioProcessor, model: Any, inputs: list[Any], cfg: Any) -> Prepared:
        """Decode every training clip once, as the model takes it (float32, max_samples each)."""
        clips = clips_array(inputs, processor)
        return Prepared(clips, [1] * len(clips), {"clip_samples": processor.max_samples})

    def collate(self, processor: AudioProcessor, features: Any, rows: Any = None,
                rng: np.random.Generator | None = None) -> dict[str, Any]:
        """input_values; a training batch (rng given) is shifted in time by up to task.audio.shift_ms
        (zeros come in at the edge), so a keyword is heard at other places in the second."""
        import torch

        clips = features if rows is None else features[rows]
        if rng is not None and self.cfg.shift_ms:
            limit = int(self.cfg.shift_ms / 1000 * processor.sampling_rate)
            shifted = np.zeros_like(clips)
            for i, shift in enumerate(rng.integers(-limit, limit + 1, len(clips))):
                if shift >= 0:
                    shifted[i, shift:] = clips[i, : clips.shape[1] - shift]
                else:
                    shifted[i, :shift] = clips[i, -shift:]
            clips = shifted
        return {"input_values": torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32))}

    def predict_logits(self, model: Any, processor: AudioProcessor, inputs: list[Any], batch_size: int = 128,
                       bf16: bool = False) -> np.ndarray:
        import torch

        from components.core.device import autocast_context, pick_device

        device = pick_device()
        model.eval().to(device)
        out = []
        with torch.inference_mode(), autocast_context(device, bf16):
            for start in range(0, len(inputs), batch_size):
                batch = self.collate(processor, clips_array(inputs[start: start + batch_size], processor))
                out.append(model(input_values=batch["input_values"].to(device)).logits.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(model.config.id2label)), dtype=np.float32)

    def save(self, processor: AudioProcessor, model: Any, out_dir: Path, labels: list[str]) -> None:
        model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
        processor.save(out_dir)
        (Path(out_dir) / LABELS_FILE).write_text(json.dumps({"labels": labels}, indent=2))

    # -- pretraining on unlabelled audio -------------------------------------------------------------
    def pretrain(self, splits: dict[str, pd.DataFrame], params: Params, out_dir: Path, log: Any = None,
                 checkpoint_dir: Path | None = None) -> dict[str, Any]:
        """Wav2Vec2's self-supervised pretraining (audio.py: pretrain_wav2vec2) on the training clips
        without their labels plus the real recordings pretrain.source names; the val clips (and a
        tenth of the recordings) are the held-out set."""
        extra = unlabelled_files(params.pretrain.source, self.cfg.pretrain_real_clips) \
            if params.pretrain.source else []
        rng = np.random.default_rng(params.pretrain.seed)
        held_extra = set(rng.choice(len(extra), len(extra) // 10, replace=False).tolist()) if extra else set()
        train = splits["train"][AUDIO].tolist() + [f for i, f in enumerate(extra) if i not in held_extra]
        heldout = splits["val"][AUDIO].tolist() + [extra[i] for i in sorted(held_extra)]
        return pretrain_wav2vec2(train, heldout, params.pretrain, self.cfg, self.processor(), out_dir,
                                 log=log, checkpoint_dir=checkpoint_dir,
                                 real_clips=len(extra) - len(held_extra))

    def pretrain_source_md5(self, source: str) -> str:
        from components.core.dataset import file_md5

        digest = hashlib.md5()
        for path in unlabelled_files(source, self.cfg.pretrain_real_clips):
            digest.update(f"{path.name}\0{file_md5(path)}\n".encode())
        return digest.hexdigest()

    # -- evaluate --------------------------------------------------------------------------------
    def baselines(self, train_inputs: list[Any], train_labels: list[str], test_inputs: list[Any],
                  seed: int = 0) -> dict[str, list[str]]:
        """Majority class, and logistic regression on MFCC statistics (mfcc_statistics)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        processor = self.processor()

        def features(inputs: list[Any]) -> np.ndarray:
            clips = clips_array(inputs, processor)
            return np.stack([mfcc_statistics(c, processor.sampling_rate) for c in clips])

        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5, random_state=seed))
        model.fit(features(train_inputs), train_labels)
        return {"majority": majority_baseline(train_labels, len(test_inputs)),
                "mfcc_logreg": [str(p) for p in model.predict(features(test_inputs))]}

    def slice_masks(self, test: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per voice family (the manifest's family column: espeak, flite, real ...) and by how long
        the sound in the clip lasts (task.audio.active_buckets, seconds)."""
        masks: dict[str, np.ndarray] = {}
        families = test[FAMILY].fillna("").astype(str) if FAMILY in test else None
        if families is not None and families.nunique() > 1:
            for family in sorted(set(families) - {""}):
                masks[f"family {family}"] = (families == family).to_numpy()
        active = test[ACTIVE].fillna(-1).to_numpy(dtype=float)
        edges = [0.0, *self.cfg.active_buckets, None]
        for low, high in zip(edges[:-1], edges[1:], strict=True):
            name = f"sound {low:g}-{high:g}s" if high is not None else f"sound {low:g}s+"
            masks[name] = (active >= low) & (active < high) if high is not None else active >= low
        return masks

    def plots(self, test: pd.DataFrame, predicted: list[str], out_dir: Path) -> list[Path]:
        """Log-mel spectrograms of misclassified test clips, each titled true -> predicted (speaker)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        processor = self.processor()
        wrong = [i for i, (t, p) in enumerate(zip(test[LABEL], predicted, strict=True)) if t != p][:12]
        cols = 4
        rows = max(1, -(-len(wrong) // cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        clips = clips_array([test[AUDIO].iloc[i] for i in wrong], processor) if wrong else []
        for ax, i, clip in zip(axes.flat, wrong, clips, strict=False):
            rate = processor.sampling_rate
            n_fft = 512
            frames = np.lib.stride_tricks.sliding_window_view(clip, n_fft)[:: rate // 100] * np.hanning(n_fft)
            power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
            mels = np.log(power @ mel_filterbank(rate, n_fft, 40).T + 1e-6)
            ax.imshow(mels.T, origin="lower", aspect="auto", cmap="magma")
            speaker = test[SPEAKER].iloc[i] if SPEAKER in test else ""
            ax.set_title(f"{test[LABEL].iloc[i]} -> {predicted[i]}\n{speaker}", fontsize=7)
        fig.suptitle(f"misclassified test clips (log-mel spectrograms): {len(wrong)} shown")
        fig.tight_layout()
        path = Path(out_dir) / "misclassified_spectrograms.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]

    # -- export and serving ----------------------------------------------------------------------
    def export_onnx(self, model_dir: Path, path: Path, opset: int) -> Path:
        """input_values (batch, samples) in, logits out; batch and length axes are dynamic."""
        import torch

        processor, model, _ = self.load_finetuned(model_dir)
        example = torch.randn((2, processor.max_samples), generator=torch.Generator().manual_seed(0))
        dynamic = {"input_values": {0: "batch", 1: "samples"}}
        return export_checked(logits_only(model, "input_values"), (example,), ["input_values"], dynamic, path,
                              opset)

    def timing_feeds(self, model_dir: Path, batch: int) -> dict[str, np.ndarray]:
        processor = AudioProcessor.load(model_dir)
        shape = (batch, processor.max_samples)
        return {"input_values": np.random.default_rng(batch).standard_normal(shape).astype(np.float32)}

    def write_serving(self, model_dir: Path, out_dir: Path, variant: str, runtime: str) -> None:
        from components.serving.serving import SERVING_FILE

        processor = AudioProcessor.load(model_dir)
        labels = json.loads((Path(model_dir) / LABELS_FILE).read_text())["labels"]
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / SERVING_FILE).write_text(json.dumps(
            {"task": self.kind, "labels": labels, **asdict(processor), "variant": variant,
             "runtime": runtime}))

    def canaries(self, work: Path) -> list[Any]:
        """Three valid clips of other shapes than the training data: near-silence (16 kHz WAV), a
        stereo tone at 44.1 kHz (FLAC), and an 8-bit chirp at 8 kHz (WAV) of 2 s."""
        import soundfile as sf

        folder = Path(work) / "canaries"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        t44 = np.arange(44_100) / 44_100
        t8 = np.arange(16_000) / 8_000
        tone = 0.3 * np.sin(2 * np.pi * 440 * t44)
        clips = {"quiet.wav": (0.001 * rng.standard_normal(16_000), 16_000, "PCM_16"),
                 "tone.flac": (np.stack([tone, 0.5 * tone], axis=1), 44_100, "PCM_16"),
                 "chirp.wav": (0.5 * np.sin(2 * np.pi * (200 + 300 * t8) * t8), 8_000, "PCM_U8")}
        for name, (samples, rate, subtype) in clips.items():
            sf.write(folder / name, samples, rate, subtype=subtype)
        return [str(folder / name) for name in clips]


def unlabelled_files(source: str, limit: int = 0) -> list[Path]:
    """pretrain.source for audio: `kde-recordings` (the ktuberling and klettres recordings Debian
    installs), or a folder whose WAV / FLAC / OGG files are read without labels; at most `limit`
    (0 = all), taken evenly across the sorted list."""
    from components.tasks.audio_data import AUDIO_SUFFIXES
    from components.tasks.audio_synth import REAL_FOLDERS, real_recordings

    if source == KDE_RECORDINGS:
        files = real_recordings(limit)
        if not files:
            raise FmpipeError(f"pretrain.source={KDE_RECORDINGS}: no recordings under "
                              f"{' or '.join(REAL_FOLDERS)}: apt-get install ktuberling-data klettres-data "
                              "(or `make speech-data`)")
        return files
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FmpipeError(f"pretrain.source={source!r}: for audio, name {KDE_RECORDINGS} or a folder of "
                          "unlabelled WAV / FLAC / OGG clips")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FmpipeError(f"pretrain.source={source!r}: the folder holds no WAV, FLAC or OGG clips")
    if limit and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]
    return files


@dataclass
class AudioPretrainResult:
    architecture: str
    parameters: int
    steps: int
    train_seconds: float
    samples_per_second: float
    final_loss: float
    heldout_contrastive_before: float   # mean contrastive loss per masked frame, fixed masks
    heldout_contrastive: float
    heldout_accuracy_before: float      # how often the true quantised frame beats every distractor
    heldout_accuracy: float
    train_clips: int
    real_clips: int
    heldout_clips: int
    resumed_from_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _masks_and_negatives(model: Any, batch: int, samples: int, mask_prob: float, seed: int) -> dict[str, Any]:
    """Wav2Vec2's span masks and sampled distractors for a batch, from a seed (transformers draws
    them from numpy's global generator, so it is seeded here for each batch: repeatable)."""
    import torch
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    frames = int(model._get_feat_extract_output_lengths(samples))
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        mask = _compute_mask_indices((batch, frames), mask_prob, model.config.mask_time_length, min_masks=2)
        negatives = _sample_negative_indices((batch, frames), model.config.num_negatives, mask)
    finally:
        np.random.set_state(state)
    return {"mask_time_indices": torch.from_numpy(mask),
            "sampled_negative_indices": torch.from_numpy(negatives)}


def pretrain_wav2vec2(train_inputs: list[Any], heldout_inputs: list[Any], cfg: Any, audio_cfg: Any,
                      processor: AudioProcessor, out_dir: Path, log: Any = None,
                      checkpoint_dir: Path | None = None, real_clips: int = 0) -> AudioPretrainResult:
    """Self-supervised pretraining of Wav2Vec2ForPreTraining (cfg.base_model: a config name, or a
    folder to continue from) on unlabelled clips; the held-out contrastive loss is measured with the
    same masks and distractors before and after. Saves model + preprocessor to out_dir: finetune's
    starting point."""
    import torch
    from transformers import Wav2Vec2ForPreTraining

    from components.core.device import autocast_context, pick_device
    from components.training.checkpoint import CheckpointStore
    from components.training.loop import LoopSettings, seed_everything, train_loop

    if not train_inputs or not heldout_inputs:
        raise FmpipeError("pretrain needs training clips and held-out clips (the val split)")
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device()
    if cfg.base_model in CONFIG_MODELS:
        config = _wav2vec2(*CONFIG_MODELS[cfg.base_model])
        config.update({"mask_time_prob": audio_cfg.pretrain_mask_prob})
        model = Wav2Vec2ForPreTraining(config)
    else:
        model = Wav2Vec2ForPreTraining.from_pretrained(str(Path(cfg.base_model).expanduser()))
    clips = clips_array(train_inputs, processor)
    held = clips_array(heldout_inputs[: cfg.heldout_max_rows], processor)
    mask_prob = audio_cfg.pretrain_mask_prob
    batch_size = cfg.batch_size

    def with_masks(x: np.ndarray, seed: int) -> dict[str, Any]:
        return {"input_values": torch.from_numpy(np.ascontiguousarray(x)),
                **_masks_and_negatives(model, len(x), x.shape[1], mask_prob, seed)}

    held_batches = [with_masks(held[s: s + 64], 1_000_003 + s) for s in range(0, len(held), 64)]

    def heldout() -> tuple[float, float]:
        """(mean contrastive loss per masked frame, accuracy of picking the true frame)."""
        model.eval()
        loss_sum, correct, frames = 0.0, 0.0, 0
        with torch.inference_mode(), autocast_context(device, cfg.bf16):
            for batch in held_batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model(**batch)
                masked = int(batch["mask_time_indices"].sum())
                loss_sum += float(out.contrastive_loss)
                correct += float(_true_frame_wins(model, out, batch))
                frames += masked
        model.train()
        return loss_sum / max(frames, 1), correct / max(frames, 1)

    model.to(device)
    before, accuracy_before = heldout()

    def batches_of_epoch(epoch: int) -> list[tuple[int, np.ndarray]]:
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(clips))
        return [(epoch * 100_003 + i, order[s: s + batch_size])
                for i, s in enumerate(range(0, len(order), batch_size))]

    def collate(key: tuple[int, np.ndarray]) -> dict[str, Any]:
        seed, rows = key
        return with_masks(clips[rows], cfg.seed * 7_919 + seed)

    steps_seen = [0]

    def compute_loss(net: Any, batch: dict[str, Any]) -> Any:
        # The quantiser's Gumbel temperature anneals from 2 to 0.5 (wav2vec 2.0's schedule, faster).
        steps_seen[0] += 1
        net.set_gumbel_temperature(max(2.0 * 0.995 ** steps_seen[0], 0.5))
        out = net(**batch)
        return out.loss / batch["mask_time_indices"].sum().clamp(min=1)

    store = None
    if checkpoint_dir is not None and cfg.checkpoint_every_steps:
        not_shaping = {"resources", "log_every_steps", "checkpoint_every_steps", "checkpoint_dir",
                       "num_threads", "enabled", "processes"}
        shaping = [cfg.model_dump(exclude=not_shaping), audio_cfg.model_dump()]
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode())
        digest.update(clips.tobytes())
        store = CheckpointStore(Path(checkpoint_dir) / digest.hexdigest()[:16])
    settings = LoopSettings(
        epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio, grad_accum_steps=cfg.grad_accum_steps,
        max_grad_norm=cfg.max_grad_norm, bf16=cfg.bf16, log_every_steps=cfg.log_every_steps,
        checkpoint_every_steps=cfg.checkpoint_every_steps, seed=cfg.seed, desc="pretrain (wav2vec2)")
    loop = train_loop(model, batches_of_epoch, collate, compute_loss, settings, device=device,
                      checkpoints=store, log=log)
    after, accuracy = heldout()
    if log:
        log({"heldout_contrastive_loss": after, "heldout_contrastive_accuracy": accuracy}, loop.steps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
    processor.save(out_dir)
    if store:
        store.clear()
    return AudioPretrainResult(
        architecture="wav2vec2", parameters=sum(p.numel() for p in model.parameters()), steps=loop.steps,
        train_seconds=loop.train_seconds, samples_per_second=loop.samples_per_second,
        final_loss=loop.final_loss, heldout_contrastive_before=before, heldout_contrastive=after,
        heldout_accuracy_before=accuracy_before, heldout_accuracy=accuracy,
        train_clips=len(clips), real_clips=real_clips, heldout_clips=len(held),
        resumed_from_step=loop.resumed_from_step, history=loop.history)


def _true_frame_wins(model: Any, out: Any, batch: dict[str, Any]) -> float:
    """Masked frames (in this batch) whose context vector is closest (cosine) to its own quantised
    target among the target and its sampled distractors: the pretext task's accuracy."""
    import torch

    transformed = out.projected_states          # (b, t, d): the context network's predictions
    targets = out.projected_quantized_states    # (b, t, d): the quantised true frames
    b, t, d = targets.shape
    negatives_index = batch["sampled_negative_indices"].long().view(-1)
    negatives = targets.reshape(-1, d)[negatives_index].view(b, t, -1, d)
    candidates = torch.cat([targets[:, :, None], negatives], dim=2).float()  # true target first
    scores = torch.cosine_similarity(transformed[:, :, None].float(), candidates, dim=-1)
    # A distractor equal to the target (transformers masks those out) does not count against it.
    same = (negatives.float() == targets[:, :, None].float()).all(-1)
    scores[:, :, 1:] = scores[:, :, 1:].masked_fill(same, float("-inf"))
    wins = scores.argmax(-1) == 0
    return float(wins[batch["mask_time_indices"].bool()].sum())

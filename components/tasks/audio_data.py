"""The audio task's data: read a labelled set of clips into a per-clip table, say what each clip
is (decodes? rate, channels, duration, loudness, silence, clipping), and clean it with counted rules.

Layouts read:
- a manifest: a CSV with `path` and `label` columns (paths relative to it), and optionally
  `speaker` (who spoke: the split keeps each speaker in one split) and `family` (a grouping the
  metrics are sliced by, e.g. the synthesiser or "real");
- a folder holding `manifest.csv`, or a folder per class: `<root>/<label>/<clip>` (no speakers).
WAV, FLAC and OGG are read (libsndfile, through soundfile), any sample rate and channel count.

The table keeps each clip's encoded bytes, so the split files stand alone. Nothing is dropped for
being unreadable here: validation names every such file and stops the run.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.errors import DataError
from components.tasks.base import LABEL, CleanReport, clean_by_content

AUDIO, PATH, SHA, SPEAKER, FAMILY = "audio", "path", "sha256", "speaker", "family"
DECODE_ERROR, SAMPLE_RATE, CHANNELS, DURATION = "decode_error", "sample_rate", "channels", "duration_s"
RMS_DB, SILENT, CLIPPED = "rms_db", "silent_fraction", "clipped_fraction"
ACTIVE = "active_s"  # seconds of sound: 10 ms frames within ACTIVE_DB of the loudest frame
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")
SILENT_DB = -60.0    # a 10 ms frame quieter than this (dBFS) is silent
CLIP_LEVEL = 0.999   # a sample at or above this magnitude is clipped
ACTIVE_DB = 25.0
SYNTH_SET = "speech-commands-synth"


@dataclass
class AudioReadReport:
    rows_read: int = 0
    skipped_files: int = 0        # files that are not audio by their extension
    unreadable_clips: int = 0     # clips that do not decode (validation names them and stops)
    layout: str = ""              # manifest or folders
    counts: dict[str, int] = field(default_factory=dict)


def cache_root() -> Path:
    """Where generated data sets are kept: $FMPIPE_DATA_CACHE, else ~/.cache/fmpipe/datasets."""
    return Path(os.environ.get("FMPIPE_DATA_CACHE") or Path.home() / ".cache" / "fmpipe" / "datasets")


def resolve_source(source: str) -> Path:
    """The built-in synthetic set (generated on first use, then reused) or a path."""
    if source == SYNTH_SET:
        from components.tasks.audio_synth import SynthSpec, generate

        return generate(cache_root() / f"{SYNTH_SET}-v1", SynthSpec()).parent
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(str(path), None, "file_exists", "no such file or folder")
    return path


def read_clips(source: Path) -> tuple[pd.DataFrame, AudioReadReport]:
    """The clip set at `source` as a per-clip table (see the module's docstring)."""
    report = AudioReadReport()
    if source.is_dir() and (source / "manifest.csv").is_file():
        source = source / "manifest.csv"
    if source.is_file():
        frame = _from_manifest(source)
        report.layout = "manifest"
    else:
        frame, report.skipped_files = _from_folders(source)
        report.layout = "folders"
    if frame.empty:
        raise DataError(str(source), None, "non_empty_file", "no audio clips found")
    facts = pd.DataFrame([describe_clip(data) for data in frame[AUDIO]], index=frame.index)
    frame = pd.concat([frame, facts], axis=1)
    report.rows_read = len(frame)
    report.unreadable_clips = int((frame[DECODE_ERROR] != "").sum())
    return frame, report


def wav_truncation(data: bytes) -> str:
    """For a RIFF/WAVE file whose data chunk is shorter than its header declares, why ("" when not):
    libsndfile reads such a file without complaint, so a cut-off download would pass unseen."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return ""
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos: pos + 4], struct.unpack("<I", data[pos + 4: pos + 8])[0]
        if chunk == b"data":
            held = len(data) - pos - 8
            if size != 0xFFFFFFFF and held < size:  # 0xFFFFFFFF: a streamed WAV of unknown length
                return f"truncated: the header declares {size} bytes of samples, the file holds {held}"
            return ""
        pos += 8 + size + (size & 1)
    return ""


def describe_clip(data: bytes) -> dict[str, object]:
    """What validation checks of one encoded clip: decode error ("" when it decodes), sample rate,
    channels, duration, loudness (RMS, dBFS), the share of silent 10 ms frames and of clipped
    samples, and a content hash. The measures are None when it does not decode."""
    from components.serving.serving import decode_audio

    facts: dict[str, object] = {SHA: hashlib.sha256(data).hexdigest(), DECODE_ERROR: "", SAMPLE_RATE: None,
                                CHANNELS: None, DURATION: None, RMS_DB: None, SILENT: None, CLIPPED: None,
                                ACTIVE: None}
    if not data:
        facts[DECODE_ERROR] = "empty file (0 bytes)"
        return facts
    try:
        samples, rate = decode_audio(data)
    except Exception as exc:  # libsndfile: not audio, a malformed header, an unreadable rate
        why = re.sub(r"Error opening <_io\.BytesIO object at 0x[0-9a-f]+>: ", "", " ".join(str(exc).split()))
        facts[DECODE_ERROR] = f"does not decode ({why[:90]})"
        return facts
    if truncated := wav_truncation(data):
        facts[DECODE_ERROR] = truncated
        return facts
    mono = samples.mean(axis=1) if len(samples) else np.zeros(0, np.float32)
    facts.update({SAMPLE_RATE: rate, CHANNELS: int(samples.shape[1]), DURATION: len(samples) / rate})
    if len(mono):
        frame = max(1, rate // 100)
        frames = mono[: len(mono) // frame * frame].reshape(-1, frame) if len(mono) >= frame else mono[None]
        level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        facts.update({RMS_DB: float(10 * np.log10(np.mean(mono.astype(np.float64) ** 2) + 1e-12)),
                      SILENT: float(np.mean(level < SILENT_DB)),
                      CLIPPED: float(np.mean(np.abs(samples) >= CLIP_LEVEL)),
                      ACTIVE: float(np.sum(level >= level.max() - ACTIVE_DB) * frame / rate)})
    return facts


def _from_folders(root: Path) -> tuple[pd.DataFrame, int]:
    if not root.is_dir():
        raise DataError(str(root), None, "file_format", "not a folder of clips or a manifest (CSV)")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(str(root), None, "class_folders",
                        "no class folders: put each class's clips in a folder named after the label "
                        "(<root>/<label>/<clip>), or give a manifest.csv with path and label columns")
    rows, skipped = [], 0
    for folder in classes:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        clips = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
        skipped += len(files) - len(clips)
        if not clips:
            raise DataError(str(folder), None, "empty_class_folder",
                            f"the class folder '{folder.name}' holds no WAV, FLAC or OGG clips")
        rows += [{PATH: p.relative_to(root).as_posix(), LABEL: folder.name, AUDIO: p.read_bytes()}
                 for p in clips]
    frame = pd.DataFrame(rows)
    return frame.assign(**{SPEAKER: "", FAMILY: ""}), skipped


def _from_manifest(manifest: Path) -> pd.DataFrame:
    if manifest.suffix.lower() != ".csv":
        raise DataError(str(manifest), None, "file_format",
                        "an audio set is a folder (a folder per class, or one holding manifest.csv) or a "
                        "manifest .csv")
    try:
        frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(str(manifest), None, "parseable", f"cannot parse as csv: {str(exc)[:80]}") from None
    for column in (PATH, LABEL):
        if column not in frame.columns:
            found = ", ".join(frame.columns[:8])
            raise DataError(str(manifest), column, "required_column",
                            f"a manifest needs columns path and label, and may have speaker and family "
                            f"(found: {found})")
    rows = []
    for i, row in enumerate(frame.to_dict("records"), start=2):
        rel, label = row[PATH], row[LABEL].strip()
        if not label:
            raise DataError(f"{manifest}:{i}", LABEL, "not_null", f"no label for {rel!r}")
        path = (manifest.parent / rel).expanduser()
        if not path.is_file():
            raise DataError(f"{manifest}:{i}", PATH, "file_exists", f"{rel}: no such file")
        rows.append({PATH: rel, LABEL: label, AUDIO: path.read_bytes(),
                     SPEAKER: row.get(SPEAKER, "").strip(), FAMILY: row.get(FAMILY, "").strip()})
    return pd.DataFrame(rows)


def clean_clips(frame: pd.DataFrame) -> tuple[pd.DataFrame, CleanReport]:
    """Drop repeated clips (same content, same label) and clips given two labels, counted.
    Unreadable clips stay: validation names them."""
    return clean_by_content(frame, SHA, DECODE_ERROR)

"""Table-driven, for the audio task: a bad clip set ends the run at ingest or validation with one line
naming the file, the column and the rule, a non-zero exit and the registry untouched; valid oddities
(stereo, another sample rate, 8-bit, FLAC, OGG) are accepted.

Runs the CLI's step commands in-process (what `dvc repro` runs) on clips the speech generator made
(Debian's espeak-ng, flite and sox), against a project whose registry already holds a staged version.
"""

from __future__ import annotations

import io
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import make_project, run_bad_source, stage_a_version

MODEL = "commands-audio-classifier"
AUDIO_OVERRIDES = ["task.kind=audio", "data.name=commands", "finetune.base_model=wav2vec2-tiny",
                   "validate_data.min_rows=10", "validate_data.min_rows_per_class=2",
                   "validate_data.class_share_min=0"]
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                reason="needs Debian's espeak-ng, flite and sox (make speech-data)")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    """Two words and silence from four espeak voices and one flite voice: 15 clips, made once."""
    from components.tasks.audio_synth import SynthSpec, generate

    spec = SynthSpec(words=("yes", "no"), accents=("en-us", "en-gb"), variants_per_accent=2,
                     flite_voices=("slt",), flite_takes=1, unknown_per_voice=0, silence_per_voice=1)
    return generate(tmp_path_factory.mktemp("spoken"), spec, progress=False).parent


def wav(samples: np.ndarray, rate: int = 16_000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def voice(seconds: float = 1.0, rate: int = 16_000) -> np.ndarray:
    """A vowel-like sound: a 150 Hz buzz with harmonics, under a smooth envelope."""
    t = np.arange(int(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    return (0.2 * buzz * np.hanning(len(t))).astype(np.float32)


def add(rel: str, content: bytes, label: str = "yes") -> Callable[[Path], Path]:
    """The set with one more clip, listed in its manifest under `label`."""
    def change(root: Path) -> Path:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
        manifest = pd.read_csv(root / "manifest.csv")
        row = pd.DataFrame([{"path": rel, "label": label, "speaker": "extra", "family": "espeak"}])
        pd.concat([manifest, row]).to_csv(root / "manifest.csv", index=False)
        return root
    return change


def header_rate(rate: int) -> bytes:
    data = bytearray(wav(voice()))
    data[24:28] = struct.pack("<I", rate)  # the fmt chunk's sample rate, which libsndfile cannot use
    return bytes(data)


def manifest(rows: str) -> Callable[[Path], Path]:
    def change(root: Path) -> Path:
        (root / "manifest.csv").write_text(rows)
        return root
    return change


def oddities(root: Path) -> Path:
    """Valid, if unusual: stereo FLAC at 44.1 kHz, 8-bit WAV at 8 kHz, an OGG of 1.5 s."""
    stereo = np.stack([voice(1, 44_100)] * 2, axis=1)
    for rel, content in (("yes/stereo.flac", wav(stereo, 44_100, fmt="FLAC")),
                         ("no/eight_bit.wav", wav(voice(1, 8_000), 8_000, "PCM_U8")),
                         ("yes/long.ogg", wav(voice(1.5), 16_000, "VORBIS", "OGG"))):
        add(rel, content, rel.split("/")[0])(root)
    return root


WHOLE = wav(voice())
# (id, change -> the path to ingest, step that stops, file named, column, rule); step None = accepted
CASES = [
    ("truncated wav", add("yes/cut.wav", WHOLE[:6_000]), "validate_data", "yes/cut.wav", "decode_error",
     "audio_decodes"),
    ("not audio at all", add("yes/notes.wav", b"a text file named .wav\n" * 20), "validate_data",
     "yes/notes.wav", "decode_error", "audio_decodes"),
    ("zero-length file", add("no/empty.wav", b""), "validate_data", "no/empty.wav", "decode_error",
     "audio_decodes"),
    ("a sample rate the decoder cannot read", add("no/rate0.wav", header_rate(0)), "validate_data",
     "no/rate0.wav", "decode_error", "audio_decodes"),
    ("silence only", add("no/silent.wav", wav(np.zeros(16_000))), "validate_data", "no/silent.wav",
     "silent_fraction", "silence_ratio"),
    ("clipped", add("yes/loud.wav", wav(np.clip(20 * voice(), -1, 1))), "validate_data", "yes/loud.wav",
     "clipped_fraction", "clipping_ratio"),
    ("a 4 kHz telephone clip", add("yes/phone.wav", wav(voice(1, 4_000), 4_000)), "validate_data",
     "yes/phone.wav", "sample_rate", "sample_rate"),
    ("a 30 ms blip", add("no/blip.wav", wav(voice(0.03))), "validate_data", "no/blip.wav", "duration_s",
     "duration"),
    ("six channels", add("no/surround.wav", wav(np.stack([voice()] * 6, axis=1))), "validate_data",
     "no/surround.wav", "channels", "channels"),
    ("manifest names a missing file", manifest("path,label\nyes/gone.wav,yes\n"), "ingest", "manifest.csv",
     "path", "file_exists"),
    ("manifest without labels", manifest("path,speaker\nyes/a.wav,x\n"), "ingest", "manifest.csv", "label",
     "required_column"),
    ("stereo, 44.1 kHz, 8-bit, FLAC and OGG", oddities, None, None, None, None),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("bad_audio") / "proj", AUDIO_OVERRIDES)
    stage_a_version(root, MODEL)
    return root


@pytest.mark.parametrize(("case", "change", "step", "named", "column", "rule"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_clip_sets_stop_with_one_clear_line(project, spoken, tmp_path, capsys, case, change, step, named,
                                                column, rule):
    clips = shutil.copytree(spoken, tmp_path / "clips")
    message = run_bad_source(project, MODEL, change(clips), capsys, step)
    if message is None:
        return
    assert named in message and f"rule '{rule}'" in message and f"'{column}'" in message, message

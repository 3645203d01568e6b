"""A reproducible keyword-spotting set spoken by speech synthesisers, for the audio task.

No labelled speech set suited to keyword spotting installs offline from the package registries
this project reaches, so the built-in one is made here: Debian's `espeak-ng` (7 English accents,
each with many voice variants, at a pitch and speed fixed per voice) and `flite` (6 voices) speak
the ten Speech Commands core words, plus a few other words (`_unknown_`) and background noise
with no word (`_silence_`). `sox` varies each clip (tempo, pitch, reverb); a noise floor at a
random signal-to-noise ratio is mixed in with numpy. Every clip is 1 s of 16 kHz mono 16-bit WAV,
the word centred, as in Speech Commands.

A voice is a speaker: `speaker` in the manifest (`espeak:en-us+f3`, `flite:slt`), so the split
holds out whole voices and the test measures generalisation to voices never heard in training.
`family` says which synthesiser spoke (espeak, flite). The same arguments give the same bytes.

Real human speech (KDE's ktuberling and klettres recordings, Debian packages) is read by
`real_recordings`: unlabelled audio for pretraining, and an out-of-distribution check.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.core.errors import FmpipeError

RATE = 16_000
CORE_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
                 "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
# espeak-ng's voice variants (files under espeak-ng-data/voices/!v): formant and pitch changes.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "klatt",
            "klatt2", "klatt3", "iven", "john", "linda", "max", "paul", "steph", "travis", "zac")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt", "awb_time")
TOOLS = {"espeak-ng": "espeak-ng", "flite": "flite", "sox": "sox"}  # command -> Debian package
MANIFEST = "manifest.csv"
# Where ktuberling-data and klettres-data install their OGG recordings.
REAL_FOLDERS = ("/usr/share/ktuberling/sounds", "/usr/share/klettres")


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. The defaults are the main job's set (~1,500 clips, ~1 min on 2 cores)."""

    words: tuple[str, ...] = CORE_WORDS
    unknown_words: tuple[str, ...] = UNKNOWN_WORDS
    accents: tuple[str, ...] = ACCENTS
    variants_per_accent: int = 12
    flite_voices: tuple[str, ...] = FLITE_VOICES
    espeak_takes: int = 1          # clips of each word per espeak voice
    flite_takes: int = 4           # ... per flite voice (there are few flite voices)
    unknown_per_voice: int = 2     # `_unknown_` clips per voice and take
    silence_per_voice: int = 1
    seed: int = 7


@dataclass(frozen=True)
class Clip:
    path: str
    label: str
    speaker: str
    family: str
    text: str            # what is spoken ("" for silence)
    command: tuple[str, ...]  # the synthesiser's command (empty for silence)
    tempo: float
    cents: int
    reverb: int
    snr_db: float
    noise_seed: int


def check_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        packages = " ".join(TOOLS[t] for t in missing)
        raise FmpipeError(f"the speech generator needs {', '.join(missing)}: apt-get install {packages} "
                          "(or `make speech-data`)")


def plan(spec: SynthSpec) -> list[Clip]:
    """Every clip to make, with its variation drawn from one seeded generator (same spec, same plan)."""
    rng = np.random.default_rng(spec.seed)
    voices: list[tuple[str, str, tuple[str, ...], int]] = []  # speaker, family, command, takes
    for accent in spec.accents:
        for variant in VARIANTS[: spec.variants_per_accent]:
            pitch, speed = int(rng.integers(25, 76)), int(rng.integers(140, 201))
            command = ("espeak-ng", "-v", f"{accent}+{variant}", "-p", str(pitch), "-s", str(speed),
                       "--stdout")
            voices.append((f"espeak:{accent}+{variant}", "espeak", command, spec.espeak_takes))
    for voice in spec.flite_voices:
        voices.append((f"flite:{voice}", "flite", ("flite", "-voice", voice), spec.flite_takes))
    clips = []
    for speaker, family, command, takes in voices:
        for take in range(takes):
            spoken = [(w, w) for w in spec.words]
            spoken += [(UNKNOWN, str(w)) for w in rng.choice(spec.unknown_words, spec.unknown_per_voice,
                                                            replace=False)]
            spoken += [(SILENCE, "")] * spec.silence_per_voice
            for label, text in spoken:
                name = text or f"silence{len(clips)}"
                safe = speaker.replace(":", "_").replace("+", "_")
                clips.append(Clip(
                    path=f"{label}/{safe}_{name}_{take}.wav", label=label, speaker=speaker, family=family,
                    text=text, command=command if text else (), tempo=float(rng.uniform(0.9, 1.1)),
                    cents=int(rng.integers(-150, 151)), reverb=int(rng.choice([0, 0, 20, 40])),
                    snr_db=float(rng.uniform(12, 40)), noise_seed=int(rng.integers(2**31))))
    return clips


def _speak(clip: Clip) -> np.ndarray:
    """The clip's word, synthesised, varied by sox, as float32 at RATE (no padding yet)."""
    if clip.command[0] == "flite":
        out = subprocess.run([*clip.command, "-t", clip.text, "-o", "/dev/stdout"], capture_output=True,
                             check=True).stdout
    else:
        out = subprocess.run([*clip.command, clip.text], capture_output=True, check=True).stdout
    effects = ["tempo", f"{clip.tempo:.3f}", "pitch", str(clip.cents)]
    if clip.reverb:
        effects += ["reverb", str(clip.reverb)]
    # -R: sox's repeatable mode (fixed seeds for dither), so the same plan gives the same bytes.
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-r", str(RATE), "-c", "1", "-"]
    converted = subprocess.run(["sox", "-R", "-t", "wav", "-", *raw, *effects], input=out,
                               capture_output=True, check=True).stdout
    return np.frombuffer(converted, dtype=np.float32).copy()


def render(clip: Clip) -> np.ndarray:
    """The finished clip: 1 s, the word centred (cut to its loudest second if longer), peak-normalised
    to a random level, a coloured noise floor at clip.snr_db below the speech."""
    rng = np.random.default_rng(clip.noise_seed)
    out = np.zeros(RATE, dtype=np.float32)
    if clip.text:
        voice = _speak(clip)
        loud = np.flatnonzero(np.abs(voice) > 1e-3)  # trim the synthesiser's leading and trailing silence
        if len(loud):
            voice = voice[loud[0]: loud[-1] + 1]
        if len(voice) > RATE:
            energy = np.convolve(voice**2, np.ones(RATE // 10), mode="valid")
            start = max(0, min(int(energy.argmax()) - RATE // 2, len(voice) - RATE))
            voice = voice[start: start + RATE]
        offset = (RATE - len(voice)) // 2
        out[offset: offset + len(voice)] = voice
        out *= rng.uniform(0.2, 0.8) / max(float(np.abs(out).max()), 1e-6)
    # Noise: white noise smoothed by a random one-pole filter (white to brown-ish).
    from scipy.signal import lfilter

    white = rng.standard_normal(RATE)
    noise = lfilter([1.0], [1.0, -rng.uniform(0.0, 0.95)], white).astype(np.float32)
    noise /= max(float(np.sqrt(np.mean(noise**2))), 1e-9)
    speech_rms = float(np.sqrt(np.mean(out**2))) if clip.text else rng.uniform(0.01, 0.05)
    out += noise * speech_rms * 10 ** (-clip.snr_db / 20) if clip.text else noise * speech_rms
    return np.clip(out, -1.0, 1.0)


def wav_bytes(samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def generate(out_dir: Path, spec: SynthSpec = SynthSpec(), workers: int = 2, progress: bool = True) -> Path:
    """Write the clips and `manifest.csv` (path, label, speaker, family) into out_dir; returns the
    manifest. A folder already holding this spec's manifest is left as it is (idempotent)."""
    import pandas as pd
    from tqdm import tqdm

    check_tools()
    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST
    clips = plan(spec)
    if manifest.exists() and len(pd.read_csv(manifest)) == len(clips):
        return manifest
    out_dir.mkdir(parents=True, exist_ok=True)

    def make(clip: Clip) -> None:
        target = out_dir / clip.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wav_bytes(render(clip)))

    with ThreadPoolExecutor(workers) as pool:  # the work is in the synthesiser and sox processes
        list(tqdm(pool.map(make, clips), total=len(clips), desc="speaking clips", disable=not progress,
                  mininterval=2))
    rows = [{"path": c.path, "label": c.label, "speaker": c.speaker, "family": c.family} for c in clips]
    pd.DataFrame(rows).to_csv(manifest, index=False)  # last: its presence means the set is complete
    return manifest


def real_recordings(limit: int = 0) -> list[Path]:
    """The OGG recordings of ktuberling-data and klettres-data that are installed here (sorted);
    at most `limit` (0 = all), taken evenly across the list."""
    files = sorted(p for folder in REAL_FOLDERS if Path(folder).is_dir() for p in Path(folder).rglob("*.ogg"))
    if limit and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]
    return files

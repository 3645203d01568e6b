"""The audio task's pure logic: what a clip is (decodes, rate, channels, silence, clipping,
truncation), the served preprocessor, MFCCs, the generator's plan, the speaker split and rule."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from components.serving.serving import audio_input, fit_length, normalise, to_mono_at
from components.tasks.audio import AudioTask, mel_filterbank, mfcc, mfcc_statistics
from components.tasks.audio_data import (
    ACTIVE,
    CHANNELS,
    CLIPPED,
    DECODE_ERROR,
    DURATION,
    SAMPLE_RATE,
    SILENT,
    SPEAKER,
    describe_clip,
    wav_truncation,
)
from components.tasks.audio_synth import SynthSpec, plan
from components.tasks.base import LABEL


def encoded(samples: np.ndarray, rate: int = 16_000, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def tone(seconds: float = 1.0, rate: int = 16_000, hz: float = 440.0, level: float = 0.3) -> np.ndarray:
    return level * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)


def test_a_clip_is_described_by_what_validation_checks():
    quiet_then_loud = np.concatenate([np.zeros(8_000), tone(0.5)])
    facts = describe_clip(encoded(quiet_then_loud))
    assert facts[DECODE_ERROR] == "" and facts[SAMPLE_RATE] == 16_000 and facts[CHANNELS] == 1
    assert facts[DURATION] == pytest.approx(1.0)
    assert facts[SILENT] == pytest.approx(0.5, abs=0.02)  # the first half is digital silence
    assert facts[ACTIVE] == pytest.approx(0.5, abs=0.02)
    assert facts[CLIPPED] == 0.0
    clipped = describe_clip(encoded(np.clip(10 * tone(), -1, 1)))
    assert clipped[CLIPPED] > 0.3
    stereo = describe_clip(encoded(np.stack([tone(), tone()], axis=1), 44_100, "FLAC"))
    assert (stereo[CHANNELS], stereo[SAMPLE_RATE], stereo[DECODE_ERROR]) == (2, 44_100, "")


@pytest.mark.parametrize(("data", "why"), [
    (b"", "empty file"),
    (b"just some text, not audio\n" * 4, "does not decode (Format not recognised"),
    (encoded(tone())[:30], "does not decode"),
    (encoded(tone())[:5_000], "truncated: the header declares 32000 bytes of samples, the file holds"),
])
def test_clips_that_do_not_decode_say_why(data, why):
    assert describe_clip(data)[DECODE_ERROR].startswith(why)


def test_a_sample_rate_the_decoder_cannot_read_is_a_decode_error():
    data = bytearray(encoded(tone()))
    data[24:28] = (0).to_bytes(4, "little")  # the fmt chunk's sample rate
    assert describe_clip(bytes(data))[DECODE_ERROR].startswith("does not decode")


def test_truncation_is_only_said_of_a_short_wav_data_chunk():
    whole = encoded(tone())
    assert wav_truncation(whole) == "" and wav_truncation(encoded(tone(), fmt="FLAC")) == ""
    assert wav_truncation(whole[:-2]).startswith("truncated")


def test_the_served_preprocessor_resamples_mixes_down_and_fits_the_length():
    stereo_44k = np.stack([tone(0.5, 44_100), tone(0.5, 44_100)], axis=1).astype(np.float32)
    mono = to_mono_at(stereo_44k, 44_100, 16_000)
    assert len(mono) == 8_000
    assert np.abs(mono[100:-100] - tone(0.5)[100:-100]).max() < 0.01  # the same tone at 16 kHz
    clip = audio_input(encoded(stereo_44k, 44_100), 16_000, 16_000)
    assert clip.shape == (16_000,) and abs(clip.mean()) < 1e-5 and clip.std() == pytest.approx(1.0, abs=1e-3)
    eight_bit = audio_input(encoded(tone(2.0, 8_000), 8_000, subtype="PCM_U8"), 16_000, 16_000)
    assert eight_bit.shape == (16_000,)


def test_a_long_clip_keeps_its_loudest_second_and_a_short_one_is_centred():
    long = np.concatenate([np.zeros(20_000), np.ones(4_000), np.zeros(20_000)]).astype(np.float32)
    window = fit_length(long, 16_000)
    assert window.sum() == 4_000  # the whole loud part is inside the window
    short = fit_length(np.ones(4_000, np.float32), 16_000)
    assert short[6_000:10_000].sum() == 4_000 and short.sum() == 4_000
    assert normalise(np.zeros(10, np.float32)).tolist() == [0.0] * 10  # silence stays finite


def test_mel_filters_rise_in_frequency_and_mfccs_tell_tones_apart():
    bank = mel_filterbank(16_000, 512, 40)
    peaks = bank.argmax(axis=1)
    assert bank.shape == (40, 257) and np.all(np.diff(peaks) >= 0) and peaks[-1] > peaks[0]
    low, high = mfcc(tone(hz=300).astype(np.float32), 16_000), mfcc(tone(hz=3000).astype(np.float32), 16_000)
    assert low.shape == (98, 13)
    assert np.abs(low.mean(0) - high.mean(0)).max() > 1.0
    assert mfcc_statistics(tone().astype(np.float32), 16_000).shape == (13 * 7,)


def test_the_generator_plan_is_fixed_by_its_seed_and_spreads_voices():
    spec = SynthSpec(words=("yes", "no"), accents=("en-us", "en-gb"), variants_per_accent=3,
                     flite_voices=("slt",), flite_takes=2, unknown_per_voice=1, silence_per_voice=1)
    clips = plan(spec)
    assert clips == plan(spec) and clips != plan(SynthSpec(**{**spec.__dict__, "seed": 8}))
    speakers = {c.speaker for c in clips}
    assert len(speakers) == 2 * 3 + 1 and {c.family for c in clips} == {"espeak", "flite"}
    assert len({c.path for c in clips}) == len(clips)  # no clip overwrites another
    per_voice = pd.Series([c.label for c in clips if c.speaker == "flite:slt"]).value_counts()
    assert per_voice.to_dict() == {"yes": 2, "no": 2, "_unknown_": 2, "_silence_": 2}


def test_slices_are_voice_families_and_seconds_of_sound():
    test = pd.DataFrame({"family": ["espeak", "flite", "espeak", ""], ACTIVE: [0.2, 0.4, 0.7, None]})
    masks = AudioTask().slice_masks(test)
    assert masks["family espeak"].tolist() == [True, False, True, False]
    assert masks["family flite"].tolist() == [False, True, False, False]
    assert masks["sound 0-0.35s"].tolist() == [True, False, False, False]
    assert masks["sound 0.35-0.5s"].tolist() == [False, True, False, False]
    assert masks["sound 0.5s+"].tolist() == [False, False, True, False]


def test_clips_split_by_speaker_where_the_manifest_names_one():
    frame = pd.DataFrame({SPEAKER: ["a", "a", ""], "sha256": ["1", "2", "3"]})
    assert AudioTask().group_keys(frame).tolist() == ["a", "a", "clip:3"]


def test_a_speaker_in_two_splits_fails_its_rule():
    from components.core.config import ValidateConfig
    from components.validate_data.validate import validate_splits

    good = describe_clip(encoded(tone()))

    def part(speakers: list[str]) -> pd.DataFrame:
        rows = [{**good, "audio": b"x", "path": f"{s}_{i}.wav", LABEL: ["yes", "no"][i % 2], SPEAKER: s,
                 "sha256": f"{s}{i}"} for i, s in enumerate(speakers)]
        return pd.DataFrame(rows)

    splits = {"train": part(["ann", "ann", "bob", "bob"]), "val": part(["cy", "cy"]),
              "test": part(["bob", "dee"])}
    report = validate_splits(splits, ValidateConfig(), ["no", "yes"], AudioTask())
    (failed,) = report.failures
    assert failed.rule == "no_speaker_in_two_splits" and "bob" in failed.detail


def test_every_voice_family_is_heard_in_every_split():
    from components.core.config import IngestConfig

    rows = [{SPEAKER: f"{family}:{v}", "family": family, LABEL: word, "sha256": f"{family}{v}{word}"}
            for family, voices in (("espeak", 40), ("flite", 6)) for v in range(voices)
            for word in ("yes", "no")]
    splits = AudioTask().split(pd.DataFrame(rows), IngestConfig(), "clips")
    for part in splits.values():
        assert set(part["family"]) == {"espeak", "flite"} and set(part[LABEL]) == {"yes", "no"}
    speakers = [set(part[SPEAKER]) for part in splits.values()]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])

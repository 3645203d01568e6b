"""The audio task's transfer learning on a tiny Wav2Vec2: self-supervised pretraining on unlabelled
clips is measured (held-out contrastive loss before and after, the same masks), repeatable from its
seed, and its encoder is what fine-tuning starts from."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from components.core.config import PretrainConfig
from components.tasks.audio import AudioProcessor, AudioTask, pretrain_wav2vec2
from components.tasks.audio_data import read_clips

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                reason="needs Debian's espeak-ng, flite and sox (make speech-data)")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[bytes]:
    from components.tasks.audio_synth import SynthSpec, generate

    spec = SynthSpec(words=("yes", "no", "up"), accents=("en-us", "en-gb"), variants_per_accent=3,
                     flite_voices=(), unknown_per_voice=0, silence_per_voice=1)
    frame, _ = read_clips(generate(tmp_path_factory.mktemp("clips"), spec, progress=False))
    return frame["audio"].tolist()


def pretrain(clips: list[bytes], out) -> object:
    from components.core.config import AudioTaskConfig

    cfg = PretrainConfig(enabled=True, base_model="wav2vec2-tiny", epochs=2, batch_size=8, learning_rate=3e-3,
                         bf16=False, warmup_ratio=0.0, checkpoint_every_steps=0, seed=3)
    return pretrain_wav2vec2(clips[:18], clips[18:], cfg, AudioTaskConfig(), AudioProcessor(), out)


def test_pretraining_is_measured_repeatable_and_is_finetunes_starting_point(clips, tmp_path):
    from safetensors.numpy import load_file

    first = pretrain(clips, tmp_path / "a")
    assert first.steps == 6 and first.train_clips == 18 and first.heldout_clips == 6
    for figure in (first.heldout_contrastive_before, first.heldout_contrastive):
        assert np.isfinite(figure) and figure > 0
    assert 0.0 <= first.heldout_accuracy <= 1.0
    second = pretrain(clips, tmp_path / "b")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # same seed, same model
    assert second.heldout_contrastive == pytest.approx(first.heldout_contrastive)

    processor, model = AudioTask().load_pretrained(str(tmp_path / "a"), ["no", "up", "yes"])
    assert processor == AudioProcessor()
    encoder = {k.removeprefix("wav2vec2."): v.detach().numpy() for k, v in model.state_dict().items()
               if k.startswith("wav2vec2.")}
    pretrained = {k.removeprefix("wav2vec2."): v for k, v in a.items() if k.startswith("wav2vec2.")}
    assert encoder.keys() == pretrained.keys()
    assert all(np.allclose(encoder[k], pretrained[k]) for k in encoder)  # the encoder came across whole
    assert model.classifier.out_features == 3 and not any(k.startswith("quantizer") for k in encoder)

"""The audio task through the same DAG under kfp.local, through the CLI, in a fresh project: clips
spoken by espeak-ng and flite voices, a tiny Wav2Vec2 pretrained self-supervised on them and on real
recordings (ktuberling / klettres), fine-tuned, evaluated against MFCC statistics + logistic
regression, exported to ONNX, registered and staged, then served by `fmpipe predict` and the MLflow
pyfunc from audio files and bytes."""

from __future__ import annotations

import json
import shutil

import mlflow
import pandas as pd
import pytest

from components.registry.registry import current_alias_version
from tests.conftest import fmpipe, make_project

MODEL = "keywords-audio-classifier"  # named after the data set (the folder `keywords`)
OVERRIDES = ["task.kind=audio", "finetune.base_model=wav2vec2-tiny", "finetune.epochs=2",
             "finetune.batch_size=8", "finetune.learning_rate=3e-3", "finetune.bf16=false",
             "finetune.freeze_embeddings=false", "validate_data.min_rows=20",
             "validate_data.min_rows_per_class=3", "validate_data.class_share_min=0",
             "evaluate.require_beat_baselines=false", "evaluate.min_accuracy=0", "evaluate.min_macro_f1=0",
             "evaluate.explain_examples=0", "export_onnx.benchmark=false", "export_onnx.openvino_bf16=false",
             "pretrain.enabled=true", "pretrain.base_model=wav2vec2-tiny", "pretrain.source=kde-recordings",
             "pretrain.epochs=1", "pretrain.batch_size=8", "pretrain.bf16=false",
             "task.audio.pretrain_real_clips=30"]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not shutil.os.path.isdir("/usr/share/ktuberling/sounds"),
    reason="needs Debian's espeak-ng, flite, sox and ktuberling-data (make speech-data)")]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from components.tasks.audio_synth import SynthSpec, generate

    root = make_project(tmp_path_factory.mktemp("e2e_audio") / "proj", OVERRIDES)
    spec = SynthSpec(words=("yes", "no", "up"), unknown_words=("cat", "dog"), accents=("en-us", "en-gb"),
                     variants_per_accent=5, flite_voices=("slt", "kal"), flite_takes=2, unknown_per_voice=1,
                     silence_per_voice=1)
    generate(root / "keywords", spec, progress=False)
    mlflow.set_tracking_uri(f"sqlite:///{root / '.mlflow' / 'mlflow.db'}")
    return root


@pytest.fixture(scope="module")
def good_run(project):
    return fmpipe(project, "run", "--data", "keywords")


def test_the_audio_task_runs_the_same_dag_to_staging(project, good_run):
    assert good_run.returncode == 0, good_run.stdout[-3000:] + good_run.stderr[-3000:]
    out = good_run.stdout
    assert "SUCCEEDED" in out and "baseline mfcc_logreg" in out
    assert "self-supervised on" in out and "held-out contrastive loss" in out and "real recordings" in out
    (version,) = mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")
    assert current_alias_version(MODEL, "staging") == str(version.version)
    contract = json.loads(version.tags["fmpipe.contract"])
    labels = ["_silence_", "_unknown_", "no", "up", "yes"]
    assert contract == {"task": "audio-classification", "labels": labels, "inputs": [["audio", "binary"]]}
    assert (project / "data" / "keywords.dvc").exists()  # the clips are versioned by DVC
    runs = mlflow.search_runs(experiment_names=["fmpipe"])  # the pipeline run holds the pretrain figures
    assert (runs["metrics.pretrain_contrastive_loss"].dropna() > 0).any()


def test_the_staged_model_labels_audio_files_without_torch(project, good_run):
    clips = pd.read_csv(project / "keywords" / "manifest.csv")
    wav = project / "keywords" / clips.path.iloc[0]
    answer = fmpipe(project, "predict", MODEL, str(wav))
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert str(wav) in answer.stdout and "version 1" in answer.stdout
    bad = fmpipe(project, "predict", MODEL, str(project / "params.yaml"))
    assert bad.returncode == 1 and "not audio this model can read" in bad.stderr
    assert "Traceback" not in bad.stderr

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@staging")
    paths = [str(project / "keywords" / p) for p in clips.path[:4]]
    by_path = model.predict(paths)
    by_bytes = model.predict(pd.DataFrame({"audio": [open(p, "rb").read() for p in paths]}))
    assert list(by_path.columns) == ["label", "probability"] and len(by_path) == 4
    assert by_path.label.tolist() == by_bytes.label.tolist()
    assert set(by_path.label) <= {"_silence_", "_unknown_", "no", "up", "yes"}

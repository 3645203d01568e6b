"""The image task through the same DAG under kfp.local, through the CLI, in a fresh project: a
folder of real Fashion-MNIST images, a tiny ResNet pretrained on other clothes by the pretrain
step, fine-tuned, registered and staged, served by `fmpipe predict` and the MLflow pyfunc from
image files and bytes."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from PIL import Image

from components.registry.registry import current_alias_version
from tests.conftest import fmpipe, make_project
from tests.data.test_bad_images import FASHION, fashion

MODEL = "wardrobe-image-classifier"  # named after the data set (the folder `wardrobe`)
CLASSES = {"Trouser": 1, "Sneaker": 7, "Bag": 8}
OVERRIDES = ["task.kind=image", "finetune.base_model=resnet-tiny", "finetune.epochs=2",
             "finetune.batch_size=16", "finetune.learning_rate=3e-3", "finetune.bf16=false",
             "validate_data.min_rows=50",
             "evaluate.require_beat_baselines=false", "evaluate.min_accuracy=0", "evaluate.min_macro_f1=0",
             "export_onnx.benchmark=false",
             # Transfer learning: the pretrain step trains the network on other clothes first.
             "pretrain.enabled=true", "pretrain.source=closet", "pretrain.base_model=resnet-tiny",
             "pretrain.epochs=1", "pretrain.batch_size=16", "pretrain.bf16=false"]
pytestmark = pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")



@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("e2e_image") / "proj", OVERRIDES)
    for folder, classes, n in (("wardrobe", CLASSES, 40), ("closet", {"Dress": 3, "Coat": 4}, 20)):
        for name, label in classes.items():
            (root / folder / name).mkdir(parents=True)
            for i, pixels in enumerate(fashion(n, label)):
                Image.fromarray(pixels).save(root / folder / name / f"{i}.png")
    mlflow.set_tracking_uri(f"sqlite:///{root / '.mlflow' / 'mlflow.db'}")
    return root


@pytest.fixture(scope="module")
def good_run(project):
    return fmpipe(project, "run", "--data", "wardrobe")


def test_the_image_task_runs_the_same_dag_to_staging(project, good_run):
    assert good_run.returncode == 0, good_run.stdout[-3000:] + good_run.stderr[-3000:]
    assert "SUCCEEDED" in good_run.stdout and "baseline pixels_logreg" in good_run.stdout
    assert "pretrain: resnet-tiny trained on closet" in good_run.stdout
    (version,) = mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")
    assert current_alias_version(MODEL, "staging") == str(version.version)
    contract = json.loads(version.tags["fmpipe.contract"])
    assert contract == {"task": "image-classification", "labels": sorted(CLASSES),
                        "inputs": [["image", "binary"]]}
    assert (project / "data" / "wardrobe.dvc").exists()  # the folder is versioned by DVC


def test_the_registered_image_model_serves_files_and_bytes(project, good_run, tmp_path):
    files = []
    for name, label in CLASSES.items():
        files.append(tmp_path / f"{name}.png")
        Image.fromarray(fashion(41, label)[40]).save(files[-1])
    out = fmpipe(project, "predict", MODEL, *map(str, files))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()[1:]
    assert [line.split()[-1] for line in lines] == [str(f) for f in files]
    assert all(line.split()[0] in CLASSES for line in lines)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@staging")
    answer = model.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]}))
    assert list(answer.columns) == ["label", "probability"] and set(answer["label"]) <= set(CLASSES)
    missing = fmpipe(project, "predict", MODEL, str(tmp_path / "nope.png"))
    assert missing.returncode != 0
    assert "nope.png: no such image file" in missing.stderr.strip().splitlines()[-1]


def test_the_image_models_card_shows_saliency_overlays(project, good_run):
    out = project / "card.html"
    made = fmpipe(project, "card", f"{MODEL}@staging", "-o", str(out))
    assert made.returncode == 0, made.stderr[-2000:]
    page = out.read_text(encoding="utf-8")
    assert 'class="missing"' not in page
    # integrated gradients over the pixels, one overlay per explained test image (6 by default)
    assert page.count('alt="saliency (red: pushes towards the prediction)"') == 6

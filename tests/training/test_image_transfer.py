"""Images: the pretrain step trains the network on another labelled data set, and finetune starts
from that network with a new head (transfer learning), on real Fashion-MNIST images."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from components.core.config import load_params
from components.core.errors import ConfigError
from tests.conftest import REPO
from tests.data.test_bad_images import FASHION, fashion

pytestmark = pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
TINY = ["task.kind=image", "pretrain.base_model=resnet-tiny", "pretrain.epochs=1", "pretrain.batch_size=16",
        "pretrain.checkpoint_every_steps=0", "pretrain.bf16=false", "pretrain.num_threads=1"]


def folder(root: Path, classes: dict[str, int], n: int) -> Path:
    for name, label in classes.items():
        (root / name).mkdir(parents=True)
        for i, pixels in enumerate(fashion(n, label)):
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_pretrain_on_a_source_set_then_finetune_starts_from_it_with_a_new_head(tmp_path):
    import torch

    from components.pretrain.step import train_on_source
    from components.tasks import get_task

    source = folder(tmp_path / "clothes", {"Trouser": 1, "Bag": 8, "Sneaker": 7}, 20)
    params = load_params(REPO / "params.yaml", [*TINY, "pretrain.enabled=true", f"pretrain.source={source}"])
    result = train_on_source(tmp_path / "pretrained", params)
    assert result.steps > 0 and (tmp_path / "pretrained" / "config.json").exists()

    task = get_task(params)
    processor, model = task.load_pretrained(str(tmp_path / "pretrained"), ["a", "b"])
    saved = task.load_finetuned(tmp_path / "pretrained")[1].state_dict()
    mine = model.state_dict()
    body = [k for k in saved if not k.startswith("classifier")]
    assert body and all(torch.equal(saved[k], mine[k]) for k in body)  # the network carries over
    assert model.config.num_labels == 2 and model.config.id2label == {0: "a", 1: "b"}  # a new head
    assert processor.mean is not None  # ... seen through the source's preprocessing


def test_image_pretraining_needs_a_source_and_text_has_none():
    with pytest.raises(ConfigError, match="pretrain.source"):
        load_params(REPO / "params.yaml", [*TINY, "pretrain.enabled=true"])
    with pytest.raises(ConfigError, match="pretrain.source is for the image and audio tasks"):
        load_params(REPO / "params.yaml", ["pretrain.source=fashion-mnist"])

"""The image task's pure parts: reading IDX files, what validation sees of an image, the split by
content, augmentation, drift figures, serving's preprocessing, and params files that inherit."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.core.config import ImageTaskConfig, Params, load_params
from components.core.errors import ConfigError, DataError
from components.tasks import get_task
from components.tasks.image_data import describe_image, read_idx


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_idx_files_read_gzipped_or_not_and_a_short_one_is_refused(tmp_path):
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (2, 3, 4)) + pixels.tobytes()
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    assert (read_idx(tmp_path / "a") == pixels).all() and (read_idx(tmp_path / "b.gz") == pixels).all()
    (tmp_path / "c").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "c")


def test_what_validation_sees_of_an_image():
    grey = np.full((10, 12), 255, dtype=np.uint8)
    facts = describe_image(png(grey))
    assert (facts["mode"], facts["width"], facts["height"], facts["decode_error"]) == ("L", 12, 10, "")
    assert facts["brightness"] == pytest.approx(1.0)
    assert describe_image(png(grey, "RGB"))["sha256"] != facts["sha256"]  # content, not pixels
    assert describe_image(b"")["decode_error"] == "empty file (0 bytes)"
    cut = describe_image(png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:200])
    assert cut["decode_error"].startswith("does not decode") and cut["mode"] is None


def test_the_split_keeps_copies_of_an_image_together():
    from components.core.config import IngestConfig
    from components.core.splitting import split_by_key

    frame = pd.DataFrame({"label": ["a", "b"] * 30, "sha256": [f"h{i // 2}" for i in range(60)]})
    parts = split_by_key(frame, frame["sha256"], IngestConfig(), "x")
    seen = [set(part["sha256"]) for part in parts.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_augmentation_is_seeded_and_off_by_default():
    task = get_task(Params.model_validate({"task": {"kind": "image", "image": {
        "augment": {"flip": True, "crop_padding": 2, "max_rotation": 10}}}}))
    plain = get_task(Params.model_validate({"task": {"kind": "image"}}))
    processor = type("P", (), {"mean": [0.0], "std": [1.0]})()
    pixels = np.random.default_rng(0).integers(0, 255, (4, 1, 8, 8), dtype=np.uint8)
    rows = np.arange(4)
    one = task.collate(processor, pixels, rows, np.random.default_rng(1))["pixel_values"]
    two = task.collate(processor, pixels, rows, np.random.default_rng(1))["pixel_values"]
    other = task.collate(processor, pixels, rows, np.random.default_rng(2))["pixel_values"]
    unchanged = plain.collate(processor, pixels, rows, np.random.default_rng(1))["pixel_values"]
    assert (one == two).all() and not (one == other).all()
    assert np.allclose(unchanged.numpy(), pixels / 255.0)


def test_drift_flags_new_sizes_labels_and_brightness():
    task = get_task(Params.model_validate({"task": {"kind": "image"}}))

    def table(n: int, side: int, light: float, labels: tuple[str, ...]) -> pd.DataFrame:
        rng = np.random.default_rng(side)
        return pd.DataFrame({"label": [labels[i % len(labels)] for i in range(n)], "width": side,
                             "height": side, "brightness": np.clip(rng.normal(light, 0.05, n), 0, 1)})

    old = table(400, 28, 0.3, ("a", "b"))
    same = {f.name: f.passed for f in task.drift(task.profile(old, 0), task.profile(old, 1), old)}
    new = table(400, 64, 0.7, ("a", "a", "a", "b"))
    moved = {f.name: f.passed for f in task.drift(task.profile(old, 0), task.profile(new, 0), new)}
    assert same == {"label_psi": True, "image_size_psi": True, "brightness_ks_pvalue": True}
    assert moved == {"label_psi": False, "image_size_psi": False, "brightness_ks_pvalue": False}


def test_served_preprocessing_converts_resizes_and_reads_files(tmp_path):
    from components.serving.serving import image_array

    rgb = np.zeros((40, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    (tmp_path / "red.png").write_bytes(png(rgb))
    grey = image_array(str(tmp_path / "red.png"), 28, 1)
    assert grey.shape == (1, 28, 28) and abs(int(grey.mean()) - 76) <= 1  # ITU-R 601 luma of red
    assert image_array(png(rgb), 16, 3).shape == (3, 16, 16)


def test_a_params_file_inherits_another_and_changes_only_what_it_says(tmp_path):
    (tmp_path / "base.yaml").write_text("finetune:\n  epochs: 3\n  batch_size: 8\n")
    (tmp_path / "job.yaml").write_text("inherit: base.yaml\ntask:\n  kind: image\nfinetune:\n  epochs: 5\n")
    params = load_params(tmp_path / "job.yaml")
    assert (params.task.kind, params.finetune.epochs, params.finetune.batch_size) == ("image", 5, 8)
    assert params.registered_model == "empythy-image-classifier"
    (tmp_path / "loop.yaml").write_text("inherit: loop.yaml\n")
    with pytest.raises(ConfigError, match="comes back"):
        load_params(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("inherit: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "orphan.yaml")


def test_settings_text_alone_supports_are_refused_for_images():
    with pytest.raises(ConfigError, match="pretrain on another labelled data set"):
        load_params_from({"task": {"kind": "image"}, "pretrain": {"enabled": True}})
    with pytest.raises(ConfigError, match="lora is built for text"):
        load_params_from({"task": {"kind": "image"}, "finetune": {"method": "lora"}})
    with pytest.raises(ConfigError, match="min_side"):
        load_params_from({"task": {"kind": "image", "image": {"min_side": 50, "max_side": 10}}})
    assert ImageTaskConfig().channels == 1


def load_params_from(raw: dict) -> Params:
    from components.core.config import parse_params

    return parse_params(raw)


def test_a_pixel_table_reads_as_images_and_a_manifest_is_not_one(tmp_path):
    from components.tasks.image_data import read_images

    rows = [",".join(map(str, [*(np.arange(16) * k % 256), k % 2])) for k in range(6)]
    (tmp_path / "digits.csv.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    frame, report = read_images(tmp_path / "digits.csv.gz")
    assert report.layout == "pixels" and len(frame) == 6 and set(frame["label"]) == {"0", "1"}
    assert (frame["width"] == 4).all() and (frame["mode"] == "L").all()
    (tmp_path / "a.png").write_bytes(png(np.zeros((9, 9), np.uint8)))
    (tmp_path / "manifest.csv").write_text("path,label\na.png,x\n")
    assert read_images(tmp_path / "manifest.csv")[1].layout == "manifest"


def test_a_built_in_set_keeps_its_class_names_when_read_from_its_copy_under_data(tmp_path):
    from pathlib import Path

    from components.tasks.image_data import BUILTIN_IMAGE_SETS

    installed = Path(BUILTIN_IMAGE_SETS["fashion-mnist"].path)
    if not installed.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist")
    copy = tmp_path / "data" / "fashion-mnist"
    copy.mkdir(parents=True)
    (copy / "t10k-images-idx3-ubyte.gz").write_bytes((installed / "t10k-images-idx3-ubyte.gz").read_bytes())
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes((installed / "t10k-labels-idx1-ubyte.gz").read_bytes())
    task = get_task(Params.model_validate({"task": {"kind": "image"}, "data": {"name": "fashion-mnist"}}))
    frame, _ = task.read(copy)
    assert set(frame["label"]) == set(BUILTIN_IMAGE_SETS["fashion-mnist"].labels)

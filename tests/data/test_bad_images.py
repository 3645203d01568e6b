"""Table-driven, for the image task: a bad image set ends the run at ingest or validation with one
line naming the file and the rule, a non-zero exit and the registry untouched; a valid but unusual
one (mixed sizes and modes, a stray README, one image under two labels) is accepted.

Runs the CLI's step commands in-process (what `dvc repro` runs) on real Fashion-MNIST images,
against a project whose registry already holds a staged version of the image model.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_project, run_bad_source, stage_a_version

FASHION = Path("/usr/share/datasets/fashion-mnist")
MODEL = "shirts-image-classifier"
IMAGE_OVERRIDES = ["task.kind=image", "data.name=shirts", "finetune.base_model=resnet-tiny",
                   "validate_data.min_rows=10", "validate_data.min_rows_per_class=2",
                   "validate_data.class_share_min=0"]
pytestmark = pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist "
                                "(.ci/run installs it)")


def fashion(n: int, label: int) -> list[np.ndarray]:
    """The first n 28x28 test images of one Fashion-MNIST class."""
    from components.tasks.image_data import read_idx

    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    return list(images[labels == label][:n])


def png(pixels: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def good_set(root: Path) -> Path:
    """Trousers and bags, eight each: a folder per class."""
    for name, label in (("Trouser", 1), ("Bag", 8)):
        (root / name).mkdir(parents=True)
        for i, pixels in enumerate(fashion(8, label)):
            (root / name / f"{i}.png").write_bytes(png(pixels))
    return root


def add(rel: str, content: bytes) -> Callable[[Path], Path]:
    def change(root: Path) -> Path:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
        return root
    return change


def sixteen_bit() -> bytes:
    return png(Image.fromarray((np.arange(28 * 28).reshape(28, 28) * 80).astype(np.uint16)))


def cmyk() -> bytes:
    return png(Image.fromarray(fashion(1, 8)[0]).convert("CMYK"), "JPEG")


def empty_folder(root: Path) -> Path:
    (root / "Sandal").mkdir()
    return root


def no_class_folders(root: Path) -> Path:
    flat = root.parent / "flat"
    flat.mkdir()
    for i, pixels in enumerate(fashion(4, 1)):
        (flat / f"{i}.png").write_bytes(png(pixels))
    return flat


def manifest(rows: str) -> Callable[[Path], Path]:
    def change(root: Path) -> Path:
        (root / "manifest.csv").write_text(rows)
        return root / "manifest.csv"
    return change


def idx_mismatch(root: Path) -> Path:
    folder = root.parent / "idx"
    folder.mkdir()
    images = np.stack(fashion(6, 1) + fashion(6, 8))
    header = b"\x00\x00\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    labels = np.array([1] * 6 + [8] * 5, dtype=np.uint8)  # one label short
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big") + labels.tobytes()))
    return folder


def mixed_but_valid(root: Path) -> Path:
    big = Image.fromarray(fashion(9, 8)[8]).resize((40, 32)).convert("RGB")
    (root / "Bag" / "big_rgb.jpg").write_bytes(png(big, "JPEG"))
    (root / "Bag" / "palette.png").write_bytes(png(Image.fromarray(fashion(10, 8)[9]).convert("P")))
    (root / "Trouser" / "README.txt").write_text("not an image: skipped and counted")
    (root / "Bag" / "dup.png").write_bytes((root / "Trouser" / "0.png").read_bytes())  # two labels: dropped
    return root


TRUNCATED = png(fashion(9, 8)[8])[:120]
# (id, change to the good set -> the path to ingest, step that stops, file named, rule); step None = accepted
CASES = [
    ("truncated png", add("Bag/cut.png", TRUNCATED), "validate_data", "Bag/cut.png", "image_decodes"),
    ("text named .png", add("Bag/notes.png", b"just some text\n"), "validate_data", "Bag/notes.png",
     "image_decodes"),
    ("zero bytes", add("Trouser/empty.png", b""), "validate_data", "Trouser/empty.png", "image_decodes"),
    ("16-bit png", add("Bag/deep.png", sixteen_bit()), "validate_data", "Bag/deep.png", "image_mode"),
    ("cmyk jpeg", add("Bag/print.jpg", cmyk()), "validate_data", "Bag/print.jpg", "image_mode"),
    ("a 4x4 image", add("Bag/icon.png", png(np.zeros((4, 4), np.uint8))), "validate_data", "Bag/icon.png",
     "image_width"),
    ("an empty label folder", empty_folder, "ingest", "Sandal", "empty_class_folder"),
    ("no class folders", no_class_folders, "ingest", "flat", "class_folders"),
    ("manifest names a missing file", manifest("path,label\nTrouser/0.png,Trouser\ngone.png,Bag\n"),
     "ingest", "manifest.csv", "file_exists"),
    ("manifest without labels", manifest("path\nTrouser/0.png\n"), "ingest", "manifest.csv",
     "required_column"),
    ("IDX labels fewer than images", idx_mismatch, "ingest", "train-labels-idx1-ubyte.gz", "idx_pair"),
    ("mixed sizes and modes, a README, one image under two labels", mixed_but_valid, None, None, None),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("bad_images") / "proj", IMAGE_OVERRIDES)
    stage_a_version(root, MODEL)
    return root


@pytest.mark.parametrize(("case", "change", "step", "named", "rule"), CASES, ids=[c[0] for c in CASES])
def test_bad_image_sets_stop_with_one_clear_line(project, tmp_path, capsys, case, change, step, named, rule):
    message = run_bad_source(project, MODEL, change(good_set(tmp_path / "images")), capsys, step)
    if message is None:
        return
    assert named in message and f"rule '{rule}'" in message, message


def test_the_accepted_set_keeps_what_it_should(project, tmp_path):
    """Mixed sizes and modes stay (resized at training); the README is skipped and counted; the image
    under two labels is dropped and counted."""
    from components.core.config import load_params
    from components.tasks import get_task

    task = get_task(load_params(project / "params.yaml"))
    frame, read = task.read(mixed_but_valid(good_set(tmp_path / "images")))
    cleaned, report = task.clean(frame)
    assert read.skipped_files == 1 and read.unreadable_images == 0
    sizes = set(zip(frame.width, frame.height, strict=True))
    assert {"RGB", "P", "L"} <= set(frame["mode"]) and {(40, 32), (28, 28)} <= sizes
    assert report.dropped["conflicting_labels"] == 2 and len(cleaned) == len(frame) - 2

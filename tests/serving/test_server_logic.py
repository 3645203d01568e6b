"""The server's pure parts: request limits, the batcher, the canary check (real tiny artifacts)."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from components.core.config import ServeConfig
from components.serving.live import Batcher, LoadedModel
from components.serving.server import BadRequest, parse_inputs
from components.serving.serving import CANARIES_FILE, canary_problem, open_classifier


def _loaded(folder: Path, version: str) -> LoadedModel:
    return LoadedModel("m", version, open_classifier(folder), "text", {}, "now", folder)


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "the body is not JSON"),
    (b'{"texts": ["a"]}', 400, 'expected a JSON object {"inputs": [...]}'),
    (b'{"inputs": []}', 400, '"inputs" must be a non-empty list'),
    (b'{"inputs": ["a", 3]}', 400, "input 1 is int, not a text"),
    (json.dumps({"inputs": ["a"] * 9}).encode(), 413, "9 inputs in one request; the limit is 8"),
    (json.dumps({"inputs": ["x" * 101]}).encode(), 413, "input 0 has 101 characters; the limit is 100"),
    (json.dumps({"inputs": ["x" * 2000]}).encode(), 413, "over the limit of 0.001 MB"),
])
def test_bad_requests_name_what_is_wrong(body, status, message):
    cfg = ServeConfig(max_inputs=8, max_text_chars=100, max_body_mb=0.001)
    with pytest.raises(BadRequest) as caught:
        parse_inputs(body, "text", cfg)
    assert caught.value.status == status and message in str(caught.value)


def test_audio_inputs_are_decoded_before_they_reach_a_batch():
    import numpy as np
    import soundfile as sf

    wav = io.BytesIO()
    sf.write(wav, np.zeros(1600), 16_000, format="WAV")
    good = base64.b64encode(wav.getvalue()).decode()
    assert parse_inputs(json.dumps({"inputs": [good]}).encode(), "audio", ServeConfig()) == [wav.getvalue()]
    with pytest.raises(BadRequest, match=r"input 0 is not audio this model can read \(Format not recognised"):
        parse_inputs(json.dumps({"inputs": [base64.b64encode(b"RIFF but not").decode()]}).encode(), "audio",
                     ServeConfig())
    with pytest.raises(BadRequest, match="input 0 is int, not a base64-encoded audio file"):
        parse_inputs(json.dumps({"inputs": [3]}).encode(), "audio", ServeConfig())


def test_image_inputs_are_decoded_before_they_reach_a_batch():
    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (12, 12)).save(png, "PNG")
    good = base64.b64encode(png.getvalue()).decode()
    assert parse_inputs(json.dumps({"inputs": [good]}).encode(), "image", ServeConfig()) == [png.getvalue()]
    with pytest.raises(BadRequest, match="input 1 is not base64"):
        parse_inputs(json.dumps({"inputs": [good, "%%%"]}).encode(), "image", ServeConfig())
    huge = io.BytesIO()
    Image.new("1", (7000, 7000)).save(huge, "PNG")  # a few KB that would decode to 49M pixels
    with pytest.raises(BadRequest, match="input 0 is 7000x7000 pixels; the limit is 40,000,000") as caught:
        parse_inputs(json.dumps({"inputs": [base64.b64encode(huge.getvalue()).decode()]}).encode(), "image",
                     ServeConfig())
    assert caught.value.status == 413
    with pytest.raises(BadRequest, match=r"input 0 is not an image this model can read \(cannot identify"):
        parse_inputs(json.dumps({"inputs": [base64.b64encode(b"GIF8 but not").decode()]}).encode(), "image",
                     ServeConfig())


def test_batcher_groups_waiting_requests_per_model_and_isolates_a_bad_one(artifacts):
    one, two = _loaded(artifacts["one"], "1"), _loaded(artifacts["two"], "2")
    sizes, first_running, release = [], threading.Event(), threading.Event()

    def on_batch(size: int) -> None:
        sizes.append(size)
        if len(sizes) == 1:  # hold the first batch so the others queue up behind it
            first_running.set()
            release.wait(10)

    batcher = Batcher(max_batch=32, max_wait_ms=0, on_batch=on_batch)
    try:
        head = batcher.submit(one, ["first"])
        assert first_running.wait(10)
        texts = [f"text number {i}" for i in range(6)]
        jobs = [(model, [text], batcher.submit(model, [text]))
                for text, model in zip(texts, [one, two, one, two, one, two], strict=True)]
        bad = batcher.submit(one, [None])  # the tokenizer refuses it: only this request fails
        release.set()
        head.result(10)
        for model, inputs, future in jobs:
            np.testing.assert_allclose(future.result(10), model.model.logits(inputs), rtol=1e-4, atol=1e-5)
        with pytest.raises(TypeError):
            bad.result(10)
    finally:
        batcher.close()
    # The first alone; then one run per model, in arrival order: model one's 3 texts and the bad one
    # (4), which fails, so those 4 run again one by one; then model two's 3 texts.
    assert sizes == [1, 4, 1, 1, 1, 1, 3]


def test_canaries_catch_a_version_that_answers_otherwise(artifacts, tmp_path):
    import shutil

    model = open_classifier(artifacts["one"])
    assert canary_problem(model, artifacts["one"]) is None
    recorded = json.loads((artifacts["one"] / CANARIES_FILE).read_text())
    assert len(recorded["inputs"]) == len(recorded["labels"]) >= 3

    # The same canaries against the other seed's graph: other answers, so refused.
    swapped = tmp_path / "swapped"
    shutil.copytree(artifacts["two"], swapped)
    flipped = ["positive" if x != "positive" else "negative" for x in recorded["labels"]]
    wrong = {**recorded, "labels": flipped}
    wrong["fallback_labels"] = wrong["labels"]
    (swapped / CANARIES_FILE).write_text(json.dumps(wrong))
    problem = canary_problem(open_classifier(swapped), swapped)
    assert problem is not None and "export recorded" in problem

    (swapped / CANARIES_FILE).unlink()  # an artifact from before canaries.json: default inputs
    assert canary_problem(open_classifier(swapped), swapped) is None


def test_serve_mistakes_are_one_line(tmp_path, capsys):
    import socket

    from mlflow import MlflowClient

    from pipelines.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("known")
    (tmp_path / "params.yaml").write_text(f"registry:\n  tracking_uri: {uri}\n")
    params = ["--params", str(tmp_path / "params.yaml")]
    capsys.readouterr()  # MLflow's notes on creating the database
    for model in ("known", "unknown"):
        assert main(["serve", model, "--port", "0", *params]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"fmpipe: error: {model} has no version with alias 'production' (or no such model): "
                       "promote one first, or serve another alias (--alias staging)"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "known", "--port", str(port), *params]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fmpipe: error: cannot listen on 127.0.0.1:{port}: ")

"""Each step on tiny real data with a tiny random-init BERT, tracked in a throwaway sqlite MLflow."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import pytest

from components.core.errors import GateError
from components.core.evaluation import EVALUATION_FILE, champion_floor
from components.core.tracking import RunContext, connect
from components.evaluate import step as evaluate_step
from components.export_onnx import step as export_step
from components.finetune import step as finetune_step
from components.ingest import step as ingest_step
from components.registry import step as registry_step
from components.registry.registry import current_alias_version, promote, register_model
from components.registry.step import artifact_contract
from components.tasks.text import TextTask
from components.validate_data import step as validate_step


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_csv, tiny_params):
    """Run every step once, in DAG order; the tests below inspect what each left behind."""
    root = tmp_path_factory.mktemp("steps")
    ctx = RunContext(pipeline_run_id="component-test", tracking_uri=f"sqlite:///{root}/mlflow.db",
                     artifact_root=str(root / "artifacts"), data_source=str(tiny_csv))
    d = {name: root / name for name in ("data", "validation", "model", "evaluation", "onnx")}
    out = {"ctx": ctx, "dirs": d, "params": tiny_params}
    out["ingest"] = ingest_step.run(tiny_csv, d["data"], tiny_params, ctx)
    out["validation"] = validate_step.run(d["data"], d["validation"], tiny_params, ctx)
    out["finetune"] = finetune_step.run(d["data"], d["model"], tiny_params, ctx)
    out["evaluation"] = evaluate_step.run(d["data"], d["model"], d["evaluation"], tiny_params, ctx)
    out["export"] = export_step.run(d["data"], d["model"], d["onnx"], tiny_params, ctx)
    out["parity"] = out["export"].parity
    out["version"] = registry_step.run_register(
        d["onnx"], tiny_params, ctx, out["ingest"]["data_md5"], True, out["parity"].passed,
        {"test_macro_f1": out["evaluation"].model["macro_f1"]}, asdict(out["evaluation"]))
    out["move"] = registry_step.run_promote(out["version"], tiny_params, ctx)
    return out


def test_ingest_cleans_and_accounts_for_every_row(chain):
    report = chain["ingest"]
    dropped = sum(report["clean"]["dropped"].values())
    assert report["read"]["rows_read"] - dropped == sum(report["rows"].values())
    assert report["read"]["lines_with_invalid_utf8"] > 0  # the real corpus is not valid UTF-8
    assert set(report["labels"]) == {"negative", "neutral", "positive"}
    assert all((chain["dirs"]["data"] / f"{s}.parquet").exists() for s in ("train", "val", "test"))


def test_validation_passes_on_clean_real_data_and_leaves_a_report(chain):
    assert chain["validation"].success
    assert (chain["dirs"]["validation"] / "report.html").exists()
    result = json.loads((chain["dirs"]["validation"] / "result.json").read_text())
    assert result["success"] and "great_expectations" in result


def test_finetune_saves_a_loadable_model_with_its_label_map(chain):
    model_dir: Path = chain["dirs"]["model"]
    assert (model_dir / "model.safetensors").exists()
    assert (model_dir / "tokenizer.json").exists()
    assert json.loads((model_dir / "labels.json").read_text())["labels"] == [
        "negative", "neutral", "positive"]
    result = chain["finetune"]
    assert result.steps > 0 and result.history and result.samples_per_second > 0


def test_evaluate_reports_model_baselines_and_blessing(chain):
    evaluation = chain["evaluation"]
    assert set(evaluation.baselines) == {"majority", "tfidf_logreg"}
    # The headline figures agree with the confusion matrix they came from (rows = truth).
    cm = np.array(evaluation.model["confusion_matrix"], dtype=float)
    assert cm.sum() == chain["ingest"]["rows"]["test"]
    tp, predicted, actual = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    f1 = np.divide(2 * tp, predicted + actual, out=np.zeros_like(tp), where=(predicted + actual) > 0)
    assert evaluation.model["macro_f1"] == pytest.approx(f1.mean())
    assert evaluation.model["accuracy"] == pytest.approx(tp.sum() / cm.sum())
    # TF-IDF genuinely learns something from the real tweets; majority class cannot.
    assert evaluation.baselines["tfidf_logreg"]["macro_f1"] > evaluation.baselines["majority"]["macro_f1"]
    assert (chain["dirs"]["evaluation"] / "confusion_matrix.png").stat().st_size > 1000
    assert evaluation.blessing.blessed  # the tiny params turn the baseline gate off


def test_onnx_export_matches_pytorch(chain):
    parity = chain["parity"]
    assert parity.passed
    assert parity.max_abs_logit_diff < 1e-4
    assert parity.argmax_agreement == 1.0
    assert parity.rows == chain["ingest"]["rows"]["test"]


def test_export_fuses_the_graph_and_ships_the_variant_that_passed_its_gate(chain):
    import onnx

    from components.serving.serving import openvino_bf16_available, openvino_int8_available

    result, cfg = chain["export"], chain["params"].export_onnx
    assert result.fused.get("Attention", 0) == 2 and result.fused.get("SkipLayerNormalization", 0) > 0
    built = {"fp32", "optimized", "int8"} | ({"openvino_bf16"} if openvino_bf16_available() else set()) \
        | ({"openvino_int8"} if openvino_int8_available() else set())
    assert set(result.macro_f1) == {"torch"} | built
    reduced = built & {"int8", "openvino_bf16", "openvino_int8"}
    assert result.f1_loss == {n: result.macro_f1["torch"] - result.macro_f1[n] for n in reduced}
    passing = [n for n in cfg.ship_preference
               if n in built and result.f1_loss.get(n, 0.0) <= cfg.max_quantized_f1_loss]
    assert result.shipped == passing[0]
    shipped = onnx.load(str(chain["dirs"]["onnx"] / "model.onnx"))
    ops = {n.op_type for n in shipped.graph.node}
    assert ("DynamicQuantizeMatMul" in ops) == (result.shipped == "int8")
    assert ("QuantizeLinear" in ops) == (result.shipped == "openvino_int8")  # NNCF's static int8
    # openvino_bf16 / _int8 start from the plain fp32 graph (no fused operators): parity was proven on it.
    assert ("Attention" in ops) == (result.shipped in ("optimized", "int8"))
    assert set(result.timings) == {"torch_fp32", "torch_bf16"} | {f"onnx_{n}" for n in built}
    assert set(result.agreement) == built and result.agreement["fp32"] == 1.0
    assert result.smoke["passed"] and not result.smoke["torch_loaded"]


def test_shipped_runtime_is_the_one_serving_uses(chain):
    """serving.json names the runtime; where it is OpenVINO in bf16 (or int8), it really computes
    so (logits close to, but not equal to, the same graph on onnxruntime)."""
    from components.serving.serving import OnnxTextClassifier

    onnx_dir, result = chain["dirs"]["onnx"], chain["export"]
    served = OnnxTextClassifier(onnx_dir)
    assert served.runtime == result.runtime
    texts = ["what a lovely day", "this is awful, I hate it", "the bus comes at nine"] * 4
    if not result.runtime.startswith("openvino"):
        pytest.skip(f"shipped runtime is {result.runtime}; no OpenVINO path is in use here")
    assert served.session.backend == {"openvino_bf16": "openvino CPU bf16",
                                      "openvino_int8": "openvino CPU int8"}[result.runtime]
    plain = OnnxTextClassifier(onnx_dir, runtime="onnxruntime")
    assert plain.session.backend == "onnxruntime CPUExecutionProvider"
    diff = np.abs(served.logits(texts) - plain.logits(texts)).max()
    assert 0 < diff < 0.1


def test_the_shipped_classifier_serves_threads_at_once(chain):
    # A scoring server calls one loaded model from several threads: nobody gets another's answer.
    from concurrent.futures import ThreadPoolExecutor

    from components.serving.serving import OnnxTextClassifier

    served = OnnxTextClassifier(chain["dirs"]["onnx"])
    texts = [["what a lovely day"] * 3, ["this is awful, I hate it"], ["the bus comes at nine"] * 2,
             ["no idea what to think about this film honestly"] * 5]
    expected = [served.logits(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(25):
            got = list(pool.map(served.logits, texts))
            for want, have in zip(expected, got, strict=True):
                assert np.array_equal(want, have)


def test_without_openvino_the_same_graph_serves_on_onnxruntime(chain, monkeypatch, capsys):
    from components.serving.serving import (
        OnnxTextClassifier,
        openvino_bf16_available,
        openvino_int8_available,
    )

    onnx_dir, result = chain["dirs"]["onnx"], chain["export"]
    if not result.runtime.startswith("openvino"):
        pytest.skip(f"shipped runtime is {result.runtime}; nothing to fall back from")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    openvino_bf16_available.cache_clear()
    openvino_int8_available.cache_clear()
    try:
        served = OnnxTextClassifier(onnx_dir)
    finally:
        openvino_bf16_available.cache_clear()  # the next caller sees this machine as it is
        openvino_int8_available.cache_clear()
    assert served.runtime == result.runtime
    assert served.session.backend == "onnxruntime CPUExecutionProvider"
    path = "bf16" if result.runtime == "openvino_bf16" else "int8 units"
    assert f"OpenVINO with {path} is not available here" in capsys.readouterr().err
    texts = ["what a lovely day", "this is awful, I hate it"]
    plain = OnnxTextClassifier(onnx_dir, runtime="onnxruntime")
    assert np.array_equal(served.logits(texts), plain.logits(texts))
    assert result.smoke["fallback_labels"] == plain.predict(list(TextTask().canary_inputs))


def test_registered_version_is_servable_from_the_registry_alone(chain):
    ctx, params = chain["ctx"], chain["params"]
    mlflow.set_tracking_uri(ctx.tracking_uri)
    name = params.registered_model
    assert chain["move"].version == chain["version"]
    assert current_alias_version(name, "staging") == chain["version"]
    tags = mlflow.MlflowClient().get_model_version(name, chain["version"]).tags
    assert tags["fmpipe.data_md5"] == chain["ingest"]["data_md5"]
    assert tags["fmpipe.pipeline_run_id"] == "component-test"
    model = mlflow.pyfunc.load_model(f"models:/{name}@staging")
    predictions = model.predict(["what a great day", "this is awful"])
    assert list(predictions.columns) == ["label", "probability"] and len(predictions) == 2
    assert set(predictions["label"]) <= {"negative", "neutral", "positive"}
    assert predictions["probability"].between(1 / 3, 1).all()  # the top of three classes


def test_a_registered_version_shows_its_signature_example_and_description(chain):
    import pandas as pd

    ctx, params = chain["ctx"], chain["params"]
    mlflow.set_tracking_uri(ctx.tracking_uri)
    name, client = params.registered_model, mlflow.MlflowClient()
    model = mlflow.pyfunc.load_model(f"models:/{name}/{chain['version']}")
    assert model.metadata.get_input_schema().input_types() == [mlflow.types.DataType.string]
    assert model.metadata.get_output_schema().input_names() == ["label", "probability"]
    assert model.metadata.saved_input_example_info is not None
    with pytest.raises(mlflow.exceptions.MlflowException):  # MLflow enforces the signature
        model.predict(pd.DataFrame({"text": [1.5]}))
    description = client.get_model_version(name, chain["version"]).description
    evaluation = chain["evaluation"]
    first, second = description.splitlines()
    assert f"Test macro-F1 {evaluation.model['macro_f1']:.4f}" in first and "tfidf_logreg" in first
    assert second.startswith("Blessed" if evaluation.blessing.blessed else "Not blessed")
    assert "ONNX parity passed" in second and "ships the" in second
    assert "text-classification with labels [negative, neutral, positive]" in \
        client.get_registered_model(name).description


def test_predict_labels_texts_with_the_registered_artifact(chain, capsys):
    from components.serving.serving import OnnxTextClassifier
    from pipelines.cli import main
    from tests.conftest import REPO

    name, uri = chain["params"].registered_model, chain["ctx"].tracking_uri
    texts = ["what a lovely day", "this is awful, I hate it"]
    assert main(["predict", name, *texts, "--alias", "staging", "--params", str(REPO / "params.yaml"),
                 "-S", f"registry.tracking_uri={uri}"]) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.startswith(f"{name} version {chain['version']} (alias staging), served by ")
    served = OnnxTextClassifier(chain["dirs"]["onnx"])  # the artifact that was registered
    assert [row.split()[0] for row in rows] == served.predict(texts)
    assert all(0 < float(row.split()[1]) <= 1 for row in rows)
    assert main(["predict", name, "--alias", "production", "--params", str(REPO / "params.yaml"),
                 "-S", f"registry.tracking_uri={uri}", "--file", str(REPO / "README.md")]) == 1
    assert "alias production not found" in capsys.readouterr().err


def test_promote_refuses_a_version_that_was_not_blessed(chain):
    ctx, params = chain["ctx"], chain["params"]
    name = params.registered_model
    # In the test store's experiment: MLflow's Default one keeps artifacts in ./mlruns (the repo).
    with mlflow.start_run(experiment_id=connect(ctx)):
        version = register_model(chain["dirs"]["onnx"], name,
                                 {"fmpipe.blessed": "false", "fmpipe.parity_passed": "true"}, {},
                                 artifact_contract(chain["dirs"]["onnx"]))
    with pytest.raises(GateError, match="was not blessed"):
        promote(name, version, "staging", reason="test", actor="test")
    assert current_alias_version(name, "staging") == chain["version"]


def test_drift_is_measured_against_the_production_models_data(chain, tiny_csv):
    """Once a version holds `production`, validation compares new data with its training data."""
    from components.core.dataset import read_splits
    from components.validate_data.step import drift_checks

    ctx, params = chain["ctx"], chain["params"]
    mlflow.set_tracking_uri(ctx.tracking_uri)
    data_dir = chain["dirs"]["data"]
    assert drift_checks(data_dir, params, read_splits(data_dir)) == ([], {})  # no production yet
    mlflow.MlflowClient().set_registered_model_alias(params.registered_model, "production",
                                                     chain["version"])
    checks, figures = drift_checks(data_dir, params, read_splits(data_dir))
    assert [c.rule for c in checks] == ["label_psi", "text_length_ks_pvalue", "oov_rate"]
    assert all(c.success for c in checks)  # the same data: no drift
    assert figures["drift_label_psi"] < 1e-9 and figures["drift_oov_rate"] == 0.0


def test_evaluate_compares_the_challenger_with_the_production_champion(chain, tmp_path):
    """Runs after the drift test put `production` on the registered version."""
    ctx, params, d = chain["ctx"], chain["params"], chain["dirs"]
    result = evaluate_step.run(d["data"], d["model"], tmp_path / "eval", params, ctx)
    assert result.champion["version"] == chain["version"]
    # The champion is this very model, served from its ONNX artifact: nearly the same score.
    assert abs(result.champion["metrics"]["macro_f1"] - result.model["macro_f1"]) < 0.05
    names = [c.name for c in result.blessing.checks]
    assert any(n.startswith("macro_f1 vs champion") for n in names)
    for png in ("confusion_matrix.png", "reliability.png", "slices.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 1000
    # Export holds a reduced-precision variant to the same champion rule (min_delta 0 here).
    floor = champion_floor(json.loads((tmp_path / "eval" / EVALUATION_FILE).read_text()))
    assert floor == pytest.approx(result.champion["metrics"]["macro_f1"])
    exported = export_step.run(d["data"], d["model"], tmp_path / "onnx", params, ctx, tmp_path / "eval")
    assert exported.champion_floor == floor
    if exported.shipped in ("int8", "openvino_bf16", "openvino_int8"):
        assert exported.macro_f1[exported.shipped] >= floor


def test_without_a_production_model_the_fallback_alias_is_the_champion(chain, tmp_path):
    ctx, d = chain["ctx"], chain["dirs"]
    params = chain["params"].model_copy(deep=True)
    params.evaluate.champion.alias = "no-such-alias"  # as before the first production release
    alone = evaluate_step.run(d["data"], d["model"], tmp_path / "alone", params, ctx)
    assert alone.champion is None
    params.evaluate.champion.fallback_alias = "staging"
    result = evaluate_step.run(d["data"], d["model"], tmp_path / "eval", params, ctx)
    assert result.champion["version"] == current_alias_version(params.registered_model, "staging")
    assert any(c.name.startswith("macro_f1 vs champion") for c in result.blessing.checks)

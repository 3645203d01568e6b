"""Which ONNX variant ships: the first in ship_preference that was built and passed its gate."""

from __future__ import annotations

import pytest

from components.core.config import ExportConfig
from components.export_onnx.export import select_variant

ALL = ["fp32", "optimized", "int8", "openvino_bf16"]


def test_the_first_preferred_variant_that_passes_ships():
    cfg = ExportConfig()
    assert select_variant(ALL, {"int8": 0.004, "openvino_bf16": 0.001}, cfg) == "openvino_bf16"


def test_a_reduced_precision_variant_over_the_loss_gate_is_passed_over():
    cfg = ExportConfig(max_quantized_f1_loss=0.01)
    assert select_variant(ALL, {"int8": 0.004, "openvino_bf16": 0.02}, cfg) == "int8"
    assert select_variant(ALL, {"int8": 0.03, "openvino_bf16": 0.02}, cfg) == "optimized"


def test_a_variant_not_built_here_is_skipped():
    cfg = ExportConfig()
    assert select_variant(["fp32", "optimized", "int8"], {"int8": 0.0}, cfg) == "int8"


def test_a_reduced_precision_variant_without_a_measured_loss_never_ships():
    assert select_variant(ALL, {}, ExportConfig()) == "optimized"


def test_the_preference_is_the_users():
    cfg = ExportConfig(ship_preference=["int8", "openvino_bf16"])
    assert select_variant(ALL, {"int8": 0.0, "openvino_bf16": 0.0}, cfg) == "int8"
    cfg = ExportConfig(ship_preference=["fp32"])
    assert select_variant(ALL, {"int8": 0.0}, cfg) == "fp32"


def test_nothing_preferred_was_built_falls_back_to_the_plainest_graph():
    cfg = ExportConfig(ship_preference=["openvino_bf16"])
    assert select_variant(["fp32", "optimized"], {}, cfg) == "optimized"
    assert select_variant(["fp32"], {}, cfg) == "fp32"


def test_unknown_variant_names_are_refused():
    with pytest.raises(ValueError):
        ExportConfig(ship_preference=["fp16"])


def test_a_reduced_precision_variant_below_the_champion_floor_is_passed_over():
    cfg = ExportConfig(max_quantized_f1_loss=0.01)
    losses = {"int8": 0.008, "openvino_bf16": 0.004}
    f1 = {"torch": 0.800, "int8": 0.792, "openvino_bf16": 0.796}
    assert select_variant(ALL, losses, cfg, f1, f1_floor=0.795) == "openvino_bf16"
    assert select_variant(ALL, losses, cfg, f1, f1_floor=0.797) == "optimized"  # computes what was blessed
    assert select_variant(ALL, losses, cfg, f1, f1_floor=None) == "openvino_bf16"


def test_the_champion_floor_is_the_threshold_of_evaluates_champion_check():
    from components.core.evaluation import champion_floor

    checks = [{"name": "macro_f1 > majority baseline", "threshold": 0.2},
              {"name": "macro_f1 vs champion (by 0.01)", "threshold": 0.81}]
    assert champion_floor({"blessing": {"checks": checks}}) == 0.81
    assert champion_floor({"blessing": {"checks": checks[:1]}}) is None  # no champion: no floor


def test_openvino_int8_ships_first_where_built_and_within_the_gate():
    built = [*ALL, "openvino_int8"]
    cfg = ExportConfig(max_quantized_f1_loss=0.01)
    assert select_variant(built, {"openvino_int8": 0.006, "openvino_bf16": 0.0}, cfg) == "openvino_int8"
    assert select_variant(built, {"openvino_int8": 0.011, "openvino_bf16": 0.0}, cfg) == "openvino_bf16"
    not_built = {"openvino_int8": 0.0, "openvino_bf16": 0.0}
    assert select_variant(ALL, not_built, cfg) == "openvino_bf16"


def test_int8_units_are_read_from_the_cpu_flags(tmp_path):
    from components.serving.serving import INT8_DOT_FLAGS, cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n")
    assert cpu_flags(info) & set(INT8_DOT_FLAGS) == {"avx512_vnni"}
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n")
    assert not cpu_flags(info) & set(INT8_DOT_FLAGS)
    assert cpu_flags(tmp_path / "missing") == set()

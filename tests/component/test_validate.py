"""Great Expectations really runs the suite built from params."""

import pandas as pd
import pytest

from components.core.config import ValidateConfig
from components.core.errors import DataError
from components.validate_data.validate import raise_on_failure, render_html, validate_splits

LABELS = ["neg", "pos"]
CFG = ValidateConfig(labels=LABELS, min_rows=6, text_max_chars=20)


def splits(**changes):
    base = {
        "train": pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["neg", "pos", "neg", "pos"]}),
        "val": pd.DataFrame({"text": ["e"], "label": ["neg"]}),
        "test": pd.DataFrame({"text": ["f"], "label": ["pos"]}),
    }
    base.update(changes)
    return base


def first_failure(report):
    return (report.failures[0].table, report.failures[0].column, report.failures[0].rule)


def test_clean_splits_pass_every_check():
    report = validate_splits(splits(), CFG, LABELS)
    assert report.success and len(report.checks) == 8 * 3 + 1 + 1 + 2 + 1
    raise_on_failure(report, "f.csv")  # does not raise


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"val": pd.DataFrame({"text": ["e"], "label": ["angry"]})},
         ("val", "label", "expect_column_values_to_be_in_set")),
        ({"test": pd.DataFrame({"text": ["x" * 50], "label": ["pos"]})},
         ("test", "text", "expect_column_value_lengths_to_be_between")),
        ({"test": pd.DataFrame({"text": ["a"], "label": ["neg"]})},
         ("leakage", "text", "no_text_shared_between_splits")),
        ({"train": pd.DataFrame({"text": ["a", "a", "c", "d"], "label": ["neg", "pos"] * 2})},
         ("train", "text", "expect_column_proportion_of_unique_values_to_be_between")),
        ({"train": pd.DataFrame({"text": ["a", None, "c", "d"], "label": ["neg", "pos"] * 2})},
         ("train", "text", "expect_column_values_to_not_be_null")),
        ({"train": pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["neg"] * 4})},
         ("train", "label", "expect_column_distinct_values_to_contain_set")),
        ({"train": pd.DataFrame({"text": ["a", "b", "c", 4], "label": ["neg", "pos"] * 2})},
         ("train", "text", "expect_column_values_to_be_of_type")),
    ],
)
def test_each_rule_catches_its_defect(change, expected):
    report = validate_splits(splits(**change), CFG, LABELS)
    assert not report.success
    assert first_failure(report) == expected


def test_row_count_bound():
    report = validate_splits(splits(), ValidateConfig(labels=["neg", "pos"], min_rows=100), LABELS)
    assert first_failure(report) == ("all_splits", None, "expect_table_row_count_to_be_between")


def test_failure_message_names_file_user_column_and_rule():
    report = validate_splits(splits(val=pd.DataFrame({"text": ["e"], "label": ["angry"]})), CFG, LABELS)
    with pytest.raises(DataError) as err:
        raise_on_failure(report, "data/tweets.csv", {"label": "sentiment"})
    message = str(err.value)
    assert message.startswith("data/tweets.csv [val]: column 'sentiment': rule "
                              "'expect_column_values_to_be_in_set' failed")
    assert "angry" in message


def test_html_report_is_self_contained():
    page = render_html(validate_splits(splits(), CFG, LABELS), "t")
    assert "PASSED" in page and "<table>" in page
    assert "http://" not in page and "https://" not in page


def test_class_count_and_balance_rules_with_their_severity():
    skewed = splits(train=pd.DataFrame({"text": list("abcdefghij"), "label": ["neg"] * 9 + ["pos"]}))
    cfg = ValidateConfig(labels=LABELS, min_rows_per_class=2, class_share_min=0.2,
                         severity={"class_balance": "warn"})
    report = validate_splits(skewed, cfg, LABELS)
    assert first_failure(report) == ("train_classes", "label", "min_rows_per_class")
    assert "pos" in report.failures[0].detail
    assert [(c.rule, c.severity) for c in report.warnings] == [("class_balance", "warn")]


def test_warn_severity_reports_without_stopping():
    cfg = ValidateConfig(labels=LABELS, min_rows=100,
                         severity={"expect_table_row_count_to_be_between": "warn"})
    report = validate_splits(splits(), cfg, LABELS)
    assert report.success and len(report.warnings) == 1
    raise_on_failure(report, "f.csv")  # a warning never stops the run


def test_a_failed_bound_names_the_bound_the_value_seen_and_the_setting():
    report = validate_splits(splits(test=pd.DataFrame({"text": ["x" * 57], "label": ["pos"]})), CFG, LABELS)
    detail = report.failures[0].detail
    assert "bound: between 1 and 20" in detail and "observed lengths 57..57 chars" in detail
    assert "set by validate_data.text_min_chars / text_max_chars (or text_max_chars in " in detail
    counts = validate_splits(splits(), ValidateConfig(labels=LABELS, min_rows=100), LABELS)
    assert "observed 6" in counts.failures[0].detail and "bound: between 100 and" in counts.failures[0].detail
    assert "set by validate_data.min_rows / max_rows" in counts.failures[0].detail

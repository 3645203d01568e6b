"""validate_data: a Great Expectations 1.x suite built from params, run on every split.

Great Expectations is imported here only, so only the step that validates pays its import time.
Each expectation carries a severity in its meta: `error` stops the run, `warn` is reported.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from components.core.config import ValidateConfig
from components.core.dataset import LABEL, SPLITS, TEXT
from components.core.errors import DataError
from components.tasks import get_task
from components.tasks.base import Task

ALL = "all_splits"            # every split together, for the row-count rule
UNIQUE_PER_SPLIT = "leakage"  # one row per (split, distinct example key), for the leakage rule
CLASSES = "train_classes"     # one row per label of the train split: count and share

# Our names for the rules that Great Expectations expresses on a derived table.
RULE_NAMES = {
    (UNIQUE_PER_SPLIT, "expect_column_values_to_be_unique"): "no_text_shared_between_splits",
    (CLASSES, "count"): "min_rows_per_class",
    (CLASSES, "share"): "class_balance",
}


@dataclass
class Check:
    table: str
    rule: str
    column: str | None
    success: bool
    severity: str
    detail: str


@dataclass
class ValidationReport:
    success: bool
    checks: list[Check] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # Great Expectations' own JSON, per table

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.success and c.severity == "error"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.success and c.severity == "warn"]


def build_suites(cfg: ValidateConfig, labels: list[str], task: Task | None = None) -> dict[str, list[Any]]:
    """Expectations per table, generated from params: the task's on its inputs, then the label,
    duplicate, size, class and leakage rules every task shares."""
    import great_expectations.expectations as gxe

    task = task or get_task()

    def per_split() -> list[Any]:  # fresh objects per table: a suite takes ownership
        return [
            *task.expectations(labels, cfg),
            gxe.ExpectColumnValuesToNotBeNull(column=LABEL),
            gxe.ExpectColumnValuesToBeOfType(column=LABEL, type_="str"),
            gxe.ExpectColumnValuesToBeInSet(column=LABEL, value_set=list(labels)),
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column=task.key_column, min_value=1.0 - cfg.max_duplicate_rate),
        ]

    suites: dict[str, list[Any]] = {name: per_split() for name in SPLITS}
    suites["train"].append(gxe.ExpectColumnDistinctValuesToContainSet(column=LABEL, value_set=labels))
    suites[ALL] = [gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows, max_value=cfg.max_rows)]
    suites[CLASSES] = [
        gxe.ExpectColumnValuesToBeBetween(column="count", min_value=cfg.min_rows_per_class),
        gxe.ExpectColumnValuesToBeBetween(
            column="share", min_value=cfg.class_share_min, max_value=cfg.class_share_max),
    ]
    if cfg.require_no_leakage:
        suites[UNIQUE_PER_SPLIT] = [gxe.ExpectColumnValuesToBeUnique(column=task.key_column)]
        for column in task.exclusive_columns:
            suites[f"{UNIQUE_PER_SPLIT}_{column}"] = [gxe.ExpectColumnValuesToBeUnique(column=column)]
    return suites


def _tables(splits: dict[str, pd.DataFrame], key: str, exclusive: tuple[str, ...] = ()
            ) -> dict[str, pd.DataFrame]:
    tables = dict(splits)
    tables[ALL] = pd.concat(splits.values(), ignore_index=True)
    tables[UNIQUE_PER_SPLIT] = pd.concat(
        [pd.DataFrame({key: part[key].dropna().unique()}) for part in splits.values()],
        ignore_index=True,
    )
    for column in exclusive:  # one row per (split, distinct value): a value in two splits repeats
        values = [part[column].dropna().astype(str) for part in splits.values() if column in part]
        tables[f"{UNIQUE_PER_SPLIT}_{column}"] = pd.DataFrame(
            {column: pd.concat([v[v != ""].drop_duplicates() for v in values] or [pd.Series(dtype=str)],
                               ignore_index=True)})
    counts = splits["train"][LABEL].value_counts()
    tables[CLASSES] = pd.DataFrame({
        LABEL: counts.index.astype(str), "count": counts.to_numpy(),
        "share": counts.to_numpy() / max(int(counts.sum()), 1),
    })
    return tables


def _describe(result: dict[str, Any]) -> str:
    if result.get("unexpected_count"):
        distinct = dict.fromkeys(str(v)[:60] for v in result.get("partial_unexpected_list") or [])
        examples = list(distinct)[:3]
        return f"{result['unexpected_count']} unexpected value(s), e.g. {examples}"
    if "observed_value" in result:
        return f"observed {result['observed_value']!r}"
    return "failed"


# The setting that changes each rule's bound (validate_data.* in params; the label set and the text
# bound come from the data set's schema unless params set them).
SCHEMA = "data/<name>.schema.yaml"
SETTINGS = {
    "expect_column_value_lengths_to_be_between":
        f"validate_data.text_min_chars / text_max_chars (or text_max_chars in {SCHEMA})",
    "expect_column_values_to_be_in_set": f"validate_data.labels (or labels in {SCHEMA})",
    "expect_column_distinct_values_to_contain_set": f"validate_data.labels (or labels in {SCHEMA})",
    "expect_table_row_count_to_be_between": "validate_data.min_rows / max_rows",
    "expect_column_proportion_of_unique_values_to_be_between": "validate_data.max_duplicate_rate",
    "min_rows_per_class": "validate_data.min_rows_per_class",
    "class_balance": "validate_data.class_share_min / class_share_max",
}


def _bound(kwargs: dict[str, Any]) -> str:
    """An expectation's bound in words: `between 1 and 500`, `at least 20`, `one of [a, b]`."""
    if kwargs.get("value_set") == [""]:  # a column that names a problem: empty means none
        return "no error"
    if "value_set" in kwargs:
        return f"one of [{', '.join(map(str, kwargs['value_set']))}]"
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    if low is not None:
        return f"at least {low:g}"
    return f"at most {high:g}" if high is not None else ""


def _explained(detail: str, rule: str, expectation_type: str, kwargs: dict[str, Any],
               table: pd.DataFrame, task: Task) -> str:
    """A failed rule's detail with its bound, the value observed and the setting that changes it."""
    parts = [detail]
    if bound := _bound(kwargs):
        parts.append(f"bound: {bound}")
    if expectation_type == "expect_column_value_lengths_to_be_between" and TEXT in table:
        lengths = table[TEXT].dropna().astype(str).str.len()
        parts.append(f"observed lengths {int(lengths.min())}..{int(lengths.max())} chars")
    if setting := task.settings_for(expectation_type, kwargs.get("column")) or SETTINGS.get(rule) \
            or SETTINGS.get(expectation_type):
        parts.append(f"set by {setting}")
    return "; ".join(parts)


def _rule_name(table: str, expectation_type: str, column: str | None, task: Task) -> str:
    # The task's name first: the recommender's leakage rule is about (user, item) pairs, not texts.
    return (task.rule_names.get((expectation_type, column or "")) or RULE_NAMES.get((table, expectation_type))
            or RULE_NAMES.get((table, column or "")) or expectation_type)


# A table with this column names each row's source file: a failed rule names the files too.
PATH = "path"


def _files(result: dict[str, Any]) -> str:
    """'; files: a.png, b.png' from Great Expectations' unexpected rows, when it listed them."""
    rows = result.get("unexpected_index_list") or []
    files = list(dict.fromkeys(str(row.get(PATH)) for row in rows if isinstance(row, dict) and PATH in row))
    if not files:
        return ""
    more = f" (+{len(files) - 3} more)" if len(files) > 3 else ""
    return f"; file(s): {', '.join(files[:3])}{more}"


def validate_splits(
    splits: dict[str, pd.DataFrame], cfg: ValidateConfig, labels: list[str], task: Task | None = None,
) -> ValidationReport:
    """Run the suites; return every check with its verdict. Raises nothing: see `raise_on_failure`."""
    import logging

    # Before the import: GX logs hundreds of INFO lines while it imports.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas("fmpipe")
    task = task or get_task()
    report = ValidationReport(success=True)
    tables = _tables(splits, task.key_column, task.exclusive_columns)
    for table, expectations in build_suites(cfg, labels, task).items():
        batch_def = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"fmpipe_{table}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        result_format: dict[str, Any] = {"result_format": "SUMMARY"}
        if PATH in tables[table]:
            result_format.update(result_format="COMPLETE", unexpected_index_column_names=[PATH])
        result = batch_def.get_batch(batch_parameters={"dataframe": tables[table]}).validate(
            suite, result_format=result_format)
        report.raw[table] = result.to_json_dict()
        for item in result.results:
            config = item.expectation_config
            column = config.kwargs.get("column")
            rule = _rule_name(table, config.type, column, task)
            if table == CLASSES:  # report it against the label column, with the offending labels
                column = LABEL
            detail = "ok" if item.success else _describe(item.result or {})
            if config.type == "expect_column_distinct_values_to_contain_set" and not item.success:
                missing = sorted(set(labels) - set(tables[table][LABEL].dropna().unique()))
                detail = f"declared label(s) {missing} never occur in the {table} split"
            if table == CLASSES and not item.success:
                bad = tables[CLASSES].loc[item.result.get("partial_unexpected_index_list") or [], LABEL]
                detail = f"{detail}; labels: {bad.tolist() or 'see report'}"
            if not item.success:
                detail = _explained(detail, rule, config.type, config.kwargs, tables[table], task)
                detail += _files(item.result or {})
            report.checks.append(Check(table=table, rule=rule, column=column, success=bool(item.success),
                                       severity=cfg.severity.get(rule, "error"), detail=detail))
    report.success = not report.failures
    return report


def raise_on_failure(
    report: ValidationReport, source: str, column_names: dict[str, str] | None = None
) -> None:
    """Stop the run with one message naming the file, the column and the rule of the first failure.

    column_names maps the pipeline's canonical names back to the user's (label -> sentiment).
    """
    if report.success:
        return
    first = report.failures[0]
    column = (column_names or {}).get(first.column, first.column) if first.column else None
    more = f" (+{len(report.failures) - 1} more failed check(s))" if len(report.failures) > 1 else ""
    raise DataError(f"{source} [{first.table}]", column, first.rule, first.detail + more)


def render_html(report: ValidationReport, title: str) -> str:
    """A self-contained HTML report (no CDN assets, so it renders offline)."""
    rows = "".join(
        f"<tr class={'ok' if c.success else c.severity}><td>{html.escape(c.table)}</td>"
        f"<td>{html.escape(c.column or '(table)')}</td><td>{html.escape(c.rule)}</td>"
        f"<td>{c.severity}</td><td>{'pass' if c.success else 'FAIL'}</td>"
        f"<td>{html.escape(c.detail)}</td></tr>"
        for c in report.checks
    )
    verdict = "PASSED" if report.success else "FAILED"
    warned = f" ({len(report.warnings)} warning(s))" if report.warnings else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Data validation</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "tr.ok td:nth-child(5){color:#080}tr.error{background:#fdd}tr.warn{background:#ffd}"
        f"</style></head><body><h1>{html.escape(title)}: {verdict}{warned}</h1>"
        "<table><tr><th>table</th><th>column</th><th>rule</th><th>severity</th><th>result</th>"
        f"<th>detail</th></tr>{rows}</table></body></html>"
    )

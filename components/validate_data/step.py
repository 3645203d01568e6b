"""The validate_data step as the pipeline runs it: validate the splits, keep the report, gate."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from components.core.config import Params
from components.core.tracking import RunContext, note, step_run
from components.ingest.ingest import LABEL, TEXT, read_splits
from components.validate_data.validate import (
    ValidationReport,
    raise_on_failure,
    render_html,
    validate_splits,
)


def run(data_dir: Path, report_dir: Path, params: Params, ctx: RunContext) -> ValidationReport:
    """Validate; write report.html + result.json into report_dir; raise DataError on failure."""
    with step_run(ctx, "validate_data") as track:
        report = validate_splits(read_splits(data_dir), params.validate_data)
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "report.html").write_text(render_html(report, "fmpipe data validation"))
        (report_dir / "result.json").write_text(json.dumps(
            {"success": report.success, "checks": [asdict(c) for c in report.checks],
             "great_expectations": report.raw}, indent=1, default=str))
        track.artifact(report_dir, "validation")
        track.metrics({"checks": len(report.checks), "failed_errors": len(report.failures),
                       "failed_warnings": len(report.warnings)})
        note(f"validate_data: {len(report.checks)} checks, {len(report.failures)} failed")
        raise_on_failure(report, ctx.data_source or str(data_dir),
                         {TEXT: params.data.text_column, LABEL: params.data.label_column})
    return report

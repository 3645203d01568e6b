"""The validate_data step as the pipeline runs it: validate the splits, measure drift against
the production model's data, keep the report, gate."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from components.core.config import Params
from components.core.contract import contract_of, registered_contract
from components.core.dataset import LABEL, PROFILE_FILE, label_set, read_splits
from components.core.tracking import RunContext, note, step_run
from components.tasks import get_task
from components.tasks.base import Task
from components.validate_data.drift import production_profile
from components.validate_data.validate import (
    Check,
    ValidationReport,
    raise_on_failure,
    render_html,
    validate_splits,
)


def drift_checks(data_dir: Path, params: Params, splits: dict, task: Task | None = None
                 ) -> tuple[list[Check], dict[str, float]]:
    """Drift figures against the data `production` was trained on (none when nothing is there)."""
    cfg = params.validate_data.drift
    found = production_profile(params.registered_model) if cfg.enabled else None
    if found is None:
        return [], {}
    version, reference = found
    new = json.loads((data_dir / PROFILE_FILE).read_text())
    figures = (task or get_task(params)).drift(reference, new, splits["train"])
    checks = [
        Check(table=f"drift vs production v{version}", rule=f.name,
              column=LABEL if f.name == "label_psi" else (task or get_task(params)).input_column,
              success=f.passed,
              severity=cfg.severity, detail=f"{f.value:.4g} (threshold {f.threshold:g})")
        for f in figures
    ]
    return checks, {f"drift_{f.name}": f.value for f in figures}


def contract_check(model_name: str, labels: list[str], task: Task | None = None) -> Check | None:
    """The data's labels against the contract of the registered model this run would add a version
    to: a mismatch stops the run here, before training, instead of at register."""
    held = registered_contract(model_name)
    if held is None:
        return None
    why = contract_of(task or get_task(), labels).difference(held)
    detail = (f"the registered model {model_name} is a {held.describe()}; this data gives "
              f"{why} (leave registry.model_name empty to train this data set under its own model)"
              if why else f"matches {model_name}")
    return Check(table="train", rule="model_contract", column=LABEL, success=why is None,
                 severity="error", detail=detail)


def run(data_dir: Path, report_dir: Path, params: Params, ctx: RunContext) -> ValidationReport:
    """Validate; write report.html + result.json into report_dir; raise DataError on failure."""
    task = get_task(params)
    with step_run(ctx, "validate_data") as track:
        splits = read_splits(data_dir)
        labels = label_set(params.validate_data.labels, data_dir)
        report = validate_splits(splits, params.validate_data, labels, task)
        drift, drift_figures = drift_checks(data_dir, params, splits, task)
        report.checks.extend(drift)
        if contract := contract_check(params.registered_model, labels, task):
            report.checks.append(contract)
        report.success = not report.failures
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "report.html").write_text(render_html(report, "fmpipe data validation"))
        (report_dir / "result.json").write_text(json.dumps(
            {"success": report.success, "labels": labels, "checks": [asdict(c) for c in report.checks],
             "great_expectations": report.raw}, indent=1, default=str))
        track.artifact(report_dir, "validation")
        track.metrics({"checks": len(report.checks), "failed_errors": len(report.failures),
                       "failed_warnings": len(report.warnings), **drift_figures})
        track.metrics({"validation_warnings": len(report.warnings), **drift_figures}, parent=True)
        note(f"validate_data: {len(report.checks)} checks, {len(report.failures)} failed, "
             f"{len(report.warnings)} warning(s)"
             + "".join(f"; WARN {c.rule}: {c.detail}" for c in report.warnings[:3])
             + (f"; drift {', '.join(f'{k[6:]}={v:.3g}' for k, v in drift_figures.items())}"
                if drift_figures else ""))
        raise_on_failure(report, ctx.data_source or str(data_dir), task.column_names(params))
    return report

"""The ingest step as the pipeline runs it: read, clean, split, write, track."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.core.config import Params
from components.core.dataset import PROFILE_FILE, REPORT_FILE, file_md5, profile, write_splits
from components.core.tracking import RunContext, note, step_run
from components.ingest.ingest import clean, read_table, split


def run(source: Path, out_dir: Path, params: Params, ctx: RunContext) -> dict[str, Any]:
    """Turn the source file into validated-ready splits under out_dir; return the report."""
    import mlflow

    with step_run(ctx, "ingest") as track:
        frame, read_report = read_table(source, params.data)
        cleaned, clean_report = clean(frame, params.ingest.clean)
        splits = split(cleaned, params.ingest, str(source), params.data.label_column)
        write_splits(out_dir, splits)
        report = {
            "source": str(source),
            "data_md5": file_md5(source),
            "read": asdict(read_report),
            "clean": asdict(clean_report),
            "rows": {name: len(part) for name, part in splits.items()},
            # Rows left out by ingest.sample_cap: not lost, just not used in this run.
            "sampled_out": clean_report.rows_out - sum(len(part) for part in splits.values()),
            "labels": sorted(cleaned["label"].unique().tolist()),
        }
        (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
        track.params({"source": source, "seed": params.ingest.seed,
                      "sample_cap": params.ingest.sample_cap})
        track.metrics({"rows_read": read_report.rows_read,
                       "lines_with_invalid_utf8": read_report.lines_with_invalid_utf8,
                       "rows_clean": clean_report.rows_out,
                       **{f"dropped_{k}": v for k, v in clean_report.dropped.items()},
                       **{f"changed_{k}": v for k, v in clean_report.changed.items()},
                       "sampled_out": report["sampled_out"],
                       **{f"rows_{k}": v for k, v in report["rows"].items()}}, parent=True)
        track.tags({"fmpipe.data_md5": report["data_md5"]}, parent=True)
        track.json(report, REPORT_FILE)
        data_profile = profile(splits["train"], params.ingest.seed)
        (out_dir / PROFILE_FILE).write_text(json.dumps(data_profile))
        track.json(data_profile, PROFILE_FILE)
        dropped = {k: v for k, v in clean_report.dropped.items() if v}
        note(f"ingest: {read_report.rows_read} rows read ({read_report.lines_with_invalid_utf8} lines "
             f"with invalid UTF-8 replaced), {clean_report.rows_out} kept, dropped {dropped}; "
             f"split {report['rows']}")
        mlflow.log_input(
            mlflow.data.from_pandas(splits["train"], source=str(source), name=params.data.name),
            context="train",
        )
    return report

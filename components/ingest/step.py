"""The ingest step as the pipeline runs it: read, clean, split, write, track."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.core.config import Params
from components.core.dataset import CATALOGUE_FILE, LABEL, PROFILE_FILE, REPORT_FILE, data_md5, write_splits
from components.core.tracking import RunContext, note, step_run
from components.tasks import get_task


def run(source: Path, out_dir: Path, params: Params, ctx: RunContext) -> dict[str, Any]:
    """Turn the source (a file or a folder) into validated-ready splits under out_dir; return the
    report. The task reads and cleans; the split is every task's."""
    import mlflow

    task = get_task(params)
    with step_run(ctx, "ingest") as track:
        frame, read_report = task.read(source)
        cleaned, clean_report = task.clean(frame)
        splits = task.split(cleaned, params.ingest, str(source), params.data.label_column or LABEL)
        write_splits(out_dir, splits)
        if (catalogue := task.catalogue()) is not None:
            catalogue.to_parquet(out_dir / CATALOGUE_FILE, index=False)
        report = {
            "task": task.kind,
            "source": str(source),
            "data_md5": data_md5(source),
            "read": asdict(read_report),
            "clean": asdict(clean_report),
            "rows": {name: len(part) for name, part in splits.items()},
            # Rows left out by ingest.sample_cap: not lost, just not used in this run.
            "sampled_out": clean_report.rows_out - sum(len(part) for part in splits.values()),
            "labels": sorted(cleaned[LABEL].dropna().unique().tolist()),
        }
        (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
        track.params({"source": source, "seed": params.ingest.seed,
                      "sample_cap": params.ingest.sample_cap})
        read_counts = {k: v for k, v in asdict(read_report).items() if isinstance(v, int)}
        track.metrics({**read_counts,
                       "rows_clean": clean_report.rows_out,
                       **{f"dropped_{k}": v for k, v in clean_report.dropped.items()},
                       **{f"changed_{k}": v for k, v in clean_report.changed.items()},
                       "sampled_out": report["sampled_out"],
                       **{f"rows_{k}": v for k, v in report["rows"].items()}}, parent=True)
        track.tags({"fmpipe.data_md5": report["data_md5"], "fmpipe.task": task.kind}, parent=True)
        track.json(report, REPORT_FILE)
        data_profile = task.profile(splits["train"], params.ingest.seed)
        (out_dir / PROFILE_FILE).write_text(json.dumps(data_profile))
        track.json(data_profile, PROFILE_FILE)
        dropped = {k: v for k, v in clean_report.dropped.items() if v}
        found = {k: v for k, v in read_counts.items() if k != "rows_read" and v}
        note(f"ingest: {read_report.rows_read} rows read" + (f" ({found})" if found else "")
             + f", {clean_report.rows_out} kept, dropped {dropped}; split {report['rows']}")
        # The input column of an image table is bytes: MLflow records the data set by its other columns.
        logged = splits["train"].drop(columns=[c for c in splits["train"].columns
                                                if splits["train"][c].map(type).eq(bytes).any()])
        mlflow.log_input(mlflow.data.from_pandas(logged, source=str(source), name=params.data.name),
                         context="train")
    return report

"""The job summary of a CI retraining run (.github/workflows/retrain.yml): reads the log of
`fmpipe run --json` (or `fmpipe submit`) and prints Markdown for $GITHUB_STEP_SUMMARY.

Standalone on purpose (no fmpipe import): it runs even when setting up the project failed.
Usage: python3 infra/ci/job_summary.py run.log >> "$GITHUB_STEP_SUMMARY"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADLINE = ("test_macro_f1", "test_accuracy", "test_ndcg_at_10", "test_rmse", "champion_macro_f1")


def summary(log: str) -> str:
    lines = log.splitlines()
    record = next((json.loads(line) for line in reversed(lines) if line.startswith("{")), None)
    out = ["## fmpipe retraining"]
    if record is None:
        out.append("No run record (`fmpipe run --json` printed none); the log's last lines:")
        out += ["```", *lines[-20:], "```"]
        return "\n".join(out) + "\n"
    verdict = "succeeded" if record.get("succeeded") else f"FAILED: {record.get('error')}"
    version = record.get("version")
    out.append(f"**{record.get('model')}**: run {verdict}; "
               + (f"registered version {version}, alias: {', '.join(record.get('aliases') or []) or 'none'}"
                  if version else "nothing registered (no new version, no alias moved)")
               + f"; blessed: {record.get('blessed')}.")
    metrics = record.get("metrics") or {}
    shown = [(k, metrics[k]) for k in HEADLINE if k in metrics]
    if shown:
        out += ["", "| metric | value |", "|---|---|", *(f"| {k} | {v:.4f} |" for k, v in shown)]
    block = _text_summary(lines)
    if block:
        out += ["", "<details><summary>the run's summary</summary>", "", "```", *block, "```", "</details>"]
    return "\n".join(out) + "\n"


def _text_summary(lines: list[str]) -> list[str]:
    """The block between the last two rulers of `=` the run prints at its end."""
    rulers = [i for i, line in enumerate(lines) if line.startswith("=" * 20)]
    return lines[rulers[-2] + 1:rulers[-1]] if len(rulers) >= 2 else []


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path("run.log")
    if not path.exists():
        print(f"## fmpipe retraining\nNo run log ({path}): the job stopped before the run started.")
        return 0
    print(summary(path.read_text(encoding="utf-8", errors="replace")), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

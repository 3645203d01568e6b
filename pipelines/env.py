"""Process-wide defaults for the adapters (CLI, local runner, tests): nothing phones home."""

import os
from pathlib import Path

QUIET_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "KMP_WARNINGS": "0",
}


def apply_defaults(repo_root: Path) -> None:
    """Set the quiet defaults unless the user already chose otherwise."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("DVC_SITE_CACHE_DIR", str(repo_root / ".dvc" / "tmp" / "site_cache"))

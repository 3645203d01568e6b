"""fmpipe components: one sub-package per pipeline step, plus the shared core."""

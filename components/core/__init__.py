"""Shared core: typed config, errors, tracking, lineage, the task interface."""

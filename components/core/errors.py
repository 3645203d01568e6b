"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""


class FmpipeError(Exception):
    """A problem the user can fix (bad params, bad data, a missing file)."""


class ConfigError(FmpipeError):
    """A value in params.yaml or an override is invalid."""


class DataError(FmpipeError):
    """Input data cannot be read or fails a rule.

    The message names the file, the column and the rule that failed.
    """

    def __init__(self, file: str, column: str | None, rule: str, detail: str) -> None:
        self.file, self.column, self.rule, self.detail = file, column, rule, detail
        where = f"column '{column}'" if column else "table"
        super().__init__(f"{file}: {where}: rule '{rule}' failed: {detail}")


class GateError(FmpipeError):
    """A quality gate refused to let a model through (not blessed, parity failed)."""


def exit_on_user_error(fn, *args, **kwargs):  # noqa: ANN001, ANN201 - thin wrapper
    """Run fn; a user-fixable error prints one line and exits 1 instead of a traceback.

    Used by the KFP component bodies, whose subprocess output the user sees; the step's process
    ends with the `fmpipe run` that started it.
    """
    import sys

    from components.core.process import end_with_parent

    end_with_parent()
    try:
        return fn(*args, **kwargs)
    except FmpipeError as exc:
        print(f"fmpipe: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None

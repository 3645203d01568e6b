import io

from components.core.tracking import RunContext
from pipelines.local import ConsoleFilter, RunOutcome
from pipelines.summary import NOT_REGISTERED, exit_status, format_summary


def test_console_shows_only_fmpipe_lines_and_the_log_keeps_everything():
    log, console = io.StringIO(), io.StringIO()
    stream = ConsoleFilter(log, console)
    stream.write("    [KFP Executor] Got executor_input: {\n  \"inputs\": 1\n")
    stream.write("    [fmpipe] ingest: 10 rows")
    stream.write(" read\nnoise\nfmpipe: error: data/x.csv: column 'text': rule 'r' failed\n")
    assert console.getvalue().splitlines() == [
        "[fmpipe] ingest: 10 rows read", "fmpipe: error: data/x.csv: column 'text': rule 'r' failed"]
    assert "executor_input" in log.getvalue() and "noise" in log.getvalue()


def test_summary_of_a_blessed_run_and_of_a_stopped_one():
    ctx = RunContext(pipeline_run_id="abcdef123456", tracking_uri="sqlite:///x.db")
    ok = RunOutcome(ctx=ctx, succeeded=True, metrics={
        "test_macro_f1": 0.79, "test_accuracy": 0.8, "baseline_tfidf_logreg_macro_f1": 0.73,
        "baseline_majority_macro_f1": 0.2, "time_ingest_s": 1.0, "champion_macro_f1": 0.78},
        tags={"fmpipe.blessed": "true", "fmpipe.model_version": "3", "fmpipe.alias.staging": "3",
              "fmpipe.champion_version": "2"})
    text = format_summary(ok, "m", "sqlite:///x.db")
    assert "SUCCEEDED" in text and "0.7900" in text and "champion (v2)" in text
    assert "registered: m version 3, alias: staging" in text
    stopped = RunOutcome(ctx=ctx, succeeded=False, error="validate_data: f.csv: column 'label': rule 'x'")
    text = format_summary(stopped, "m", "sqlite:///x.db")
    assert "FAILED" in text and "stopped: validate_data" in text
    assert "registered: nothing (no new model version, no alias moved)" in text


def test_exit_status_tells_a_failure_a_defect_and_an_unblessed_model_apart():
    ctx = RunContext(pipeline_run_id="abcdef123456", tracking_uri="sqlite:///x.db")
    registered = RunOutcome(ctx=ctx, succeeded=True, tags={"fmpipe.model_version": "3"})
    failed = RunOutcome(ctx=ctx, succeeded=False, error="validate_data: f.csv: column 'label': rule 'x'")
    broken_export = RunOutcome(ctx=ctx, succeeded=True, tags={"fmpipe.blessed": "true"}, metrics={
        "parity_passed": 0.0, "smoke_passed": 1.0, "parity_max_abs_logit_diff": 0.31})
    not_blessed = RunOutcome(ctx=ctx, succeeded=True, tags={"fmpipe.blessed": "false"})
    assert exit_status(registered) == exit_status(registered, require_registered=True) == (0, None)
    assert exit_status(failed) == (1, "validate_data: f.csv: column 'label': rule 'x'")
    code, line = exit_status(broken_export)
    assert code == 1 and line.startswith("export_onnx: the exported model failed its checks (max |logit "
                                         "diff| 3.10e-01, smoke check passed)")
    assert exit_status(not_blessed) == (0, None)  # a scheduled run whose challenger lost: not an error
    code, line = exit_status(not_blessed, require_registered=True)
    assert code == NOT_REGISTERED == 3 and "did not bless" in line

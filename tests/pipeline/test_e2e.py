"""The whole DAG under kfp.local through the CLI, in a fresh project, on tiny real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from components.registry.registry import current_alias_version
from tests.conftest import TINY_OVERRIDES, fmpipe, make_project

MODEL = "tweets-text-classifier"  # named after the data set (tweets.csv)



@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_csv):
    root = make_project(tmp_path_factory.mktemp("e2e") / "proj", TINY_OVERRIDES)
    (root / "tweets.csv").write_bytes(tiny_csv.read_bytes())
    mlflow.set_tracking_uri(f"sqlite:///{root / '.mlflow' / 'mlflow.db'}")
    return root


@pytest.fixture(scope="module")
def good_run(project):
    return fmpipe(project, "run", "--data", "tweets.csv", "--json")


def start_run_until(project: Path, mark: str, *args: str) -> tuple[subprocess.Popen, str]:
    """Start `fmpipe run --force` in its own process group; return once it prints `mark`."""
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--data", "tweets.csv", "--force",
                             *args], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    run_id = None
    for line in proc.stdout:
        if "starting under kfp.local" in line:
            run_id = line.split("pipeline run ")[1].split()[0]
        if line.startswith(mark):
            return proc, run_id
    raise AssertionError(f"the run ended before {mark}: " + proc.stderr.read()[-2000:])


def test_pipeline_registers_and_stages_a_new_version(project, good_run):
    assert good_run.returncode == 0, good_run.stdout[-3000:] + good_run.stderr[-3000:]
    assert "SUCCEEDED" in good_run.stdout
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 1
    assert current_alias_version(MODEL, "staging") == str(versions[0].version)
    tags = versions[0].tags
    for key in ("fmpipe.data_md5", "fmpipe.git_commit", "fmpipe.params_digest",
                "fmpipe.pipeline_run_id", "fmpipe.base_model"):
        assert tags.get(key), f"lineage tag {key} missing"
    assert tags["fmpipe.blessed"] == "true" and tags["fmpipe.parity_passed"] == "true"
    assert "alias: staging" in good_run.stdout
    summary = json.loads(good_run.stdout.strip().splitlines()[-1])  # --json: the last line, for CI
    assert (summary["succeeded"], summary["version"], summary["aliases"]) == (True, "1", ["staging"])
    assert summary["metrics"]["test_macro_f1"] > 0 and summary["blessed"] is True
    assert Path(summary["model_card"]).read_text(encoding="utf-8").startswith("<!doctype html>")
    assert f"model card: {summary['model_card']}" in good_run.stdout


def test_the_staged_version_has_a_card_a_person_can_open(project, good_run):
    """The card the README's command writes, opened in a real headless browser: no console error,
    no network request, every image loads, and its headline figures are the ones MLflow logged."""
    from tests.browser import CHROMIUM, look_at

    out = project / "card.html"
    made = fmpipe(project, "card", f"{MODEL}@staging", "-o", str(out))
    assert made.returncode == 0, made.stderr[-2000:]
    page = out.read_text(encoding="utf-8")
    assert len(page.encode()) <= 2_000_000
    assert 'class="missing"' not in page, "a section of a fresh version's card has no records"
    assert page.count('class="tok"') > 5 and "integrated gradients (captum)" in page  # token heatmaps
    assert "Promotion history of the model" in page and "pipeline:" in page
    # the promote step wrote the same card as an artifact of the version's model run
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(MODEL, "staging")
    model_run = version.tags["fmpipe.mlflow_run_id"]
    assert "model_card.html" in [a.path for a in client.list_artifacts(model_run)]
    if CHROMIUM is None:
        pytest.skip("no chromium here (Debian's chromium; .ci/run installs it)")
    screenshots = Path(__file__).resolve().parents[2] / ".test-artifacts"
    screenshots.mkdir(exist_ok=True)
    look = look_at(out, screenshots / "model_card.png")
    assert look.console_errors == [] and look.requests == [], (look.console_errors, look.requests)
    assert look.images >= 4 and look.broken_images == []
    evaluate_run = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`fmpipe.pipeline_run_id` = '{version.tags['fmpipe.pipeline_run_id']}' "
        "and tags.`fmpipe.step` = 'evaluate'",
    )[0]
    for name in ("test_macro_f1", "test_accuracy"):
        assert look.figures[name] == f"{evaluate_run.data.metrics[name]:.4f}"
    assert look.figures["macro_f1"] == f"{evaluate_run.data.metrics['test_macro_f1']:.4f}"


def test_a_rerun_on_the_same_data_params_and_code_does_nothing(project, good_run):
    (version,) = mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")
    assert len(version.tags["fmpipe.inputs_digest"]) == 32
    again = fmpipe(project, "run", "--data", "tweets.csv", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"nothing to do: {MODEL} version 1 (aliases: staging) was built from the same data" in again.stdout
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == "already built"
    assert "starting under kfp.local" not in again.stdout
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")) == 1


def test_data_is_versioned_with_dvc(project, good_run):
    assert (project / "data" / "tweets.csv.dvc").exists()
    assert any((project / ".dvc-storage").rglob("*")), "data was not pushed to the DVC remote"


def test_every_step_recorded_its_time_in_mlflow(good_run):
    parent = mlflow.search_runs(experiment_names=["fmpipe"],
                                filter_string="tags.`fmpipe.kind` = 'pipeline'")
    assert len(parent) == 1 and parent.iloc[0]["status"] == "FINISHED"
    for step in ("ingest", "validate_data", "finetune", "evaluate", "export_onnx", "register",
                 "promote"):
        assert parent.iloc[0][f"metrics.time_{step}_s"] > 0, step
    assert "metrics.time_pretrain_s" not in parent.columns  # disabled: a marker, no step run


def test_bad_data_stops_at_validation_and_registers_nothing(project, good_run):
    staged_before = current_alias_version(MODEL, "staging")
    good = (project / "tweets.csv").read_bytes()
    # A new version of the tweets data set with an unknown label in a few rows: readable, but
    # breaks the label set of the data set's schema (inferred at its first ingest).
    extra = b"".join(b"angry,0.9,this row has a label nobody declared %d\r\n" % i for i in range(30))
    (project / "bad").mkdir()
    (project / "bad" / "tweets.csv").write_bytes(good + extra)
    result = fmpipe(project, "run", "--data", "bad/tweets.csv")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fmpipe: error: validate_data: data/tweets.csv")
    assert "column 'sentiment'" in last and "expect_column_values_to_be_in_set" in last
    assert "bound: one of [negative, neutral, positive]" in last and "labels in data/" in last
    assert "Traceback" not in last
    assert fmpipe(project, "data", "ingest", "tweets.csv", "--name", "tweets").returncode == 0  # v1 back
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")) == 1
    assert current_alias_version(MODEL, "staging") == staged_before
    failed = mlflow.search_runs(experiment_names=["fmpipe"],
                                filter_string="tags.`fmpipe.failed_step` = 'validate_data'")
    assert len(failed) == 1 and failed.iloc[0]["status"] == "FAILED"


def test_user_mistakes_print_one_line(project):
    missing = fmpipe(project, "run", "--data", "does-not-exist.csv")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "fmpipe: error: does-not-exist.csv: table: rule 'file_exists' failed: no such file"]
    bad_param = fmpipe(project, "run", "-S", "finetune.epochs=zero")
    assert bad_param.returncode == 1
    assert len(bad_param.stderr.strip().splitlines()) == 1
    assert "finetune.epochs='zero'" in bad_param.stderr


@pytest.mark.slow  # make test-slow (CI runs it)
def test_a_rerun_of_inputs_evaluate_did_not_bless_does_nothing_either(project, good_run):
    strict = ("-S", "evaluate.min_macro_f1=0.99")  # no tiny model gets there
    first = fmpipe(project, "run", "--data", "tweets.csv", *strict)
    assert first.returncode == 0 and "blessed: false" in first.stdout, first.stderr[-2000:]
    again = fmpipe(project, "run", "--data", "tweets.csv", *strict)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "and evaluate did not bless its model (no champion)" in again.stdout
    assert "starting under kfp.local" not in again.stdout
    ci = fmpipe(project, "run", "--data", "tweets.csv", *strict, "--require-registered")
    assert ci.returncode == 3 and "nothing to do" in ci.stdout
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")) == 1


@pytest.mark.slow  # make test-slow (CI runs it)
def test_data_rev_trains_on_an_older_data_version(project, good_run):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "data v1"], cwd=project, check=True)
    rev1 = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True,
                          check=True).stdout.strip()
    v1_md5 = mlflow.MlflowClient().get_model_version(MODEL, "1").tags["fmpipe.data_md5"]
    v1 = (project / "tweets.csv").read_bytes()
    (project / "tweets.csv").write_bytes(b"\r\n".join(v1.split(b"\r\n")[:-100]))  # v2: 99 rows fewer
    ingest = fmpipe(project, "data", "ingest", "tweets.csv", "--name", "tweets")
    assert ingest.returncode == 0 and "new version" in ingest.stdout, ingest.stderr
    again = fmpipe(project, "data", "ingest", "tweets.csv", "--name", "tweets")
    assert "unchanged (no-op)" in again.stdout

    result = fmpipe(project, "run", "--data", "tweets", "--data-rev", rev1, "--require-registered",
                    "--force")  # v1's data, params and code built version 1: retrain on purpose
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    newest = max(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    assert newest.tags["fmpipe.data_md5"] == v1_md5
    assert newest.tags["fmpipe.data_dvc_commit"] == rev1
    assert newest.tags["fmpipe.data_source"] == f"data/tweets.csv@{rev1}"
    (project / "tweets.csv").write_bytes(v1)  # v2 is too small to pass validation: later tests use v1


def test_a_run_stopped_by_sigterm_is_marked_killed_and_cleaned_up(project):
    """What a scheduler's timeout does: the run ends at once, nothing stays RUNNING in MLflow,
    kfp.local's temp folder is gone, and nothing is registered."""
    import signal

    versions_before = len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'"))
    proc, run_id = start_run_until(project, "[fmpipe] validate_data:")
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group: the CLI and the running step
    assert proc.wait(timeout=120) == 130 and "fmpipe: interrupted" in proc.stderr.read()
    (run_dir,) = [d for d in (project / ".fmpipe" / "runs").iterdir() if d.name.startswith(run_id)]
    assert (run_dir / "finished").read_text() == "KILLED\n" and not (run_dir / "tmp").exists()
    runs = mlflow.search_runs(experiment_names=["fmpipe"], filter_string=(
        f"tags.`fmpipe.kind` = 'pipeline' and tags.`fmpipe.pipeline_run_id` = '{run_dir.name}'"))
    assert list(runs["status"]) == ["KILLED"]
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")) == versions_before


def processes_in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    from components.core.process import proc_stat

    stats = {int(name): proc_stat(int(name)) for name in os.listdir("/proc") if name.isdigit()}
    return [pid for pid, fields in stats.items()
            if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X")]


@pytest.mark.slow  # make test-slow (CI runs it)
def test_a_sigkilled_run_stops_its_step_and_the_next_run_cleans_up_after_it(project, good_run):
    """SIGKILL (the OOM killer, `kill -9`) gives the run no chance to clean up: its step must not
    train on as an orphan, and the next run marks its MLflow runs KILLED and removes its tmp."""
    import signal
    import time

    # Training long enough to be killed mid-way; other params than version 1's, so the next run
    # (on version 1's params) has nothing to do once it has cleaned up.
    proc, run_id = start_run_until(project, "[fmpipe] pretrain:", "-S", "finetune.epochs=5000")
    deadline = time.monotonic() + 120
    while not mlflow.search_runs(experiment_names=["fmpipe"], filter_string=(
            f"tags.`fmpipe.pipeline_run_id` LIKE '{run_id}%' and tags.`fmpipe.step` = 'finetune' "
            "and attributes.status = 'RUNNING'")).shape[0]:
        assert time.monotonic() < deadline, "finetune did not start"
        time.sleep(0.5)
    time.sleep(2.0)  # into the training loop
    proc.send_signal(signal.SIGKILL)  # the CLI alone; its step is another process of the group
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    while processes_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    orphans = processes_in_group(proc.pid)
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "the running step went on after its run was SIGKILLed"
    (run_dir,) = [d for d in (project / ".fmpipe" / "runs").iterdir() if d.name.startswith(run_id)]
    assert (run_dir / "tmp").exists() and not (run_dir / "finished").exists()  # left as killed
    status = fmpipe(project, "status")
    assert f"pipeline: run {run_id} (pid {proc.pid}" in status.stdout and "was killed" in status.stdout

    after = fmpipe(project, "run", "--data", "tweets.csv")
    assert after.returncode == 0, after.stderr[-2000:]
    assert f"run {run_id} (pid {proc.pid}" in after.stdout and "was killed before it ended" in after.stdout
    assert "nothing to do" in after.stdout  # version 1's inputs: the killed run changed nothing
    assert (run_dir / "finished").read_text() == "KILLED\n" and not (run_dir / "tmp").exists()
    runs = mlflow.search_runs(experiment_names=["fmpipe"],
                              filter_string=f"tags.`fmpipe.pipeline_run_id` = '{run_dir.name}'")
    status = dict(zip(runs["tags.fmpipe.step"].fillna("pipeline"), runs["status"], strict=True))
    # finetune: KILLED by the clean-up, or FAILED if it wrote to its dead run's pipe first
    assert status.pop("finetune") in ("KILLED", "FAILED")
    assert status == {"pipeline": "KILLED", "ingest": "FINISHED", "validate_data": "FINISHED"}


# Any data set, safely: paths in every form, a schema per data set, one contract per model.

def reviews_csv(tweets: bytes) -> bytes:
    """Another labelled corpus with its own column names and labels: the tweets' positive and
    negative rows as `fresh` / `rotten` reviews, with a score column beside them."""
    import io

    import pandas as pd

    frame = pd.read_csv(io.StringIO(tweets.decode("utf-8", errors="replace")), dtype=str)
    frame = frame[frame["sentiment"].isin(["positive", "negative"])]
    return pd.DataFrame({"score": frame["confidence"], "verdict": frame["sentiment"].map(
        {"positive": "fresh", "negative": "rotten"}), "review": frame["text"]}).to_csv(index=False).encode()


def test_absolute_home_and_relative_paths_name_the_same_data_set(project, good_run, tmp_path):
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    (elsewhere / "tweets.csv").write_bytes((project / "tweets.csv").read_bytes())
    home = {**os.environ, "HOME": str(elsewhere)}
    params = str(project / "params.yaml")
    for args in (["--data", str(elsewhere / "tweets.csv")],  # absolute
                 ["--data=~/tweets.csv"],                      # ~, where no shell expands it
                 ["--data", "tweets.csv"]):                    # relative to the working directory
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", *args, "--params", params],
                                cwd=elsewhere, env=home, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"nothing to do: {MODEL} version " in result.stdout  # the same content and name
    for where in (str(elsewhere / "tweets.csv"), "~/tweets.csv", "tweets.csv"):
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", "data", "ingest", where, "--name",
                                 "tweets", "--params", params, "--no-push"],
                                cwd=elsewhere, env=home, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "unchanged (no-op)" in result.stdout, result.stderr[-2000:]
    (elsewhere / "texts.txt").write_text("what a lovely day\nthis is awful\n")
    for where in (str(elsewhere / "texts.txt"), "~/texts.txt", "texts.txt"):
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", MODEL, "--file", where,
                                 "--params", "~/" + os.path.relpath(params, elsewhere)],
                                cwd=elsewhere, env=home, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.count("\n") == 3 and "what a lovely day" in result.stdout


@pytest.mark.slow  # make test-slow (CI runs it)
def test_a_second_data_set_gets_its_own_schema_model_and_aliases(project, good_run, tmp_path):
    before = [(v.version, v.aliases) for v in mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")]
    reviews = tmp_path / "reviews.csv"
    reviews.write_bytes(reviews_csv((project / "tweets.csv").read_bytes()))
    # Columns named neither text nor label, a length bound and labels nobody set: all from the data.
    result = fmpipe(project, "run", "--data", str(reviews), "-S", "finetune.max_length=0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "text column 'review' (guessed" in result.stdout
    assert "label column 'verdict' (guessed" in result.stdout
    assert "(chosen from the data's token lengths)" in result.stdout
    assert current_alias_version("reviews-text-classifier", "staging") == "1"
    after = [(v.version, v.aliases) for v in mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")]
    assert after == before  # the tweets model: no version added, no alias moved
    shown = fmpipe(project, "data", "schema", "reviews")
    assert shown.returncode == 0
    assert "text_column: review" in shown.stdout and "- fresh\n- rotten" in shown.stdout


def test_a_data_set_forced_under_another_models_name_stops_before_training(project, good_run, tmp_path):
    versions = len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'"))
    reviews = tmp_path / "reviews.csv"
    reviews.write_bytes(reviews_csv((project / "tweets.csv").read_bytes()))
    result = fmpipe(project, "run", "--data", str(reviews), "-S", f"registry.model_name={MODEL}", "--force")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "rule 'model_contract' failed" in last
    assert "labels [fresh, rotten] vs [negative, neutral, positive]" in last
    assert "[fmpipe] finetune" not in result.stdout
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")) == versions

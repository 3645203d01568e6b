import os
import time

from pipelines.local import FINISHED_MARKER, prune_old_runs


def make_run(root, name, age_s, finished=True):  # noqa: ANN001, ANN201
    run = root / name
    (run / "outputs" / "model").mkdir(parents=True)
    (run / "outputs" / "model" / "model.safetensors").write_bytes(b"w" * 100)
    (run / "pipeline.log").write_text("log")
    paths = [run, run / "pipeline.log"]
    if finished:
        (run / FINISHED_MARKER).write_text("FINISHED\n")
        paths.append(run / FINISHED_MARKER)
    when = time.time() - age_s
    for path in paths:
        os.utime(path, (when, when))
    return run


def outputs_left(root) -> list[str]:  # noqa: ANN001
    return sorted(d.name for d in root.iterdir() if (d / "outputs").exists())


def test_only_the_newest_finished_runs_keep_their_outputs_and_every_log_stays(tmp_path):
    for age, name in enumerate(["newest", "second", "third", "fourth"]):
        make_run(tmp_path, name, age_s=60 * (age + 1))
    pruned = prune_old_runs(tmp_path, keep=2)
    assert sorted(p.name for p in pruned) == ["fourth", "third"]
    assert outputs_left(tmp_path) == ["newest", "second"]
    assert all((d / "pipeline.log").read_text() == "log" for d in tmp_path.iterdir())
    assert prune_old_runs(tmp_path, keep=2) == []  # idempotent
    assert prune_old_runs(tmp_path, keep=0) == []  # 0 = keep everything
    assert (tmp_path / "second" / "outputs").exists()


def test_a_run_in_progress_and_the_current_run_are_never_pruned(tmp_path):
    make_run(tmp_path, "long_training", age_s=3600, finished=False)  # quiet log, still going
    make_run(tmp_path, "current", age_s=7200)  # even when it looks oldest
    make_run(tmp_path, "newer", age_s=60)
    make_run(tmp_path, "killed_long_ago", age_s=3 * 24 * 3600, finished=False)
    pruned = prune_old_runs(tmp_path, keep=1, current=tmp_path / "current")
    assert [p.name for p in pruned] == ["killed_long_ago"]
    assert outputs_left(tmp_path) == ["current", "long_training", "newer"]

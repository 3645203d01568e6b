import os

from pipelines.local import prune_old_runs


def test_only_the_newest_runs_keep_their_outputs_and_every_log_stays(tmp_path):
    for age, name in enumerate(["newest", "second", "third", "fourth"]):
        run = tmp_path / name
        (run / "outputs" / "model").mkdir(parents=True)
        (run / "outputs" / "model" / "model.safetensors").write_bytes(b"w" * 100)
        (run / "pipeline.log").write_text("log")
        os.utime(run / "pipeline.log", (1_000_000 - age, 1_000_000 - age))
    pruned = prune_old_runs(tmp_path, keep=2)
    assert sorted(p.name for p in pruned) == ["fourth", "third"]
    assert [d.name for d in sorted(tmp_path.iterdir()) if (d / "outputs").exists()] == ["newest", "second"]
    assert all((d / "pipeline.log").read_text() == "log" for d in tmp_path.iterdir())
    assert prune_old_runs(tmp_path, keep=2) == []  # idempotent
    assert prune_old_runs(tmp_path, keep=0) == []  # 0 = keep everything
    assert (tmp_path / "second" / "outputs").exists()

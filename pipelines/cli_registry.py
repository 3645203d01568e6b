"""`fmpipe promote | rollback | history | status`: people moving models through staging to production.

  fmpipe promote MODEL --version N --to production --reason "..."   (compare-and-set, recorded)
  fmpipe promote ... --request; fmpipe approve|reject MODEL ID       the two-person rule for production
  fmpipe rollback MODEL                                              production back one step
  fmpipe history MODEL [--adopt --alias A --reason R]                every alias move: when, who, why
  fmpipe status [--check]                                            models, aliases, headline metrics
  fmpipe predict MODEL [--alias A | --version N] TEXT|IMAGE ...      what a registered model says
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.core.errors import FmpipeError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from components.core.config import Params, RegistryConfig
    from components.registry.registry import AliasMove, Expected, MoveLimits


CHECK_FAILED = 4  # `fmpipe status --check` found a drifted alias or an ungated version


def user_path(text: str) -> str:
    """An argparse type for paths: `~` and `~user` expanded, as a shell would (it doesn't inside
    quotes or after `--opt=`); relative paths stay relative to the working directory."""
    return str(Path(text).expanduser()) if text.startswith("~") else text


def _actor() -> str:
    """Who is acting: FMPIPE_ACTOR where set (a CI system's authenticated user, e.g.
    `user:${GITHUB_ACTOR}`), else the login and host of this process."""
    if os.environ.get("FMPIPE_ACTOR", "").strip():
        return os.environ["FMPIPE_ACTOR"].strip()
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "unknown"
    return f"user:{user}@{socket.gethostname()}"


def _connect(args: argparse.Namespace) -> tuple[RegistryConfig, MlflowClient]:
    """The registry named by params (registry.tracking_uri, else the repo's sqlite), reachable."""
    params, client = connect_params(args)
    return params.registry, client


def connect_params(args: argparse.Namespace) -> tuple[Params, MlflowClient]:
    """The params (--params, -S) and a client of the registry they name, checked reachable."""
    from mlflow import MlflowClient

    from components.core.config import load_params
    from components.core.credentials import secure_tracking_uri
    from components.core.tracking import default_tracking_uri
    from components.registry.step import bound_registry_calls
    from pipelines.env import apply_defaults

    root = Path(args.params).resolve().parent
    apply_defaults(root)
    params = load_params(args.params, args.set or [])
    cfg = params.registry
    uri = secure_tracking_uri(cfg.tracking_uri) or default_tracking_uri(root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise FmpipeError(f"no MLflow registry at {uri} yet: run `fmpipe run` first, or point "
                          "registry.tracking_uri at your server (-S registry.tracking_uri=http://...)")
    bound_registry_calls(cfg, uri)
    return params, MlflowClient(tracking_uri=uri, registry_uri=uri)


def mlflow_error_line(exc: Exception) -> str:
    """An MLflow exception as one line: its first, which says what failed."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"MLflow: {first[:400]}"


@contextlib.contextmanager
def _one_line_errors(client: MlflowClient) -> Iterator[None]:
    """An MLflow failure (a model that is not there, a server that stopped answering) as one line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        text = str(exc)
        if any(s in text for s in ("timed out", "Max retries exceeded", "ConnectionError")):
            why = "a request timed out" if "timed out" in text else "the connection failed"
            raise FmpipeError(f"the MLflow tracking server at {client.tracking_uri} stopped answering "
                              f"({why}); a move cut short is settled by `fmpipe history` once it is back"
                              ) from None
        raise FmpipeError(mlflow_error_line(exc)) from None


def _limits(cfg: RegistryConfig) -> MoveLimits:
    from components.registry.registry import MoveLimits

    return MoveLimits(cfg.lock_wait_s, cfg.lock_lease_s)


def _expected(text: str | None) -> Expected:
    from components.registry.registry import CURRENT

    if text is None:
        return CURRENT
    return None if text.lower() == "none" else text


def _say(move: AliasMove) -> str:
    if move.seq is None:
        return f"{move.model_name}: '{move.alias}' is already on version {move.version}; nothing to do"
    was = "not set" if move.previous is None else f"version {move.previous}"
    return (f"{move.model_name}: '{move.alias}' -> version {move.version} (was {was}); "
            f"history entry #{move.seq}")


def cmd_promote(args: argparse.Namespace) -> int:
    from components.registry.registry import promote, promote_across

    cfg, client = _connect(args)
    if args.request:
        return _request(args, cfg, client)
    with _one_line_errors(client):
        if args.to_model:
            move = promote_across(args.model, args.version, args.to_model, args.to, args.reason, _actor(),
                                  expected=_expected(args.expect), client=client, limits=_limits(cfg),
                                  require_approval=cfg.production_approval)
        else:
            move = promote(args.model, args.version, args.to, args.reason, _actor(),
                           expected=_expected(args.expect), client=client, limits=_limits(cfg),
                           require_approval=cfg.production_approval)
    print(_say(move))
    return 0


def _request(args: argparse.Namespace, cfg: RegistryConfig, client: MlflowClient) -> int:
    from components.registry.approval import request_promotion

    if args.to != "production" or args.to_model or args.expect:
        raise FmpipeError("--request is for --to production (the two-person rule); it takes no --to-model "
                          "or --expect (the request keeps the version production is on now)")
    with _one_line_errors(client):
        request = request_promotion(args.model, args.version, args.reason, _actor(), cfg.approval_ttl_h,
                                    client=client, lease_s=cfg.lock_lease_s)
    print(f"{args.model}: request {request.id}: version {request.version} to production (now on "
          f"{request.expected or 'no version'}), pending until {request.expires}; another person approves "
          f"it: fmpipe approve {args.model} {request.id}")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    """`fmpipe approve` and `fmpipe reject`."""
    from components.registry.approval import decide

    cfg, client = _connect(args)
    approve = args.command == "approve"
    if not approve and not args.reason:
        raise FmpipeError("reject needs --reason (kept with the request)")
    with _one_line_errors(client):
        request, move = decide(args.model, args.request_id, _actor(), approve=approve,
                               reason=args.reason or "", client=client, limits=_limits(cfg))
    print(f"{args.model}: request {request.id} {request.state} by {request.decided_by}")
    if move is not None:
        print(_say(move))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from components.registry.registry import rollback

    cfg, client = _connect(args)
    with _one_line_errors(client):
        move = rollback(args.model, _actor(), args.reason or "", alias=args.alias, client=client,
                        limits=_limits(cfg))
    print(_say(move))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from components.registry.approval import requests
    from components.registry.history import parse_history, settle_stopped
    from components.registry.registry import adopt, alias_drift

    cfg, client = _connect(args)
    if args.adopt:
        if not (args.alias and args.reason):
            raise FmpipeError("--adopt needs --alias (the alias moved outside fmpipe) and --reason")
        with _one_line_errors(client):
            move = adopt(args.model, args.alias, args.reason, _actor(), client=client, limits=_limits(cfg))
        print(f"{args.model}: adopted '{move.alias}' on version {move.version} (history said "
              f"{move.previous or 'unset'}); history entry #{move.seq}")
        return 0
    with _one_line_errors(client):
        registered = settle_stopped(client, args.model, _actor(), cfg.lock_lease_s)
    entries = [e for e in parse_history(registered.tags) if args.alias in (None, e.alias)]
    drift = [d for d in alias_drift(registered) if args.alias in (None, d.alias)]
    _print_history(args.model, entries)
    _print_requests([r for r in requests(registered) if args.alias in (None, r.alias)])
    for d in drift:
        print(f"! {d.describe(args.model)}" + (f" (adopt it: fmpipe history --adopt {args.model} --alias "
                                               f"{d.alias} --reason ...)" if d.version else ""))
    return 0


def _print_history(model: str, entries: list) -> None:
    if not entries:
        print(f"{model}: no alias moves recorded")
        return
    print(f"{'#':>4}  {'when (UTC)':20}  {'alias':10}  {'version':>7}  {'from':>4}  {'action':8}  "
          f"{'by':30}  why")
    for e in entries:
        # Refused and interrupted attempts are listed too (audit), with the version in brackets.
        version = e.version if e.state == "done" else f"({e.version})"
        why = e.reason + (f" [{e.state}, no change]" if e.state != "done" else "")
        why += f" [copied from {e.source}]" if e.source else ""
        why += f" [{e.note}]" if e.note else ""
        print(f"{e.seq:>4}  {e.at:20}  {e.alias:10}  {version:>7}  {e.previous or '-':>4}  "
              f"{e.action:8}  {e.actor:30}  {why}")


def _print_requests(found: list) -> None:
    """Promotion requests (the two-person rule): who asked, who decided, and why."""
    if not found:
        return
    print("\npromotion requests (two-person rule):")
    for r in found:
        state = r.shown_state()
        line = (f"  {r.id}  {r.at}  {r.alias} -> version {r.version} (from {r.expected or '-'})  "
                f"requested by {r.requester}: {r.reason}  [{state}")
        if r.decided_by:
            line += f" by {r.decided_by} at {r.decided_at}" + (f": {r.decision}" if r.decision else "")
        elif state == "pending":
            line += f" until {r.expires}"
        print(line + "]")


def cmd_status(args: argparse.Namespace) -> int:
    from components.registry.registry import registry_status
    from pipelines.runlock import describe, run_state

    cfg, client = _connect(args)
    with _one_line_errors(client):
        models = registry_status(client, _actor(), cfg.lock_lease_s, args.model)
    if not models:
        print("no registered models")
    for m in models:
        print(f"{m.name}  (latest version {m.latest_version or '-'}, {m.moves} alias moves recorded)")
        if not m.aliases:
            print("  no aliases set")
        for a in m.aliases:
            metrics = "  ".join(f"{k}={v}" for k, v in a.metrics.items()) or "no metrics"
            since = f"since {a.since} by {a.by}" if a.since else "not in fmpipe's history"
            if a.drifted:
                since = (f"MOVED OUTSIDE FMPIPE: the history expects "
                         f"{'version ' + a.expected if a.expected else 'it unset'}")
            print(f"  {a.alias:10}  version {a.version:>4}  {metrics}  ({since})")
        for d in m.removed:
            print(f"  {d.alias:10}  not set       (REMOVED OUTSIDE FMPIPE: the history expects version "
                  f"{d.expected})")
    problems = [line for m in models for line in m.problems]
    state, record = run_state(Path(args.params).resolve().parent)
    if state == "going":
        print(f"pipeline: {describe(record)} is going")
    elif state == "killed":
        print(f"pipeline: {describe(record)} was killed; the next `fmpipe run` cleans up after it")
    if args.check and problems:
        for line in problems:
            print(f"fmpipe: check failed: {line}", file=sys.stderr)
        return CHECK_FAILED
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Label (and its probability) for each text, image file or audio file, from the registered artifact as it
    serves."""
    import tempfile

    import numpy as np

    from components.serving.live import VersionRefused, download_version
    from components.serving.serving import (
        SERVING_FILE,
        OnnxAudioClassifier,
        OnnxImageClassifier,
        open_classifier,
    )

    _, client = _connect(args)
    texts = list(args.texts)
    if args.file:
        texts += [line for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts and not args.user:
        raise FmpipeError("nothing to predict: give texts (or image files) as arguments, or --file with "
                          "one per line (a recommender: --user ID)")
    with _one_line_errors(client), tempfile.TemporaryDirectory() as tmp:
        if args.version:
            version, how = client.get_model_version(args.model, args.version), ""
        else:
            version, how = client.get_model_version_by_alias(args.model, args.alias), f" (alias {args.alias})"
        try:
            model_dir = download_version(client, args.model, version.version, Path(tmp))
        except VersionRefused as exc:
            raise FmpipeError(str(exc)) from None
        if json.loads((model_dir / SERVING_FILE).read_text()).get("task") == "recsys":
            return _recommend(args, model_dir, f"{args.model} version {version.version}{how}", texts)
        if args.user:
            raise FmpipeError(f"{args.model} is a classifier: --user is for recommenders; "
                              "give inputs to label")
        model = open_classifier(model_dir)
        if isinstance(model, OnnxImageClassifier):
            texts = [str(Path(t).expanduser()) for t in texts]
            check_image_files(texts)
        elif isinstance(model, OnnxAudioClassifier):
            texts = [str(Path(t).expanduser()) for t in texts]
            check_audio_files(texts)
        logits = model.logits(texts)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    print(f"{args.model} version {version.version}{how}, served by {model.session.backend}")
    width = max(len(label) for label in model.labels)
    for text, row in zip(texts, probs, strict=True):
        best = int(row.argmax())
        print(f"{model.labels[best]:<{width}}  {row[best]:.2f}  {text}")
    return 0


def _recommend(args: argparse.Namespace, model_dir: Path, what: str, extra: list[str]) -> int:
    """Each user's top items, with the title, the ranking score and the predicted rating."""
    from components.serving.serving import open_recommender

    users = list(args.user or []) + extra
    model = open_recommender(model_dir)
    print(f"{what}, top {args.top} per user (onnxruntime; items the user already had are left out)")
    for user, rows in zip(users, model.recommend(users, top=args.top), strict=True):
        known = "" if user in model.user_row else " (unknown user: the most broadly liked items)"
        print(f"user {user}{known}")
        for rank, row in enumerate(rows, start=1):
            print(f"  {rank:>2}. {row['title'] or row['item']:<50.50}  score {row['score']:6.3f}  "
                  f"rating {row['rating']:.2f}")
    return 0


def check_image_files(paths: list[str]) -> None:
    """One line naming the first file that is missing or is no image Pillow can decode."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        if not Path(path).is_file():
            raise FmpipeError(f"{path}: no such image file")
        try:
            with Image.open(path) as image:
                image.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise FmpipeError(f"{path}: not an image this model can read ({exc})") from None


def check_audio_files(paths: list[str]) -> None:
    """One line naming the first file that is missing or is no audio this model's decoder reads."""
    from components.serving.serving import decode_audio

    for path in paths:
        if not Path(path).is_file():
            raise FmpipeError(f"{path}: no such audio file")
        try:
            samples, _ = decode_audio(path)
        except Exception as exc:  # libsndfile's errors for files it cannot read
            raise FmpipeError(f"{path}: not audio this model can read (WAV, FLAC, OGG): "
                              f"{' '.join(str(exc).split())[:120]}") from None
        if not len(samples):
            raise FmpipeError(f"{path}: holds no samples (a zero-length clip)")


def params_arguments(p: argparse.ArgumentParser, example: str = "registry.tracking_uri=http://host:5000"
                     ) -> argparse.ArgumentParser:
    """--params and -S, as every command that reads params takes them."""
    p.add_argument("--params", default="params.yaml", type=user_path,
                   help="params file (default: params.yaml)")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                   help=f"override a param: -S {example} (repeatable)")
    return p


def add_registry_commands(sub: Any) -> None:
    """Add the registry subcommands to `fmpipe`'s subparsers."""

    def parser(name: str, help_text: str) -> argparse.ArgumentParser:
        return params_arguments(sub.add_parser(name, help=help_text, description=help_text))

    promote = parser("promote", "move an alias (staging, production) to a model version")
    promote.add_argument("model", help="registered model name")
    promote.add_argument("--version", required=True, help="the version to promote")
    promote.add_argument("--to", required=True, choices=("staging", "production"), help="the alias")
    promote.add_argument("--reason", required=True, help="why (kept in the history)")
    promote.add_argument("--expect", metavar="VERSION|none",
                         help="the version the alias must still be on, else nothing changes "
                         "(default: the one it is on when the command starts)")
    promote.add_argument("--request", action="store_true",
                         help="the two-person rule (registry.production_approval): record a request to "
                         "move production, for another person to approve (fmpipe approve)")
    promote.add_argument("--to-model", metavar="NAME",
                         help="environment separation: copy the version into registered model NAME "
                         "(e.g. MODEL-prod) and move the alias there")
    promote.set_defaults(func=cmd_promote)

    for name, text in (("approve", "approve a request to move production (the two-person rule): the "
                        "alias moves; someone other than the requester must run it"),
                       ("reject", "reject (or, as its requester, withdraw) a request to move production")):
        decide = parser(name, text)
        decide.add_argument("model", help="registered model name")
        decide.add_argument("request_id", help="the request's id (fmpipe history MODEL lists them)")
        decide.add_argument("--reason", help="why (kept with the request and, on approval, in the history)"
                            + ("; required" if name == "reject" else ""))
        decide.set_defaults(func=cmd_decide)

    rollback = parser("rollback", "put an alias (production) back on the version it held before")
    rollback.add_argument("model", help="registered model name")
    rollback.add_argument("--alias", default="production", help="default: production")
    rollback.add_argument("--reason", help="why (kept in the history)")
    rollback.set_defaults(func=cmd_rollback)

    history = parser("history", "every alias move of a model: when, which version, from which, who, why")
    history.add_argument("model", help="registered model name")
    history.add_argument("--alias", help="only this alias")
    history.add_argument("--adopt", action="store_true",
                         help="record in the history a move of --alias made outside fmpipe (the MLflow "
                         "UI, another client), with --reason; until then promote and rollback refuse it")
    history.add_argument("--reason", help="with --adopt: why the outside move stands")
    history.set_defaults(func=cmd_history)

    status = parser("status", "registered models, which version holds which alias, headline metrics")
    status.add_argument("model", nargs="?", help="only this model")
    status.add_argument("--check", action="store_true",
                        help=f"exit {CHECK_FAILED} when an alias was moved outside fmpipe, or points at "
                        "a version without the blessing and parity tags (for CI and cron)")
    status.set_defaults(func=cmd_status)

    predict = parser("predict", "label texts (or image or audio files) with a registered model, as its ONNX "
                     "artifact serves them (inputs first: fmpipe predict MODEL TEXT ... "
                     "[--alias production]); "
                     "a recommender: fmpipe predict MODEL --user 42 --top 10")
    predict.add_argument("model", help="registered model name")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--alias", default="staging", help="the version holding this alias (default: staging)")
    which.add_argument("--version", help="this version instead of an alias")
    predict.add_argument("texts", nargs="*", metavar="INPUT",
                         help="texts to label (image files for an image model, WAV / FLAC / OGG files for "
                              "an audio model)")
    predict.add_argument("--file", type=user_path, help="a text file, one text (or file path) per line")
    predict.add_argument("--user", action="append", metavar="ID",
                         help="a recommender: recommend for this user id (repeatable)")
    predict.add_argument("--top", type=int, default=10, help="a recommender: items per user (default: 10)")
    predict.set_defaults(func=cmd_predict)

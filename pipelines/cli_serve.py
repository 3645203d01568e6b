"""`fmpipe serve MODEL`: serve the version an alias points at over HTTP, following the alias.

  fmpipe serve MODEL [--alias production] [--host 127.0.0.1] [--port 8080] [--poll-s 10]
  curl -s localhost:8080/predict -d '{"inputs": ["what a lovely day"]}'

Settings come from the `serve:` section of params (the flags override it).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from components.core.errors import FmpipeError
from pipelines.cli_registry import connect_params, mlflow_error_line, params_arguments


def cmd_serve(args: argparse.Namespace) -> int:
    from components.serving.live import AliasFollower
    from components.serving.server import serve

    params, client = connect_params(args)
    flags = {"alias": args.alias, "host": args.host, "port": args.port, "poll_s": args.poll_s}
    cfg = params.serve.model_copy(update={k: v for k, v in flags.items() if v is not None})
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    _check_port(cfg.host, cfg.port)
    _check_alias(client, args.model, cfg.alias)
    work = Path(tempfile.mkdtemp(prefix="fmpipe-serve-"))
    try:
        follower = AliasFollower(client, args.model, cfg.alias, cfg.poll_s, work, cfg.threads)
        follower.poll_once()
        if follower.current is None:
            version = follower.state.alias_version
            why = follower.state.refused.get(version or "", follower.state.registry_error)
            raise FmpipeError(f"cannot serve {args.model}@{cfg.alias}: {why}")
        loaded = follower.current
        print(f"serving {args.model} version {loaded.version} (alias {cfg.alias}) on "
              f"http://{cfg.host}:{cfg.port} with {loaded.model.session.backend}; following the alias every "
              f"{cfg.poll_s:g} s (Ctrl-C stops)", file=sys.stderr, flush=True)
        serve(follower, cfg, cfg.host, cfg.port)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _check_port(host: str, port: int) -> None:
    """One line, before any model is loaded, when the address cannot be listened on."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise FmpipeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
                          "or stop what holds it") from None


def _check_alias(client: Any, model: str, alias: str) -> None:
    """One line when the model or the alias is not there (rather than serving nothing)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model, alias)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            raise FmpipeError(f"{model} has no version with alias '{alias}' (or no such model): promote one "
                              f"first, or serve another alias (--alias staging)") from None
        raise FmpipeError(mlflow_error_line(exc)) from None
    if version.tags.get("fmpipe.task") == "recsys":
        raise FmpipeError(f"{model} is a recommender: `fmpipe serve` serves classifiers only for now; "
                          f"use `fmpipe predict {model} --user ID` or the MLflow pyfunc "
                          f"(models:/{model}@{alias})")


def add_serve_command(sub: Any) -> None:
    text = ("serve the version an alias points at over HTTP (onnxruntime/OpenVINO, no torch), and follow the "
            "alias: a promotion or rollback swaps the new version in once it answers its canaries")
    p = sub.add_parser("serve", help=text, description=text + ". Endpoints: POST /predict "
                       '{"inputs": [...]} (texts, or base64 image files), GET /health, /ready, /metadata, '
                       "/metrics (Prometheus).")
    p.add_argument("model", help="registered model name")
    p.add_argument("--alias", help="the alias to serve and follow (default: serve.alias, production)")
    p.add_argument("--host", help="address to listen on (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serve.port, 8080)")
    p.add_argument("--poll-s", type=float,
                   help="seconds between asks of the registry (default: serve.poll_s)")
    params_arguments(p, "serve.max_batch=64")
    p.set_defaults(func=cmd_serve)

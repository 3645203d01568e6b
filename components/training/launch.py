"""Fine-tune (or pretrain) in one process or data-parallel in several:

    python -m components.training.launch --data artifacts/data --out artifacts/model
    torchrun --nproc_per_node 2 -m components.training.launch --data artifacts/data --out artifacts/model
    torchrun --nproc_per_node 2 -m components.training.launch --step pretrain --data … --out …

Each process trains on its share of every batch plan (gloo on CPU, NCCL on GPUs); rank 0
evaluates, tracks in MLflow and saves. The pipeline's steps start this themselves when
`finetune.processes` / `pretrain.processes` asks for more than one (see spread.py).
An adapter: it reads argv, the environment and params.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import asdict
from pathlib import Path

from components.core.errors import FmpipeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m components.training.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with train/val/test.parquet (from ingest)")
    parser.add_argument("--out", required=True, help="folder for the fine-tuned model")
    parser.add_argument("--step", choices=["finetune", "pretrain"], default="finetune")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--params-json", default=None, help="resolved params as JSON (not --params/-S)")
    parser.add_argument("--ctx-json", default=None, help="the pipeline run's tracking context, as JSON")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, DVC style: -S finetune.epochs=2 (repeatable)")
    parser.add_argument("--base-model", default=None, help="a pretrained model folder (the pretrain step's)")
    parser.add_argument("--no-track", action="store_true", help="train without MLflow tracking")
    parser.add_argument("--result", default=None, help="write the result as JSON here (rank 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import importlib

    from components.core.config import Params, load_params
    from components.core.tracking import RunContext, default_tracking_uri
    from components.training import distributed
    from pipelines.env import apply_defaults

    # The step by name (its `train` and `run`): training code imports no step.
    step = importlib.import_module(f"components.{args.step}.step")

    root = Path(args.params).resolve().parent
    apply_defaults(root)
    try:
        if args.params_json:
            params = Params.from_json(Path(args.params_json).read_text())
        else:  # asking for the pretrain step means wanting it, whatever pretrain.enabled says
            wanted = ["pretrain.enabled=true"] if args.step == "pretrain" else []
            params = load_params(args.params, wanted + args.set)
        info = distributed.init_from_env()
        base = Path(args.base_model) if args.base_model else None
        data, out = Path(args.data), Path(args.out)
        extra = (base,) if args.step == "finetune" else ()  # finetune may start from pretrain's model
        if args.no_track:
            result = step.train(data, out, params, *extra)
        else:
            if args.ctx_json:
                ctx = RunContext.from_json(Path(args.ctx_json).read_text())
            else:
                ctx = RunContext(
                    pipeline_run_id=f"launch-{uuid.uuid4().hex}", experiment=params.registry.experiment,
                    tracking_uri=params.registry.tracking_uri or default_tracking_uri(root),
                    artifact_root=str(root / ".mlflow" / "artifacts"))
            result = step.run(data, out, params, ctx, *extra)
        if args.result and info.is_main:
            Path(args.result).write_text(json.dumps(asdict(result), indent=2))
    except FmpipeError as exc:
        print(f"fmpipe: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

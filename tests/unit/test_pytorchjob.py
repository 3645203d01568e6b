"""The multi-node PyTorchJob in infra/k8s, read with the parsers that will run it: torchrun's and
the launcher's (a cluster is not available here; the same torchrun arguments run on localhost in
tests/training)."""

from __future__ import annotations

import yaml

from components.training.launch import build_parser
from tests.conftest import REPO

MANIFEST = REPO / "infra" / "k8s" / "finetune-pytorchjob.yaml"


def _expand(arg: str, **env: str) -> str:
    for name, value in env.items():
        arg = arg.replace(f"$({name})", value)
    return arg


def _replicas() -> dict:
    job = yaml.safe_load(MANIFEST.read_text())
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    return job["spec"]["pytorchReplicaSpecs"]


def test_every_pod_runs_the_launcher_under_torchrun_with_its_node_rank():
    from torch.distributed.run import get_args_parser

    replicas = _replicas()
    assert replicas["Master"]["replicas"] == 1
    nodes = sum(spec["replicas"] for spec in replicas.values())
    for spec in replicas.values():
        (container,) = spec["template"]["spec"]["containers"]
        command = container["command"]
        assert command[0] == "torchrun"
        # Kubernetes expands $(VAR) from the pod's environment, which the operator fills in.
        expanded = [_expand(arg, RANK="1", MASTER_ADDR="fmpipe-finetune-master-0", MASTER_PORT="23456")
                    for arg in command[1:]]
        torchrun = get_args_parser().parse_args(expanded)
        assert int(torchrun.nnodes) == nodes
        assert int(torchrun.nproc_per_node) == container["resources"]["limits"]["nvidia.com/gpu"]
        assert (torchrun.node_rank, torchrun.master_addr, torchrun.master_port) == (
            1, "fmpipe-finetune-master-0", 23456)
        assert torchrun.module and torchrun.training_script == "components.training.launch"
        launch = build_parser().parse_args(torchrun.training_script_args)
        assert launch.step == "finetune" and launch.params_json and launch.ctx_json
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        for path in (launch.data, launch.out, launch.params_json, launch.ctx_json):
            assert any(path.startswith(m + "/") for m in mounts), f"{path} is on no mounted volume"

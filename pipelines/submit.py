"""Send the pipeline to a Kubeflow Pipelines cluster: one run now, or a recurring run on a cron
schedule (the scheduled retraining of the cluster path).

What a run needs besides the compiled DAG is its three parameters: the data source, the params
as JSON and the run context as JSON. The context names the team's MLflow server (the pods can't
reach a sqlite file on this machine) and leaves the pipeline run id empty: each KFP run, every
firing of a schedule included, then files its steps under its own KFP job id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from components.core.config import Params
from components.core.credentials import refuse_password
from components.core.errors import FmpipeError
from components.core.tracking import RunContext
from pipelines.dag import PIPELINE_NAME


@dataclass
class Submission:
    arguments: dict[str, str]  # the pipeline's parameters: source, params_json, ctx_json
    experiment: str            # the KFP experiment (the MLflow one's name)
    run_name: str
    cron: str | None = None    # KFP's six-field form (seconds first); None = one run now
    notes: list[str] = field(default_factory=list)


def kfp_cron(expression: str) -> str:
    """A five-field cron expression (minute hour day month weekday) in KFP's six-field form, which
    starts with seconds; a six-field one passes through."""
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise FmpipeError(f"--schedule '{expression}': a cron expression has 5 fields (minute hour "
                      "day-of-month month day-of-week), e.g. '0 3 * * *' for 03:00 every day")


def build_submission(params: Params, git_commit: str, schedule: str | None = None) -> Submission:
    """The run's parameters from params; refuses a tracking store the pods could not reach."""
    uri = params.registry.tracking_uri
    refuse_password(uri, "a cluster run")
    if not uri or not uri.startswith(("http://", "https://")):
        raise FmpipeError("a cluster run needs an MLflow server the pods can reach (http[s]://: the "
                          "steps upload their models through it): set registry.tracking_uri in params "
                          f"(or -S registry.tracking_uri=http://...); now {uri or 'unset (sqlite here)'}")
    ctx = RunContext(pipeline_run_id="", tracking_uri=uri, experiment=params.registry.experiment,
                     git_commit=git_commit, data_source=params.data.source)
    sub = Submission(
        arguments={"source": params.data.source, "params_json": params.to_json(),
                   "ctx_json": ctx.to_json()},
        experiment=params.registry.experiment,
        run_name=f"{PIPELINE_NAME}-{git_commit[:8]}" + ("-scheduled" if schedule else ""),
        cron=kfp_cron(schedule) if schedule else None)
    source = params.data.source
    if "/" in source or "." in source:
        sub.notes.append(f"data.source '{source}' is read inside the pods: it must be a path they "
                         "mount (or a built-in corpus name)")
    return sub


def run_request(sub: Submission, package: str) -> dict:
    """Keyword arguments of kfp.Client.create_run_from_pipeline_package for a one-off run."""
    return {"pipeline_file": package, "arguments": sub.arguments, "run_name": sub.run_name,
            "experiment_name": sub.experiment, "enable_caching": False}


def schedule_request(sub: Submission, package: str, experiment_id: str) -> dict:
    """Keyword arguments of kfp.Client.create_recurring_run for a schedule."""
    return {"experiment_id": experiment_id, "job_name": sub.run_name, "cron_expression": sub.cron,
            "pipeline_package_path": package, "params": sub.arguments,
            "max_concurrency": 1,  # one run at a time, as locally
            "no_catchup": True,    # a paused schedule does not fire its backlog when resumed
            "enable_caching": False}


def describe(sub: Submission) -> str:
    """The request that would be sent, as JSON (for --dry-run)."""
    package = "<the compiled DAG>"
    request = (run_request(sub, package) if sub.cron is None
               else schedule_request(sub, package, f"<id of KFP experiment '{sub.experiment}'>"))
    return json.dumps(request, indent=2)


def send(sub: Submission, host: str, params: Params) -> str:
    """Submit to the KFP API at `host`; returns a line saying what was created."""
    import tempfile
    import warnings

    import kfp

    from pipelines.compile import compile_pipeline

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # kfp.Client's note on server versions
        package = str(compile_pipeline(Path(tmp) / "pipeline.yaml", params))
        try:
            client = kfp.Client(host=host)
            if sub.cron is None:
                result = client.create_run_from_pipeline_package(**run_request(sub, package))
                return f"submitted run {result.run_id} to {host} (experiment {sub.experiment})"
            experiment = client.create_experiment(sub.experiment)  # returns the existing one too
            recurring = client.create_recurring_run(
                **schedule_request(sub, package, experiment.experiment_id))
            return (f"scheduled recurring run {recurring.recurring_run_id} on {host}: cron "
                    f"'{sub.cron}' (experiment {sub.experiment}, one run at a time)")
        except Exception as exc:
            from_client = type(exc).__module__.split(".")[0] in ("kfp", "kfp_server_api", "urllib3",
                                                                 "requests")
            if not (from_client or isinstance(exc, (ConnectionError, TimeoutError))):
                raise  # a bug: its traceback is what a report needs
            raise FmpipeError(f"Kubeflow Pipelines at {host}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    """One short line from a client error: the OS's reason when a connection failed."""
    text = str(exc).strip()
    if errno := re.search(r"\[Errno -?\d+\] ([^\"')]+)", text):
        return f"cannot connect ({errno.group(1).strip()})"
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]

"""Talk to a KFP endpoint: upload the pipeline (or a new version), run, schedule, list runs.

Every function takes a `kfp.Client` (or anything with its methods), so the logic is testable
against a stand-in.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.config import ConfigError


@dataclass(frozen=True)
class Uploaded:
    """The pipeline and the version that a run or schedule uses."""

    pipeline_id: str
    version_id: str
    version_name: str
    created_pipeline: bool


# The Kubernetes service account runs execute as (k8s/base/pipeline-runner.yaml): submit and
# schedule name it on every run, so KFP's default runner account can stay unprivileged.
DEFAULT_SERVICE_ACCOUNT = "tl-pipeline-runner"
# An existing bearer token may come from the environment, out of the process list and history.
EXISTING_TOKEN_ENV = "KFP_EXISTING_TOKEN"


@dataclass(frozen=True)
class Auth:
    """How to authenticate to the KFP endpoint; the names are kfp.Client's own arguments.

    client_id (+ other_client_id, other_client_secret): Google IAP in front of KFP; kfp.Client
    gets an ID token from Google credentials (a service account, or a user's login).
    existing_token: a bearer token made elsewhere (e.g. `gcloud auth print-identity-token`).
    sa_token_path: an audience-bound service-account token file in a pod (multi-user KFP).
    cookies: a session cookie of a Dex/oauth2-proxy login, e.g. "authservice_session=...".
    """

    client_id: str | None = None
    other_client_id: str | None = None
    other_client_secret: str | None = None
    existing_token: str | None = None
    sa_token_path: str | None = None
    cookies: str | None = None

    def client_arguments(self) -> dict[str, Any]:
        """The kfp.Client keyword arguments for this mode (one mode at a time)."""
        modes = [
            name
            for name, value in (
                ("client_id", self.client_id),
                ("existing_token", self.existing_token),
                ("sa_token_path", self.sa_token_path),
            )
            if value
        ]
        if len(modes) > 1:
            raise ConfigError(f"choose one way to authenticate, got {' and '.join(modes)}")
        if (self.other_client_id or self.other_client_secret) and not self.client_id:
            raise ConfigError("other_client_id and other_client_secret need client_id (IAP)")
        kwargs: dict[str, Any] = {}
        if self.client_id:
            kwargs.update(
                client_id=self.client_id,
                other_client_id=self.other_client_id,
                other_client_secret=self.other_client_secret,
            )
        if self.existing_token:
            kwargs["existing_token"] = self.existing_token
        if self.sa_token_path:
            from kfp.client import ServiceAccountTokenVolumeCredentials

            if not Path(self.sa_token_path).is_file():
                raise FileNotFoundError(f"--sa-token-path {self.sa_token_path}: no such file")
            kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(self.sa_token_path)
        if self.cookies:
            kwargs["cookies"] = self.cookies
        return kwargs


def make_client(host: str | None, namespace: str | None = None, auth: Auth | None = None):
    """A kfp.Client for `host` (None: the in-cluster service), authenticated as `auth` says."""
    from kfp import Client

    kwargs: dict[str, Any] = {"host": host or None, **(auth or Auth()).client_arguments()}
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings():
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later": a given.
        warnings.simplefilter("ignore", FutureWarning)
        return Client(**kwargs)


def version_name(pipeline_name: str, now: dt.datetime | None = None) -> str:
    """A unique, sortable version name: <pipeline>-<UTC timestamp>."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{pipeline_name}-{now.strftime('%Y%m%d-%H%M%S')}"


def upload(client, package_path: str, pipeline_name: str, description: str = "") -> Uploaded:
    """Create the pipeline if it is new, else add a version; return both ids."""
    name = version_name(pipeline_name)
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(
            pipeline_package_path=package_path,
            pipeline_name=pipeline_name,
            description=description or None,
        )
        pipeline_id = pipeline.pipeline_id
        versions = client.list_pipeline_versions(pipeline_id=pipeline_id, page_size=1)
        version = (versions.pipeline_versions or [None])[0]
        if version is None:
            raise RuntimeError(f"pipeline {pipeline_name!r} was created without a version")
        return Uploaded(pipeline_id, version.pipeline_version_id, version.display_name, True)
    version = client.upload_pipeline_version(
        pipeline_package_path=package_path,
        pipeline_version_name=name,
        pipeline_id=pipeline_id,
        description=description or None,
    )
    return Uploaded(pipeline_id, version.pipeline_version_id, name, False)


def run_url(host: str, run_id: str) -> str:
    """The KFP UI page of a run."""
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def submit(
    client,
    uploaded: Uploaded,
    *,
    experiment: str,
    run_name: str,
    params: dict,
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
) -> str:
    """Start a run of the uploaded version in `experiment`; return the run id.

    The run's pods use `service_account` ("": KFP's default runner account).
    """
    run = client.run_pipeline(
        job_name=run_name, **_run_target(client, uploaded, experiment, params, service_account)
    )
    return run.run_id


def _run_target(client, uploaded: Uploaded, experiment: str, params: dict, account: str) -> dict:
    """What a run and a recurring run share: experiment, pipeline version, parameters, account."""
    return {
        "experiment_id": client.create_experiment(name=experiment).experiment_id,
        "pipeline_id": uploaded.pipeline_id,
        "version_id": uploaded.version_id,
        "params": params,
        "service_account": account or None,
    }


def kfp_cron(expression: str) -> str:
    """KFP cron has six fields (seconds first); a five-field expression gets seconds 0."""
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise ConfigError(
        f"cron expression needs 5 or 6 fields (KFP: second minute hour day month weekday), "
        f"got {expression!r}"
    )


def schedule(
    client,
    uploaded: Uploaded,
    *,
    experiment: str,
    name: str,
    cron: str,
    params: dict,
    service_account: str = DEFAULT_SERVICE_ACCOUNT,
) -> str:
    """Create a recurring run: max concurrency 1, no catch-up. Return its id.

    Its runs' pods use `service_account` ("": KFP's default runner account).
    """
    recurring = client.create_recurring_run(
        job_name=name,
        cron_expression=kfp_cron(cron),
        max_concurrency=1,
        no_catchup=True,
        enabled=True,
        **_run_target(client, uploaded, experiment, params, service_account),
    )
    return recurring.recurring_run_id


def list_runs(client, *, experiment: str | None = None, limit: int = 10) -> list[dict[str, str]]:
    """The most recent runs, newest first: id, name, state, created and finished times."""
    experiment_id = None
    if experiment:
        experiment_id = client.get_experiment(experiment_name=experiment).experiment_id
    response = client.list_runs(
        page_size=limit, sort_by="created_at desc", experiment_id=experiment_id
    )
    return [
        {
            "run_id": run.run_id or "",
            "name": run.display_name or "",
            "state": str(run.state or ""),
            "created_at": str(run.created_at or ""),
            "finished_at": str(run.finished_at or ""),
        }
        for run in response.runs or []
    ]


def format_runs(runs: list[dict[str, str]]) -> str:
    """A plain table of runs."""
    if not runs:
        return "no runs"
    columns = ("state", "created_at", "name", "run_id")
    widths = {c: max(len(c), *(len(run[c]) for run in runs)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(run[c].ljust(widths[c]) for c in columns) for run in runs]
    return "\n".join(line.rstrip() for line in lines)

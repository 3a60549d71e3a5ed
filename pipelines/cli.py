"""CLI: python -m pipelines {compile,run,submit,schedule,runs}."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from components.common.config import ConfigError
from pipelines import profiles, remote
from pipelines.pipeline import (
    DEFAULT_CPU_IMAGE,
    DEFAULT_GPU_IMAGE,
    DEFAULT_GPU_TYPE,
    PIPELINE_NAME,
    build_pipeline,
)
from pipelines.placement import GPU_NODES

DEFAULT_PACKAGE = "transfer-learning.pipeline.yaml"
DEFAULT_HOST = "http://localhost:8080"


def _add_images(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu-image", default=DEFAULT_CPU_IMAGE, help="image of CPU steps")
    parser.add_argument("--gpu-image", default=DEFAULT_GPU_IMAGE, help="image of train_transfer")
    parser.add_argument(
        "--gpu-type",
        choices=sorted(GPU_NODES),
        default=DEFAULT_GPU_TYPE,
        help="accelerator train_transfer's requests and limits are sized for (its node's "
        "allocatable); also the default of the gpu_type run parameter",
    )


def _add_cluster_checks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-placeholders",
        action="store_true",
        help="accept the example images (my-project, :latest) and the example store",
    )


def _add_parameters(parser: argparse.ArgumentParser, profile: str, store: str | None) -> None:
    parser.add_argument(
        "--profile", choices=sorted(profiles.PROFILES), default=profile, help="parameter defaults"
    )
    parser.add_argument("--store", default=store, help="gs://bucket/prefix or a local folder")
    parser.add_argument(
        "--source", default=None, help="data source (see data prep); auto; never credentials"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="weights URL, gs:// URI or path; default; none; never credentials in it",
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs of both trainings")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any pipeline parameter (repeatable), e.g. --param transfer_input_size=150",
    )


def _add_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help="KFP endpoint URL")
    parser.add_argument("--namespace", default=None, help="KFP namespace (multi-user installs)")
    parser.add_argument("--experiment", default=PIPELINE_NAME, help="experiment name")
    auth = parser.add_argument_group("authentication (kfp.Client's options; use one)")
    auth.add_argument("--client-id", default=None, help="OAuth client ID of the IAP before KFP")
    auth.add_argument("--other-client-id", default=None, help="desktop OAuth client ID (IAP login)")
    auth.add_argument("--other-client-secret", default=None, help="its secret (IAP login)")
    auth.add_argument(
        "--existing-token",
        default=None,
        help=f"a bearer token made elsewhere (default: ${remote.EXISTING_TOKEN_ENV})",
    )
    auth.add_argument(
        "--sa-token-path",
        default=None,
        help="a service-account token file in a pod (multi-user KFP, audience "
        "pipelines.kubeflow.org), e.g. /var/run/secrets/kubeflow/pipelines/token",
    )
    auth.add_argument("--cookies", default=None, help="session cookie: authservice_session=…")


def _auth(args: argparse.Namespace) -> remote.Auth:
    return remote.Auth(
        client_id=args.client_id,
        other_client_id=args.other_client_id,
        other_client_secret=args.other_client_secret,
        existing_token=args.existing_token or os.environ.get(remote.EXISTING_TOKEN_ENV) or None,
        sa_token_path=args.sa_token_path,
        cookies=args.cookies,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description=f"The {PIPELINE_NAME!r} KFP pipeline: compile, run locally, submit, schedule.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    compile_ = commands.add_parser("compile", help="write the IR YAML to upload in the KFP UI")
    compile_.add_argument("--output", default=DEFAULT_PACKAGE, help="YAML file to write")
    _add_images(compile_)
    _add_cluster_checks(compile_)
    _add_parameters(compile_, profile="full", store=None)

    run = commands.add_parser("run", help="run the whole pipeline here with kfp.local")
    run.add_argument("--docker", action="store_true", help="DockerRunner on the project images")
    run.add_argument("--pipeline-root", default=None, help="task outputs (default: <store>/...)")
    run.add_argument(
        "--retries",
        action="store_true",
        help="keep the cluster's retry policies (kfp.local waits out their real backoff)",
    )
    _add_images(run)
    _add_parameters(run, profile="quick", store="store")

    for name, help_text in (
        ("submit", "upload the pipeline (or a new version) and start a run"),
        ("schedule", "upload the pipeline and create a recurring run"),
    ):
        sub = commands.add_parser(name, help=help_text)
        _add_endpoint(sub)
        sub.add_argument("--pipeline-name", default=PIPELINE_NAME, help="pipeline name in KFP")
        sub.add_argument("--package", default=None, help="a compiled YAML (default: compile)")
        sub.add_argument("--run-name", default=None, help="run / recurring run name")
        sub.add_argument(
            "--service-account",
            default=remote.DEFAULT_SERVICE_ACCOUNT,
            help="Kubernetes service account the run's pods use ('' = KFP's default runner)",
        )
        _add_images(sub)
        _add_cluster_checks(sub)
        _add_parameters(sub, profile="full", store=None)
        if name == "schedule":
            sub.add_argument("--cron", required=True, help="e.g. '0 3 * * 1' (5 or 6 fields)")

    runs = commands.add_parser("runs", help="list recent runs and their state")
    _add_endpoint(runs)
    runs.add_argument("--all", action="store_true", help="all experiments, not just --experiment")
    runs.add_argument("--limit", type=int, default=10)
    return parser.parse_args(argv)


def arguments_from(args: argparse.Namespace, pipeline_func) -> dict[str, Any]:
    """Pipeline arguments: the profile, then the shortcut flags, then each --param."""
    shortcuts: dict[str, Any] = {
        "store": _absolute_store(args.store),
        "source": args.source,
        "weights_url": args.weights,
        "cnn_epochs": args.epochs,
        "transfer_epochs": args.epochs,
    }
    shortcuts.update(profiles.parse_params(args.param, pipeline_func))
    return profiles.resolve_arguments(pipeline_func, args.profile, shortcuts)


def _absolute_store(store: str | None) -> str | None:
    if store is None or store.startswith("gs://"):
        return store
    return str(Path(store).resolve())


# The example project of a fresh checkout, and the tag overlays carry until `make pin`.
PLACEHOLDERS = ("my-project", "-unpinned")


def check_placeholders(
    args: argparse.Namespace, arguments: dict[str, Any], images: bool = True
) -> None:
    """Refuse the example images and store of a fresh checkout, unless --allow-placeholders.

    `images` False: the images are not compiled here (submit --package), only the store counts.
    """
    if args.allow_placeholders:
        return
    from pipelines.pipeline import DEFAULT_STORE

    problems = []
    checked = (("--cpu-image", args.cpu_image), ("--gpu-image", args.gpu_image)) if images else ()
    for flag, image in checked:
        last = image.rsplit("/", 1)[-1]
        if any(marker in image for marker in PLACEHOLDERS) or last.endswith(":latest"):
            problems.append(f"{flag} {image} is a placeholder")
        elif ":" not in last and "@" not in last:
            problems.append(f"{flag} {image} has no tag or digest")
    package = getattr(args, "package", None)
    store = arguments.get("store") or _package_store(package) or DEFAULT_STORE
    if any(marker in store for marker in PLACEHOLDERS):
        problems.append(f"store {store} is a placeholder (pass --store gs://BUCKET/prefix)")
    if problems:
        raise ConfigError(
            "; ".join(problems) + " (make push prints the images; --allow-placeholders to accept)"
        )


def _package_store(package: str | None) -> str | None:
    """The store a compiled package has as its default, if any."""
    if not package:
        return None
    import yaml

    with open(package) as handle:
        spec = next(yaml.safe_load_all(handle))
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return parameters.get("store", {}).get("defaultValue")


def _compile(pipeline_func, output: str, defaults: dict[str, Any]) -> str:
    from kfp import compiler

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func, output, pipeline_parameters=defaults or None)
    return output


def _command(args: argparse.Namespace) -> None:
    pipeline_func = None
    if "cpu_image" in args:
        retries = args.command != "run" or args.retries
        pipeline_func = build_pipeline(
            args.cpu_image,
            args.gpu_image,
            retries=retries,
            gpu_type=args.gpu_type,
        )
    if args.command == "compile":
        arguments = arguments_from(args, pipeline_func)
        check_placeholders(args, arguments)
        path = _compile(pipeline_func, args.output, arguments)
        print(f"Compiled {PIPELINE_NAME!r} to {path} (upload it in the KFP UI: Pipelines > Upload)")
    elif args.command == "run":
        from pipelines.local import default_pipeline_root, run_local

        arguments = arguments_from(args, pipeline_func)
        root = args.pipeline_root or default_pipeline_root(arguments["store"])
        outputs = run_local(
            pipeline_func,
            arguments,
            pipeline_root=root,
            docker=args.docker,
            images=(args.cpu_image, args.gpu_image),
        )
        print(f"\nPipeline {PIPELINE_NAME!r} succeeded.\n{outputs.describe()}")
    elif args.command in ("submit", "schedule"):
        _remote(args, pipeline_func)
    elif args.command == "runs":
        client = remote.make_client(args.host, args.namespace, _auth(args))
        experiment = None if args.all else args.experiment
        print(remote.format_runs(remote.list_runs(client, experiment=experiment, limit=args.limit)))


def _remote(args: argparse.Namespace, pipeline_func) -> None:
    import tempfile

    params = arguments_from(args, pipeline_func)
    check_placeholders(args, params, images=not args.package)
    client = remote.make_client(args.host, args.namespace, _auth(args))
    with tempfile.TemporaryDirectory(prefix="pipeline-") as work:
        package = args.package or _compile(pipeline_func, f"{work}/pipeline.yaml", {})
        uploaded = remote.upload(client, package, args.pipeline_name)
    action = "created pipeline" if uploaded.created_pipeline else "added version"
    print(f"{action} {args.pipeline_name!r}: version {uploaded.version_name}")
    name = args.run_name or uploaded.version_name
    if args.command == "submit":
        run_id = remote.submit(
            client,
            uploaded,
            experiment=args.experiment,
            run_name=name,
            params=params,
            service_account=args.service_account,
        )
        print(f"Run {run_id} started: {remote.run_url(args.host, run_id)}")
    else:
        recurring_id = remote.schedule(
            client,
            uploaded,
            experiment=args.experiment,
            name=name,
            cron=args.cron,
            params=params,
            service_account=args.service_account,
        )
        print(
            f"Recurring run {recurring_id} created: cron {remote.kfp_cron(args.cron)!r}, "
            "max concurrency 1, no catch-up"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point: known failures print one `error:` line and exit 1."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from pipelines.local import PipelineFailedError

    args = parse_args(argv)
    try:
        _command(args)
    except (ConfigError, FileNotFoundError, PipelineFailedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ApiException as error:
        print(f"error: KFP API at {args.host}: {error.status} {error.reason}", file=sys.stderr)
        return 1
    except HTTPError as error:
        print(f"error: cannot reach KFP at {args.host}: {error}", file=sys.stderr)
        return 1
    return 0

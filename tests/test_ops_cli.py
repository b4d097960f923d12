"""`geoloc ops status|scale|wait` against a stand-in Kubernetes API server.

No Kubernetes API server can run on these machines, so these tests serve the API paths and
JSON shapes that the CLI uses (from the Kubernetes API reference: apps/v1 Deployment and Scale,
core/v1 Pod, autoscaling/v2 HorizontalPodAutoscaler, meta/v1 Status) from a loopback HTTP
server, and point the official kubernetes client at it with a kubeconfig written to tmp_path.
What they show: the client is configured and authenticated from that kubeconfig, the requests
are the right ones, and the CLI turns the answers into the right output and exit codes. What
they cannot show: a real API server's behaviour (admission, RBAC, the controllers).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from geoloc.cli import main

TOKEN = "stand-in-token"
NAMESPACE = "geoloc"
IMAGE = "registry.example.com/geoloc/geoloc:0.1.0"
TWO_DAYS_AGO = (datetime.now(UTC) - timedelta(days=2, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment(
    name: str,
    replicas: int,
    ready: int | None = None,
    updated: int | None = None,
    available: int | None = None,
    image: str = IMAGE,
    generation: int = 1,
    observed: int = 1,
    conditions: list[dict] | None = None,
) -> dict:
    """An apps/v1 Deployment as the API server returns it, selecting app.kubernetes.io/name=name."""
    ready = replicas if ready is None else ready
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "geoloc"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "generation": generation,
            "uid": f"uid-{name}",
            "resourceVersion": "100",
            "creationTimestamp": TWO_DAYS_AGO,
            "labels": labels,
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": image}]}},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
            "readyReplicas": ready,
            "availableReplicas": ready if available is None else available,
            "conditions": conditions
            or [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        },
    }


def pod(name: str, app: str, phase: str = "Running", ready: bool = True, restarts: int = 0) -> dict:
    """A core/v1 Pod with one container, its Ready condition and restart count."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "creationTimestamp": TWO_DAYS_AGO,
            "labels": {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "geoloc"},
        },
        "spec": {"containers": [{"name": app, "image": IMAGE}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {"name": app, "image": IMAGE, "imageID": "sha256:0", "ready": ready, "restartCount": restarts}
            ],
        },
    }


def autoscaler(name: str, low: int, high: int) -> dict:
    """An autoscaling/v2 HorizontalPodAutoscaler targeting the Deployment `name`."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
        },
        "status": {"currentReplicas": low, "desiredReplicas": low},
    }


def status_object(code: int, reason: str, message: str) -> dict:
    """A meta/v1 Status, the body of every API error."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class StandInApiServer:
    """Serves the Kubernetes API paths geoloc ops uses, from dicts the test controls.

    `requests` records (method, path, headers with lower-case names, body) of every call. `on_list_deployments` runs
    before each Deployment list is answered, so a test can move a rollout along. `fail` maps a
    path to an HTTP status to answer with instead.
    """

    def __init__(self, deployments: list[dict], pods: list[dict] = (), autoscalers: list[dict] = ()):
        self.deployments = {d["metadata"]["name"]: d for d in deployments}
        self.pods = list(pods)
        self.autoscalers = list(autoscalers)
        self.requests: list[tuple[str, str, dict, object]] = []
        self.on_list_deployments: Callable[[StandInApiServer], None] | None = None
        self.fail: dict[str, int] = {}
        self.lock = threading.Lock()

    def answer(self, method: str, path: str, headers: dict, body: object) -> tuple[int, dict]:
        with self.lock:
            self.requests.append((method, path, headers, body))
            if headers.get("authorization") != f"Bearer {TOKEN}":
                return 401, status_object(401, "Unauthorized", "Unauthorized")
            if path in self.fail:
                code = self.fail[path]
                return code, status_object(code, "Forbidden", f"forbidden: {path}")
            apps = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
            if method == "GET" and path == apps:
                if self.on_list_deployments is not None:
                    self.on_list_deployments(self)
                return 200, {
                    "apiVersion": "apps/v1",
                    "kind": "DeploymentList",
                    "metadata": {"resourceVersion": "100"},
                    "items": [copy.deepcopy(d) for d in self.deployments.values()],
                }
            if path.startswith(apps + "/"):
                name, _, sub = path[len(apps) + 1 :].partition("/")
                if name not in self.deployments:
                    return 404, status_object(404, "NotFound", f'deployments.apps "{name}" not found')
                found = self.deployments[name]
                if method == "GET" and not sub:
                    return 200, copy.deepcopy(found)
                if method == "PATCH" and sub == "scale":
                    found["spec"]["replicas"] = body["spec"]["replicas"]
                    found["metadata"]["generation"] += 1
                    return 200, {
                        "apiVersion": "autoscaling/v1",
                        "kind": "Scale",
                        "metadata": {"name": name, "namespace": NAMESPACE},
                        "spec": {"replicas": found["spec"]["replicas"]},
                        "status": {
                            "replicas": found["status"]["replicas"],
                            "selector": f"app.kubernetes.io/name={name}",
                        },
                    }
            if method == "GET" and path == f"/api/v1/namespaces/{NAMESPACE}/pods":
                return 200, {
                    "apiVersion": "v1",
                    "kind": "PodList",
                    "metadata": {"resourceVersion": "100"},
                    "items": copy.deepcopy(self.pods),
                }
            if method == "GET" and path == f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers":
                return 200, {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscalerList",
                    "metadata": {"resourceVersion": "100"},
                    "items": copy.deepcopy(self.autoscalers),
                }
            return 404, status_object(404, "NotFound", f"the server could not find the requested resource: {path}")

    def paths(self, method: str | None = None) -> list[str]:
        return [path for m, path, _, _ in self.requests if method in (None, m)]


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[StandInApiServer, Path]]]:
    """Starts a StandInApiServer on loopback port 0; returns it and a kubeconfig pointing at it."""
    started: list[ThreadingHTTPServer] = []

    def start(*args, **kwargs) -> tuple[StandInApiServer, Path]:
        api = StandInApiServer(*args, **kwargs)

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                # Header names are case-insensitive; the client sends some in lower case.
                headers = {name.lower(): value for name, value in self.headers.items()}
                code, answer = api.answer(self.command, self.path.split("?")[0], headers, body)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = _handle

            def log_message(self, *args) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(httpd)
        kubeconfig = tmp_path / f"kubeconfig-{len(started)}"
        kubeconfig.write_text(kubeconfig_text(f"http://127.0.0.1:{httpd.server_port}"))
        return api, kubeconfig

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def kubeconfig_text(server: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": server}}],
            "users": [{"name": "stand-in", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in", "namespace": NAMESPACE}}
            ],
            "current-context": "stand-in",
        }
    )


def all_rolled_out() -> list[dict]:
    names = ("orchestrator", "embedding", "gallery", "sampler", "tokens", "text", "triton")
    return [deployment(name, 2) for name in names]


def table_rows(output: str) -> dict[str, list[str]]:
    """The status table's rows by service; cells split on runs of spaces (no cell has two)."""
    lines = output.strip().splitlines()
    assert lines[0] == f"namespace {NAMESPACE}"
    assert lines[1].split() == [
        "SERVICE",
        "DESIRED",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "PODS-READY",
        "PHASES",
        "RESTARTS",
        "AGE",
        "IMAGE",
    ]
    return {line.split()[0]: line.split() for line in lines[2:]}


def test_status_reports_replicas_pods_restarts_age_and_image(serve, capsys) -> None:
    """Against the stand-in server: two list calls, authenticated with the kubeconfig's token."""
    api, kubeconfig = serve(
        deployments=[
            deployment("orchestrator", 2),
            deployment("gallery", 2, ready=1, available=1),
            deployment("triton", 1, image="registry.example.com/geoloc/geoloc-triton:0.1.0"),
        ],
        pods=[
            pod("orchestrator-a", "orchestrator"),
            pod("orchestrator-b", "orchestrator", restarts=1),
            pod("gallery-a", "gallery", restarts=2),
            pod("gallery-b", "gallery", phase="Pending", ready=False, restarts=1),
            pod("triton-a", "triton"),
            pod("stray", "something-else", restarts=9),  # selected by no Deployment: counted nowhere
        ],
    )
    assert main(["ops", "status", "--kubeconfig", str(kubeconfig)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["orchestrator", "embedding", "gallery", "sampler", "tokens", "text", "triton"]
    assert rows["orchestrator"] == ["orchestrator", "2", "2", "2", "2", "2/2", "Running=2", "1", "2d", IMAGE]
    assert rows["gallery"] == ["gallery", "2", "1", "2", "1", "1/2", "Pending=1,Running=1", "3", "2d", IMAGE]
    assert rows["triton"][-1] == "registry.example.com/geoloc/geoloc-triton:0.1.0"
    assert rows["embedding"][1:] == ["-", "-", "-", "-", "-", "not", "deployed", "-", "-", "-"]
    assert sorted(api.paths()) == [
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
    ]
    assert all(headers["authorization"] == f"Bearer {TOKEN}" for _, _, headers, _ in api.requests)


def test_status_as_json(serve, capsys) -> None:
    """Against the stand-in server: the same facts, for machines."""
    _, kubeconfig = serve(
        deployments=[deployment("sampler", 3, ready=2, updated=1)], pods=[pod("sampler-a", "sampler", restarts=4)]
    )
    assert main(["ops", "status", "-o", "json", "--kubeconfig", str(kubeconfig)]) == 0
    by_name = {s["service"]: s for s in json.loads(capsys.readouterr().out)}
    assert by_name["sampler"]["desired"] == 3 and by_name["sampler"]["ready"] == 2
    assert by_name["sampler"]["restarts"] == 4 and by_name["sampler"]["pod_phases"] == {"Running": 1}
    assert by_name["sampler"]["rolled_out"] is False
    assert by_name["tokens"]["deployed"] is False and by_name["text"]["deployed"] is False


def test_scale_sends_a_merge_patch_to_the_scale_subresource(serve, capsys) -> None:
    """Against the stand-in server: the PATCH body, path and content type are what the API expects."""
    api, kubeconfig = serve(deployments=[deployment("gallery", 2)], autoscalers=[autoscaler("gallery", 2, 6)])
    assert main(["ops", "scale", "gallery", "4", "--kubeconfig", str(kubeconfig)]) == 0
    patches = [(path, headers, body) for method, path, headers, body in api.requests if method == "PATCH"]
    assert len(patches) == 1
    path, headers, body = patches[0]
    assert path == f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/gallery/scale"
    assert headers["content-type"] == "application/merge-patch+json"
    assert body == {"spec": {"replicas": 4}}
    assert api.deployments["gallery"]["spec"]["replicas"] == 4
    out, err = capsys.readouterr()
    assert out.strip() == "gallery: replicas 2 -> 4"
    assert "(min 2, max 6)" in err and "it will keep this count" in err


def test_scale_outside_the_autoscaler_bounds_warns_that_it_will_not_last(serve, capsys) -> None:
    """Against the stand-in server: the HPA's bounds are read and reported."""
    _, kubeconfig = serve(deployments=[deployment("tokens", 2)], autoscalers=[autoscaler("tokens", 2, 8)])
    assert main(["ops", "scale", "tokens", "12", "--kubeconfig", str(kubeconfig)]) == 0
    assert "move the count back into [2, 8]" in capsys.readouterr().err


def test_scale_of_a_service_that_is_not_deployed_fails_with_exit_1(serve, capsys) -> None:
    """Against the stand-in server: a 404 on the Deployment becomes one clear line, and no PATCH."""
    api, kubeconfig = serve(deployments=[deployment("gallery", 2)])
    assert main(["ops", "scale", "tokens", "3", "--kubeconfig", str(kubeconfig)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"geoloc ops scale: error: no Deployment named tokens in namespace {NAMESPACE}"
    )
    assert api.paths("PATCH") == []


def test_a_bad_service_name_is_refused_with_exit_2_before_any_request(serve) -> None:
    """A real `geoloc` process against the stand-in server, which must see no request."""
    api, kubeconfig = serve(deployments=all_rolled_out())
    done = subprocess.run(
        [sys.executable, "-m", "geoloc.cli", "ops", "scale", "galery", "3", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert (
        "unknown service 'galery' (one of: orchestrator, embedding, gallery, sampler, tokens, text, triton)"
        in done.stderr
    )
    assert api.requests == []


def test_wait_returns_once_every_deployment_has_rolled_out(serve, capsys) -> None:
    """Against the stand-in server: the gallery's rollout finishes on the third poll."""
    deployments = all_rolled_out()
    deployments[2] = deployment("gallery", 2, updated=1, ready=1, generation=2, observed=2)
    api, kubeconfig = serve(deployments=deployments)
    polls = []

    def progress(server: StandInApiServer) -> None:
        polls.append(1)
        if len(polls) == 3:
            server.deployments["gallery"] = deployment("gallery", 2, generation=2, observed=2)

    api.on_list_deployments = progress
    assert main(["ops", "wait", "--timeout", "30", "--interval", "0.05", "--kubeconfig", str(kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert len(polls) == 3
    assert "gallery: 1/2 updated, 1 available" in out and "gallery: rolled out" in out
    assert out.strip().endswith(f"all 7 Deployments rolled out in namespace {NAMESPACE}")


def test_wait_counts_a_deployment_whose_new_generation_is_unobserved_as_not_rolled_out(serve, capsys) -> None:
    """Against the stand-in server: status from an older generation does not count."""
    _, kubeconfig = serve(deployments=[deployment("sampler", 2, generation=3, observed=2)])
    assert (
        main(["ops", "wait", "sampler", "--timeout", "0.3", "--interval", "0.1", "--kubeconfig", str(kubeconfig)]) == 1
    )
    assert "not rolled out after 0.3 s" in capsys.readouterr().err


def test_wait_times_out_with_exit_1_naming_what_is_not_rolled_out(serve, capsys) -> None:
    """Against the stand-in server: a stuck rollout and a missing Deployment, after the timeout."""
    deployments = [d for d in all_rolled_out() if d["metadata"]["name"] != "tokens"]
    deployments[2] = deployment("gallery", 2, updated=1, ready=1)
    _, kubeconfig = serve(deployments=deployments)
    started = time.monotonic()
    assert main(["ops", "wait", "--timeout", "1", "--interval", "0.2", "--kubeconfig", str(kubeconfig)]) == 1
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 5.0
    err = capsys.readouterr().err.strip()
    assert err == (
        "geoloc ops wait: error: not rolled out after 1 s: gallery: 1/2 updated, 1 available; tokens: no Deployment"
    )


def test_wait_fails_at_once_when_a_rollout_exceeded_its_progress_deadline(serve, capsys) -> None:
    """Against the stand-in server: ProgressDeadlineExceeded will not clear by itself."""
    stuck = deployment(
        "triton",
        2,
        updated=1,
        ready=1,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "triton-5d8" has timed out progressing.',
            }
        ],
    )
    _, kubeconfig = serve(deployments=[stuck])
    started = time.monotonic()
    assert main(["ops", "wait", "triton", "--timeout", "60", "--kubeconfig", str(kubeconfig)]) == 1
    assert time.monotonic() - started < 10
    assert 'triton: ReplicaSet "triton-5d8" has timed out progressing.' in capsys.readouterr().err


def test_an_api_error_is_one_line_with_exit_1(serve, capsys) -> None:
    """Against the stand-in server: a 403 on the pods list (RBAC, on a real cluster)."""
    api, kubeconfig = serve(deployments=all_rolled_out())
    api.fail[f"/api/v1/namespaces/{NAMESPACE}/pods"] = 403
    assert main(["ops", "status", "--kubeconfig", str(kubeconfig)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"geoloc ops status: error: listing pods in {NAMESPACE}: the API server answered 403 Forbidden"
    )


def test_an_unreachable_api_server_is_one_line_with_exit_1(tmp_path, capsys) -> None:
    """No server at all: a kubeconfig naming a loopback port nothing listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(f"http://127.0.0.1:{port}"))
    assert main(["ops", "status", "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"geoloc ops status: error: listing Deployments in {NAMESPACE}: ") and "\n" not in err


def test_outside_a_cluster_the_client_falls_back_to_the_kubeconfig(serve, monkeypatch) -> None:
    """Against the stand-in server: KUBERNETES_SERVICE_HOST is set as in a pod, but there is no
    service-account token, so in-cluster configuration fails and $KUBECONFIG is used."""
    from kubernetes.config.incluster_config import SERVICE_TOKEN_FILENAME

    from geoloc.ops.cluster import collect_status, connect

    if Path(SERVICE_TOKEN_FILENAME).exists():
        pytest.skip("this machine runs in a Kubernetes pod: in-cluster configuration would win")
    api, kubeconfig = serve(deployments=all_rolled_out())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    cluster = connect()
    assert cluster.source == "kubeconfig"
    assert [s.rolled_out for s in collect_status(cluster, NAMESPACE)] == [True] * 7
    assert api.requests, "the calls went to the kubeconfig's server"

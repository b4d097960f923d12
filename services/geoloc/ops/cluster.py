"""The geoloc Deployments as the Kubernetes API sees them, through the official Python client.

    api = connect(kubeconfig=None, context=None)      # in-cluster config, else kubeconfig
    statuses = collect_status(api, "geoloc")          # one ServiceStatus per service
    scale(api, "geoloc", "gallery", 4)                # the Deployment's scale subresource
    wait_for_rollout(api, "geoloc", timeout_s=300)    # every Deployment rolled out, or raises

The seven workloads are the Deployments of k8s/base, named as the services are. The calls used
are apps/v1 deployments (list, get, and a merge patch of the scale subresource), the core/v1
pods list and the autoscaling/v2 HorizontalPodAutoscalers list; tests/test_ops_cli.py serves
exactly these paths.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from geoloc.experts import WORKLOADS
from geoloc.ops import DEFAULT_NAMESPACE

__all__ = [
    "DEFAULT_NAMESPACE",
    "WORKLOADS",
    "Api",
    "OpsError",
    "ServiceStatus",
    "collect_status",
    "connect",
    "scale",
    "wait_for_rollout",
]


class OpsError(RuntimeError):
    """The cluster could not be reached or answered with an error; the message says which."""


@dataclass(frozen=True)
class Api:
    """The API groups used here, over one configured ApiClient."""

    apps: client.AppsV1Api
    core: client.CoreV1Api
    autoscaling: client.AutoscalingV2Api
    source: str  # "in-cluster" or "kubeconfig"


def connect(kubeconfig: str | None = None, context: str | None = None) -> Api:
    """An API client: the pod's service account when running in a cluster, else a kubeconfig.

    Naming a kubeconfig or a context skips the in-cluster attempt. The kubeconfig is the named
    file, else $KUBECONFIG, else ~/.kube/config (the client's own rules). Raises OpsError when
    neither configuration can be loaded.
    """
    configuration = client.Configuration()
    source = "kubeconfig"
    try:
        if kubeconfig is None and context is None:
            try:
                config.load_incluster_config(client_configuration=configuration)
                source = "in-cluster"
            except ConfigException:
                config.load_kube_config(client_configuration=configuration, persist_config=False)
        else:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
            )
    except (ConfigException, OSError) as exc:
        raise OpsError(f"no cluster configuration: not running in a pod, and no usable kubeconfig ({exc})") from None
    api_client = client.ApiClient(configuration)
    return Api(client.AppsV1Api(api_client), client.CoreV1Api(api_client), client.AutoscalingV2Api(api_client), source)


def _call(what: str, function: Callable, *args, **kwargs):
    """Runs one API call; turns the client's errors into an OpsError naming the call."""
    try:
        return function(*args, **kwargs)
    except client.ApiException as exc:
        raise OpsError(f"{what}: the API server answered {exc.status} {exc.reason}".rstrip()) from None
    except Exception as exc:  # urllib3's connection errors, chiefly: the server is unreachable
        raise OpsError(f"{what}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class ServiceStatus:
    """One service's Deployment and pods. `deployed` is False when no Deployment has its name."""

    name: str
    deployed: bool
    desired: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0
    pod_phases: dict[str, int] = field(default_factory=dict)
    pods_ready: int = 0  # pods whose Ready condition is True
    pods: int = 0
    restarts: int = 0
    created: datetime | None = None
    images: tuple[str, ...] = ()
    rolled_out: bool = False
    failure: str | None = None  # why the rollout cannot finish (ProgressDeadlineExceeded)


def _selects(match_labels: dict[str, str], labels: dict[str, str] | None) -> bool:
    return bool(match_labels) and all((labels or {}).get(k) == v for k, v in match_labels.items())


def _rollout(deployment) -> tuple[bool, str | None]:
    """Rolled out as `kubectl rollout status` decides it; and why it never will, if it won't."""
    spec, status, meta = deployment.spec, deployment.status, deployment.metadata
    for condition in (status and status.conditions) or ():
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return False, condition.message or "progress deadline exceeded"
    if status is None or (status.observed_generation or 0) < (meta.generation or 0):
        return False, None
    desired = spec.replicas if spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    return (
        updated >= desired and (status.replicas or 0) <= updated and (status.available_replicas or 0) >= updated
    ), None


def service_status(name: str, deployment, pods: Sequence) -> ServiceStatus:
    """The status of one service from its Deployment (or None) and the namespace's pods."""
    if deployment is None:
        return ServiceStatus(name=name, deployed=False)
    match_labels = (deployment.spec.selector.match_labels or {}) if deployment.spec.selector else {}
    own = [p for p in pods if _selects(match_labels, p.metadata.labels)]
    phases = Counter((p.status.phase if p.status else None) or "Unknown" for p in own)
    ready = sum(
        any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or ())) for p in own if p.status
    )
    restarts = sum(cs.restart_count for p in own if p.status for cs in (p.status.container_statuses or ()))
    status = deployment.status
    rolled_out, failure = _rollout(deployment)
    return ServiceStatus(
        name=name,
        deployed=True,
        desired=deployment.spec.replicas if deployment.spec.replicas is not None else 1,
        ready=(status and status.ready_replicas) or 0,
        updated=(status and status.updated_replicas) or 0,
        available=(status and status.available_replicas) or 0,
        pod_phases=dict(sorted(phases.items())),
        pods_ready=ready,
        pods=len(own),
        restarts=restarts,
        created=deployment.metadata.creation_timestamp,
        images=tuple(c.image for c in deployment.spec.template.spec.containers),
        rolled_out=rolled_out,
        failure=failure,
    )


def collect_status(api: Api, namespace: str, services: Sequence[str] = WORKLOADS) -> list[ServiceStatus]:
    """One ServiceStatus per service, in the order given, from two list calls."""
    deployments = _call(f"listing Deployments in {namespace}", api.apps.list_namespaced_deployment, namespace)
    pods = _call(f"listing pods in {namespace}", api.core.list_namespaced_pod, namespace)
    by_name = {d.metadata.name: d for d in deployments.items}
    return [service_status(name, by_name.get(name), pods.items) for name in services]


@dataclass(frozen=True)
class ScaleResult:
    """What `scale` did: the count before and after, and the HPA bounds that will win, if any."""

    previous: int | None
    replicas: int
    autoscaler: tuple[int, int] | None  # (min, max) of the HPA that targets the Deployment


def scale(api: Api, namespace: str, service: str, replicas: int) -> ScaleResult:
    """Sets the Deployment's replicas through its scale subresource (a JSON merge patch).

    Raises OpsError if the Deployment does not exist or the server refuses. An HPA that targets
    the Deployment keeps the count within its bounds, so those are returned to be reported.
    """
    if replicas < 0:
        raise ValueError("replicas must be 0 or more")
    try:
        current = api.apps.read_namespaced_deployment(service, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            raise OpsError(f"no Deployment named {service} in namespace {namespace}") from None
        raise OpsError(f"reading Deployment {service}: the API server answered {exc.status} {exc.reason}") from None
    except Exception as exc:
        raise OpsError(f"reading Deployment {service}: {type(exc).__name__}: {exc}") from None
    # Named, not left to the client, which picks a content type from the body's shape.
    _call(
        f"scaling {service}",
        api.apps.patch_namespaced_deployment_scale,
        service,
        namespace,
        {"spec": {"replicas": replicas}},
        _content_type="application/merge-patch+json",
    )
    autoscalers = _call(
        f"listing HorizontalPodAutoscalers in {namespace}",
        api.autoscaling.list_namespaced_horizontal_pod_autoscaler,
        namespace,
    )
    bounds = next(
        (
            (h.spec.min_replicas if h.spec.min_replicas is not None else 1, h.spec.max_replicas)
            for h in autoscalers.items
            if h.spec.scale_target_ref.kind == "Deployment" and h.spec.scale_target_ref.name == service
        ),
        None,
    )
    return ScaleResult(previous=current.spec.replicas, replicas=replicas, autoscaler=bounds)


def wait_for_rollout(
    api: Api,
    namespace: str,
    services: Sequence[str] = WORKLOADS,
    timeout_s: float = 300.0,
    interval_s: float = 2.0,
    on_poll: Callable[[list[ServiceStatus]], None] | None = None,
) -> list[ServiceStatus]:
    """Polls until every named Deployment has rolled out; returns their last statuses.

    Raises OpsError naming what is not rolled out when `timeout_s` passes, or at once when a
    Deployment has exceeded its progress deadline (it will not finish by itself).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = collect_status(api, namespace, services)
        if on_poll is not None:
            on_poll(statuses)
        failed = [s for s in statuses if s.failure]
        if failed:
            raise OpsError("; ".join(f"{s.name}: {s.failure}" for s in failed))
        pending = [s for s in statuses if not s.rolled_out]
        if not pending:
            return statuses
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OpsError(f"not rolled out after {timeout_s:g} s: " + "; ".join(describe_pending(s) for s in pending))
        time.sleep(min(interval_s, remaining))


def describe_pending(status: ServiceStatus) -> str:
    """Why one service is not rolled out, in a few words."""
    if not status.deployed:
        return f"{status.name}: no Deployment"
    return f"{status.name}: {status.updated}/{status.desired} updated, {status.available} available"


def age(created: datetime | None, now: datetime | None = None) -> str:
    """An age as kubectl prints it: 45s, 12m, 5h, 3d."""
    if created is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

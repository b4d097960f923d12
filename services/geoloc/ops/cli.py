"""`geoloc ops status|scale|wait`: the geoloc Deployments on a Kubernetes cluster.

Connects with the pod's service account when run in a cluster, else with a kubeconfig
(--kubeconfig, $KUBECONFIG or ~/.kube/config; --context picks one of its contexts).
Exit codes: 0 done, 1 the cluster failed or timed out, 2 a bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys

from geoloc.common.arguments import positive_seconds
from geoloc.experts import WORKLOADS
from geoloc.ops import DEFAULT_NAMESPACE

EXIT_FAILED = 1


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _service(text: str) -> str:
    # A type rather than `choices`: argparse checks an empty `nargs="*"` list against choices.
    if text not in WORKLOADS:
        raise argparse.ArgumentTypeError(f"unknown service {text!r} (one of: {', '.join(WORKLOADS)})")
    return text


def add_parser(subparsers) -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file (default: in-cluster config, else $KUBECONFIG or ~/.kube/config)",
    )
    connection.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current context)")
    connection.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE, help="(default: %(default)s)")

    parser = subparsers.add_parser(
        "ops",
        help="status, scale and rollout of the Deployments on Kubernetes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    status = actions.add_parser(
        "status", parents=[connection], help="replicas, pods, restarts, age and image per service"
    )
    status.add_argument("-o", "--output", choices=("table", "json"), default="table", help="(default: %(default)s)")
    status.set_defaults(func=run_status)
    scale = actions.add_parser("scale", parents=[connection], help="set one service's replicas")
    scale.add_argument("service", metavar="SERVICE", type=_service, help="one of: " + ", ".join(WORKLOADS))
    scale.add_argument("replicas", metavar="N", type=_non_negative)
    scale.set_defaults(func=run_scale)
    wait = actions.add_parser("wait", parents=[connection], help="wait until every Deployment has rolled out")
    wait.add_argument(
        "services",
        metavar="SERVICE",
        nargs="*",
        type=_service,
        help="only these (default: all of " + ", ".join(WORKLOADS) + ")",
    )
    wait.add_argument(
        "--timeout", type=positive_seconds, default=300.0, metavar="SECONDS", help="(default: %(default)g)"
    )
    wait.add_argument(
        "--interval", type=positive_seconds, default=2.0, metavar="SECONDS", help="(default: %(default)g)"
    )
    wait.set_defaults(func=run_wait)
    return parser


def _fail(action: str, exc: Exception) -> int:
    print(f"geoloc ops {action}: error: {exc}", file=sys.stderr)
    return EXIT_FAILED


def format_status(statuses, namespace: str) -> str:
    """The status table: one row per service, the columns docs/deploy.md explains."""
    from geoloc.ops.cluster import age

    header = (
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
    )
    rows = [header]
    for s in statuses:
        if not s.deployed:
            rows.append((s.name, "-", "-", "-", "-", "-", "not deployed", "-", "-", "-"))
            continue
        phases = ",".join(f"{phase}={n}" for phase, n in s.pod_phases.items()) or "-"
        rows.append(
            (
                s.name,
                str(s.desired),
                str(s.ready),
                str(s.updated),
                str(s.available),
                f"{s.pods_ready}/{s.pods}",
                phases,
                str(s.restarts),
                age(s.created),
                ",".join(s.images),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [f"namespace {namespace}"]
    lines += ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]
    return "\n".join(lines)


def _as_json(statuses) -> str:
    return json.dumps(
        [
            {
                "service": s.name,
                "deployed": s.deployed,
                "desired": s.desired,
                "ready": s.ready,
                "updated": s.updated,
                "available": s.available,
                "pods": s.pods,
                "pods_ready": s.pods_ready,
                "pod_phases": s.pod_phases,
                "restarts": s.restarts,
                "created": s.created.isoformat() if s.created else None,
                "images": list(s.images),
                "rolled_out": s.rolled_out,
            }
            for s in statuses
        ],
        indent=2,
    )


def run_status(args: argparse.Namespace) -> int:
    from geoloc.ops.cluster import OpsError, collect_status, connect

    try:
        statuses = collect_status(connect(args.kubeconfig, args.context), args.namespace)
    except OpsError as exc:
        return _fail("status", exc)
    print(_as_json(statuses) if args.output == "json" else format_status(statuses, args.namespace))
    return 0


def run_scale(args: argparse.Namespace) -> int:
    from geoloc.ops.cluster import OpsError, connect, scale

    try:
        result = scale(connect(args.kubeconfig, args.context), args.namespace, args.service, args.replicas)
    except OpsError as exc:
        return _fail("scale", exc)
    print(f"{args.service}: replicas {result.previous} -> {result.replicas}")
    if result.autoscaler is not None:
        low, high = result.autoscaler
        # The HPA rewrites the count on its next sync: say so rather than let it look like a bug.
        note = (
            "it will keep this count"
            if low <= result.replicas <= high
            else f"it will move the count back into [{low}, {high}] within a minute"
        )
        print(
            f"warning: HorizontalPodAutoscaler {args.service} (min {low}, max {high}) manages {args.service}: "
            f"{note}; change its bounds to scale for good (docs/deploy.md)",
            file=sys.stderr,
        )
    return 0


def run_wait(args: argparse.Namespace) -> int:
    from geoloc.ops.cluster import OpsError, connect, describe_pending, wait_for_rollout

    services = tuple(args.services) or WORKLOADS
    seen: dict[str, str] = {}

    def report(statuses) -> None:  # one line per service whose progress changed
        for s in statuses:
            line = f"{s.name}: rolled out" if s.rolled_out else describe_pending(s)
            if seen.get(s.name) != line:
                seen[s.name] = line
                print(line, flush=True)

    try:
        wait_for_rollout(
            connect(args.kubeconfig, args.context),
            args.namespace,
            services,
            timeout_s=args.timeout,
            interval_s=args.interval,
            on_poll=report,
        )
    except OpsError as exc:
        return _fail("wait", exc)
    print(f"all {len(services)} Deployments rolled out in namespace {args.namespace}")
    return 0

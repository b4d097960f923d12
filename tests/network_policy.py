"""Which connections a set of rendered NetworkPolicies allows: the rules of the Kubernetes API
reference (networking.k8s.io/v1), for the features k8s/ uses, so that a test can derive the call
graph from the manifests instead of trusting them.

A connection from pod A to port P of pod B is allowed when both ends allow it: A's egress (if any
policy selecting A has policy type Egress, one of their egress rules must match B and P) and B's
ingress (likewise). A feature this module does not implement (ipBlock, endPort, an unknown
selector operator) fails loudly rather than being misread.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pod:
    """A pod as policies see it: its namespace, labels and named container ports."""

    name: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (number, protocol)


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions; an empty selector selects everything."""
    selector = selector or {}
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    assert not unknown, f"unsupported selector fields {unknown}"
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or ():
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In":
            ok = labels.get(key) in values
        elif operator == "NotIn":
            ok = labels.get(key) not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise AssertionError(f"unsupported selector operator {operator}")
        if not ok:
            return False
    return True


def policy_types(policy: dict) -> set[str]:
    """The declared types; by default Ingress, plus Egress when the policy has egress rules."""
    spec = policy["spec"]
    if "policyTypes" in spec:
        return set(spec["policyTypes"])
    return {"Ingress", *(["Egress"] if spec.get("egress") else [])}


def _peer_matches(peer: dict, pod: Pod, policy_namespace: str, namespace_labels: dict[str, dict[str, str]]) -> bool:
    assert "ipBlock" not in peer, "ipBlock peers are not modelled"
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], namespace_labels[pod.namespace])
    else:
        in_namespace = pod.namespace == policy_namespace
    return in_namespace and ("podSelector" not in peer or selects(peer["podSelector"], pod.labels))


def _port_matches(rule_ports: list[dict] | None, destination: Pod, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        assert "endPort" not in rule_port, "port ranges are not modelled"
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        wanted = rule_port.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):  # a named port resolves against the destination pod
            if destination.ports.get(wanted) == (port, protocol):
                return True
        elif wanted == port:
            return True
    return False


def _side_allows(
    policies: list[dict],
    direction: str,
    subject: Pod,
    peer: Pod,
    destination: Pod,
    port: int,
    protocol: str,
    namespace_labels: dict[str, dict[str, str]],
) -> bool:
    applicable = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and selects(p["spec"].get("podSelector"), subject.labels)
        and direction in policy_types(p)
    ]
    if not applicable:
        return True  # not isolated in this direction
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in applicable:
        for rule in policy["spec"].get(rules_key) or ():
            peers = rule.get(peers_key)
            if peers and not any(
                _peer_matches(x, peer, policy["metadata"]["namespace"], namespace_labels) for x in peers
            ):
                continue
            if _port_matches(rule.get("ports"), destination, port, protocol):
                return True
    return False


def allows(
    policies: list[dict],
    source: Pod,
    destination: Pod,
    port: int,
    protocol: str,
    namespace_labels: dict[str, dict[str, str]],
) -> bool:
    """Whether `source` may open a connection to `destination` on `port`/`protocol`."""
    return _side_allows(
        policies, "Egress", source, destination, destination, port, protocol, namespace_labels
    ) and _side_allows(policies, "Ingress", destination, source, destination, port, protocol, namespace_labels)

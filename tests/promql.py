"""The metric names that the dashboard's and the alerts' PromQL select, read with promql-parser
(Prometheus' own grammar).

The offline tests hold those names to what the exporters are known to serve, and the live test
(tests/test_observability.py) to what a running suite's /metrics serves, so that a misspelt
series fails a test instead of drawing an empty panel or an alert that never fires. Grafana's
range variables (`[$__rate_interval]`) are given a duration before parsing; its other variables
stand inside label values, where PromQL takes any string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import promql_parser
import yaml

# The series only a cluster's kube-state-metrics serves (kube_deployment_*, kube_pod_*, ...):
# no geoloc process or Triton exports them, so a suite run outside a cluster has none of them.
KUBE_STATE_METRICS_PREFIX = "kube_"
_GRAFANA_RANGES = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric name, {label: matcher as written}) of each series selector of `expr`, in order; a
    selector named only by a `__name__="x"` matcher counts as x, and one by a regular expression
    as "" (it names no one metric)."""
    found: list[tuple[str, dict[str, str]]] = []

    def visit(node) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: f"{_OPERATORS[str(m.op)]}{json.dumps(m.value)}" for m in node.matchers.matchers}
            named = matchers.get("__name__", "")
            found.append((node.name or (json.loads(named[1:]) if named.startswith('="') else ""), matchers))
        return True

    promql_parser.walk(promql_parser.parse(_GRAFANA_RANGES.sub("5m", expr)), visit)
    return found


_OPERATORS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def metric_names(expr: str) -> set[str]:
    """The names of the series `expr` selects, as written (a histogram's `_bucket` series, say)."""
    return {name for name, _ in selectors(expr) if name}


def dashboard_panels(path: Path) -> list[dict]:
    """Every panel of a Grafana dashboard JSON, the panels of collapsed rows (nested in the row)
    included; the rows themselves, which hold no query, left out."""

    def walk(panels: list[dict]) -> Iterator[dict]:
        for panel in panels:
            if panel.get("type") == "row":
                yield from walk(panel.get("panels", []))
            else:
                yield panel

    return list(walk(json.loads(Path(path).read_text())["panels"]))


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query target of every panel of a Grafana dashboard JSON."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels(path)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def alert_queries(path: Path) -> list[tuple[str, str]]:
    """(alert name, PromQL) of every alerting rule of a PrometheusRule YAML (recording rules,
    which have no `alert`, left out)."""
    return [
        (rule["alert"], rule["expr"])
        for doc in yaml.safe_load_all(Path(path).read_text())
        if doc and doc.get("kind") == "PrometheusRule"
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]

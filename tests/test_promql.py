"""tests/promql.py's reading of PromQL, and offline checks of the Grafana dashboard and the alerts
against it: every panel queries the chosen data source and namespace, every series the dashboard
and the alerts read is one the exporters serve, and the dashboard shows what docs/deploy.md says.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.promql import (
    KUBE_STATE_METRICS_PREFIX,
    alert_queries,
    dashboard_panels,
    dashboard_queries,
    metric_names,
    selectors,
)
from tests.test_k8s_manifests import (
    K8S,
    KUBE_STATE_METRICS,
    TRITON_METRICS,
    geoloc_metric_names,
    of_kind,
    render,
)

DASHBOARD = K8S / "monitoring" / "grafana-dashboard.json"
RULES = K8S / "monitoring" / "prometheusrule.yaml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        # Grafana's range variables, in both spellings, and its variables inside label values.
        (
            "histogram_quantile(0.99, sum by (job, le) (rate(grpc_server_handling_seconds_bucket"
            '{namespace="$namespace"}[$__rate_interval])))',
            {"grpc_server_handling_seconds_bucket"},
        ),
        ('rate(a{pod=~"${pod:regex}"}[${__rate_interval}]) / rate(b[$__range])', {"a", "b"}),
        # Label lists of aggregations and vector matching name labels, not metrics.
        (
            "sum by (job) (rate(a_total[5m])) / on (job) group_left (version) sum without (pod) (b_total)",
            {"a_total", "b_total"},
        ),
        # __name__ matchers: an equality names the metric, a regular expression names none.
        ('{__name__="x", job="y"} + sum({__name__=~"y.*"})', {"x"}),
        ("max_over_time(rate(a[5m])[1h:5m] offset 1h) > bool 0 unless b", {"a", "b"}),
    ],
)
def test_metric_names_are_the_selected_series_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_selectors_return_each_selectors_matchers() -> None:
    assert selectors('a{x="1, }"} / on (j) b + {__name__="c", y=~"2"} + rate(d[5m])') == [
        ("a", {"x": '="1, }"'}),
        ("b", {}),
        ("c", {"__name__": '="c"', "y": '=~"2"'}),
        ("d", {}),
    ]


def test_a_query_that_is_not_promql_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError):
        metric_names('up{job="x}')


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_the_dashboard_is_valid_json_with_its_uid_and_variables() -> None:
    board = dashboard()
    assert (board["schemaVersion"], board["uid"], board["title"]) == (39, "geoloc", "geoloc")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    namespace = variables["namespace"]
    assert namespace["type"] == "query" and namespace["datasource"] == DATASOURCE
    assert namespace["current"]["value"] == "geoloc"
    assert (
        namespace["query"]["query"] == namespace["definition"] == "label_values(grpc_server_handled_total, namespace)"
    )


def test_dashboard_queries_walk_the_panels_of_collapsed_rows(tmp_path) -> None:
    target = {"expr": "a", "refId": "A"}
    board = {
        "panels": [
            {"type": "row", "title": "open", "panels": []},
            {"type": "timeseries", "title": "top", "targets": [target, {"refId": "B"}]},
            {"type": "row", "title": "shut", "collapsed": True, "panels": [{"title": "inner", "targets": [target]}]},
        ]
    }
    (tmp_path / "d.json").write_text(json.dumps(board))
    assert dashboard_queries(tmp_path / "d.json") == [("top", "a"), ("inner", "a")]
    # The shipped dashboard has a collapsed row, which the checks below must see into.
    assert any(p["type"] == "row" and p["collapsed"] and p["panels"] for p in dashboard()["panels"])


def test_every_panel_queries_the_chosen_data_source_and_says_what_it_shows() -> None:
    panels = dashboard_panels(DASHBOARD)
    assert len(panels) >= 15
    for panel in panels:
        assert panel["description"].strip(), panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        queries = [t for t in panel["targets"] if t.get("expr")]
        assert queries, f"{panel['title']} has no query"
        for t in queries:
            assert t["datasource"] == DATASOURCE, panel["title"]
    # A collapsed row's panels included: Grafana needs every id unique across the dashboard.
    rows = [p for p in dashboard()["panels"] if p["type"] == "row"]
    ids = [p["id"] for p in [*rows, *panels]]
    assert len(ids) == len(set(ids)), sorted(ids)
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), sorted(titles)


def test_every_dashboard_query_selects_series_and_each_in_the_chosen_namespace() -> None:
    for title, expr in dashboard_queries(DASHBOARD):
        found = selectors(expr)
        assert found, f"{title}: {expr} selects no series"
        for name, matchers in found:
            assert matchers.get("namespace") == '="$namespace"', (
                f'{title}: {name} not filtered on namespace="$namespace"'
            )


def known_series() -> set[str]:
    """What the exporters serve: a geoloc server's own exposition, the Locate and batch series,
    Triton's, kube-state-metrics'."""
    return set(geoloc_metric_names()) | TRITON_METRICS | KUBE_STATE_METRICS


def dashboard_series() -> set[str]:
    return {name for _, expr in dashboard_queries(DASHBOARD) for name in metric_names(expr)}


def test_every_series_the_dashboard_reads_is_served_by_an_exporter() -> None:
    assert dashboard_series() <= known_series(), dashboard_series() - known_series()


def test_every_series_an_alert_reads_is_one_the_dashboard_or_an_exporter_names() -> None:
    allowed = dashboard_series() | known_series()
    queries = alert_queries(RULES)
    assert len(queries) >= 10
    for alert, expr in queries:
        used = metric_names(expr)
        assert used and used <= allowed, f"{alert} reads unknown series {used - allowed}"


def test_only_kube_state_metrics_series_carry_its_prefix() -> None:
    """The live test skips the series with KUBE_STATE_METRICS_PREFIX, which a suite outside a
    cluster cannot serve: it must name those and no other."""
    used = dashboard_series() | {name for _, expr in alert_queries(RULES) for name in metric_names(expr)}
    assert {n for n in used if n.startswith(KUBE_STATE_METRICS_PREFIX)} <= KUBE_STATE_METRICS
    assert all(n.startswith(KUBE_STATE_METRICS_PREFIX) for n in KUBE_STATE_METRICS)
    assert not any(n.startswith(KUBE_STATE_METRICS_PREFIX) for n in known_series() - KUBE_STATE_METRICS)


def panels_reading(series: str) -> list[str]:
    return [title for title, expr in dashboard_queries(DASHBOARD) if series in metric_names(expr)]


@pytest.mark.parametrize(
    "series",
    [
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_server_in_flight",
        "geoloc_service_ready",
        "geoloc_expert_outcomes_total",
        "geoloc_answers_total",
        "geoloc_fusion_seconds_bucket",
        "geoloc_batch_queue_seconds_bucket",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_request_failure",
        "kube_pod_container_status_restarts_total",
        "process_resident_memory_bytes",
    ],
)
def test_the_dashboard_shows(series: str) -> None:
    assert panels_reading(series), f"no panel reads {series}"


def test_the_services_row_shows_rate_errors_and_duration_per_service_as_the_alerts_count_them() -> None:
    queries = dashboard_queries(DASHBOARD)
    per_service = [expr for _, expr in queries if re.search(r"\bby \(job\b", expr)]
    assert any("grpc_server_handled_total" in metric_names(e) and "grpc_code" not in e for e in per_service)
    assert any("grpc_server_handling_seconds_bucket" in metric_names(e) for e in per_service)
    # The error panel counts the same status codes as GeolocHighErrorRate.
    (alert,) = [expr for name, expr in alert_queries(RULES) if name == "GeolocHighErrorRate"]
    codes = re.search(r'grpc_code=~"([^"]+)"', alert).group(1)
    assert any(f'grpc_code=~"{codes}"' in e for e in per_service)


def test_the_new_alerts_watch_locate_and_the_batchers() -> None:
    alerts = dict(alert_queries(RULES))
    assert metric_names(alerts["GeolocPartialAnswers"]) == {"geoloc_answers_total"}
    assert metric_names(alerts["GeolocExpertFailing"]) == {"geoloc_expert_outcomes_total"}
    assert "by (expert)" in alerts["GeolocExpertFailing"]
    assert metric_names(alerts["GeolocBatchQueueSlow"]) == {"geoloc_batch_queue_seconds_bucket"}
    assert "by (batcher, le)" in alerts["GeolocBatchQueueSlow"]


def test_kustomize_ships_the_dashboard_as_a_configmap_the_grafana_sidecar_loads() -> None:
    configmaps = of_kind(render("monitoring"), "ConfigMap")
    dashboard_map = configmaps["geoloc-grafana-dashboard"]  # no content hash: an update replaces it
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard_map["metadata"]["namespace"] == "geoloc"
    assert json.loads(dashboard_map["data"]["grafana-dashboard.json"]) == dashboard()

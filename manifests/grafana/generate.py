#!/usr/bin/env python3
"""Writes Weft's Grafana dashboards (manifests/grafana/*.json).

    python3 manifests/grafana/generate.py      # after editing this file
    python3 manifests/grafana/generate.py DIR  # into DIR instead (the test
                                               # compares it with these)

The dashboards are generated so that every panel uses the same selectors and
the same quantile expression; edit this file, not the JSON. Every query of
every panel (template variables substituted) runs against a real Prometheus
scraping a running mesh in tests/tests/prometheus.rs.

Labels: namespace, workload, pod, version and service are target labels the
scrape configuration attaches (manifests/prometheus/); the rest are the
proxy's own (docs/metrics.md). Golden signals are from the inbound side of
the pods (what a workload answered); routes from the callers' outbound side.

weft-routes.json and weft-edges.json use metrics that are new with issue 13
(weft_route_response_latency_seconds, weft_edge_*); the other dashboards use
only metrics that existed before it.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = sys.argv[1] if len(sys.argv) > 1 else HERE
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def sel(*parts):
    return "{" + ",".join(p for p in parts if p) + "}"


def rate(metric, selector, by):
    return f"sum by ({by}) (rate({metric}{selector}[{RATE}]))"


def quantile(q, metric, selector, by):
    by_le = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({by_le}) (rate({metric}_bucket{selector}[{RATE}])))"


def success_ratio(metric, base, by):
    ok = sel(*base, 'classification="success"')
    return f"{rate(metric, ok, by)}\n  /\n{rate(metric, sel(*base), by)}"


class Dashboard:
    def __init__(self, uid, title, description, variables):
        self.uid = uid
        self.title = title
        self.description = description
        self.variables = variables
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def _place(self, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def row(self, title):
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0
        self.panels.append({
            "type": "row", "title": title, "collapsed": False, "panels": [],
            "id": len(self.panels) + 1, "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
        })
        self.y += 1

    def _panel(self, kind, title, description, targets, w, h, unit, extra=None):
        panel = {
            "type": kind,
            "title": title,
            "description": description,
            "id": len(self.panels) + 1,
            "gridPos": self._place(w, h),
            "datasource": DS,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": targets,
        }
        if unit == "percentunit":
            panel["fieldConfig"]["defaults"].update({"min": 0, "max": 1, "decimals": 2})
        panel.update(extra or {})
        self.panels.append(panel)

    def timeseries(self, title, description, queries, unit, w=12, h=8):
        """queries: [(expr, legend)]"""
        targets = [
            {"datasource": DS, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "range": True, "instant": False, "editorMode": "code"}
            for i, (expr, legend) in enumerate(queries)
        ]
        self._panel("timeseries", title, description, targets, w, h, unit, {
            "options": {
                "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                           "calcs": ["mean", "lastNotNull", "max"]},
                "tooltip": {"mode": "multi", "sort": "desc"},
            },
        })
        self.panels[-1]["fieldConfig"]["defaults"]["custom"] = {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}

    def stat(self, title, description, expr, unit, w=6, h=4):
        targets = [{"datasource": DS, "refId": "A", "expr": expr, "legendFormat": "__auto",
                    "range": True, "instant": False, "editorMode": "code"}]
        self._panel("stat", title, description, targets, w, h, unit, {
            "options": {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value", "graphMode": "area", "justifyMode": "auto", "textMode": "auto",
                "orientation": "auto",
            },
        })

    def table(self, title, description, columns, join, w=24, h=8):
        """columns: [(header, expr, unit)]; one row per value of the `join` labels."""
        targets = [
            {"datasource": DS, "refId": chr(ord("A") + i), "expr": expr, "format": "table",
             "range": False, "instant": True, "editorMode": "code"}
            for i, (_, expr, _) in enumerate(columns)
        ]
        rename = {f"Value #{chr(ord('A') + i)}": header for i, (header, _, _) in enumerate(columns)}
        overrides = [
            {"matcher": {"id": "byName", "options": header}, "properties": [{"id": "unit", "value": unit}]}
            for header, _, unit in columns
        ]
        self._panel("table", title, description, targets, w, h, "none", {
            "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
            "transformations": [
                {"id": "merge", "options": {}},
                {"id": "organize", "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {**{label: i for i, label in enumerate(join)},
                                    **{h: len(join) + i for i, (h, _, _) in enumerate(columns)}},
                    "renameByName": rename,
                }},
            ],
        })
        self.panels[-1]["fieldConfig"]["overrides"] = overrides

    def json(self):
        return {
            "__requires": [
                {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
                {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            ],
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                "type": "dashboard",
            }]},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [{"type": "dashboards", "tags": ["weft"], "asDropdown": True, "title": "Weft",
                       "includeVars": True, "keepTime": True}],
            "panels": self.panels,
            "refresh": "30s",
            "schemaVersion": 39,
            "tags": ["weft", "service-mesh"],
            "templating": {"list": self.variables},
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }

    def write(self, name):
        with open(os.path.join(OUT_DIR, name), "w") as f:
            json.dump(self.json(), f, indent=2, ensure_ascii=False)
            f.write("\n")


def datasource_var():
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def query_var(name, label, definition, multi=True):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "definition": definition,
        "query": {"qryType": 1, "query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {}, "hide": 0, "includeAll": multi, "multi": multi, "options": [], "refresh": 2,
        "regex": "", "skipUrlSync": False, "sort": 1,
        **({"allValue": ".*"} if multi else {}),
    }


NS_VAR = query_var("namespace", "Namespace", "label_values(weft_requests_total, namespace)")
IN = 'direction="inbound"'
OUT = 'direction="outbound"'
CALLERS = 'namespace=~"$namespace"'
TLS = 'tls="true"'
Q = [("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")]


def mesh_overview():
    workload_var = query_var("workload", "Workload",
                             'label_values(weft_requests_total{namespace=~"$namespace"}, workload)')
    d = Dashboard("weft-mesh", "Weft / Mesh overview",
                  "Golden signals of every meshed workload: success rate, requests per second and latency "
                  "percentiles, from what each workload's inbound proxy answered.",
                  [datasource_var(), NS_VAR, workload_var])
    scope = [IN, 'namespace=~"$namespace"', 'workload=~"$workload"']
    d.row("Mesh")
    d.stat("Success rate", "Responses that were not 5xx (nor a proxy error), over all selected workloads.",
           success_ratio("weft_responses_total", scope, ""), "percentunit")
    d.stat("Requests per second", "Responses per second, over all selected workloads.",
           rate("weft_responses_total", sel(*scope), ""), "reqps")
    d.stat("p99 latency", "99th percentile of the time to the response headers, over all selected workloads.",
           quantile("0.99", "weft_response_latency_seconds", sel(*scope), ""), "s")
    d.stat("Meshed pods", "Pods whose proxy Prometheus scrapes.",
           f'count(sum by (namespace, pod) (weft_detect_total{sel(*scope)}))', "none")
    d.row("Per workload")
    d.timeseries("Success rate by workload", "Non-5xx responses / all responses.",
                 [(success_ratio("weft_responses_total", scope, "namespace, workload"), "{{namespace}}/{{workload}}")],
                 "percentunit")
    d.timeseries("Requests per second by workload", "Responses per second.",
                 [(rate("weft_responses_total", sel(*scope), "namespace, workload"), "{{namespace}}/{{workload}}")],
                 "reqps")
    for q, name in Q:
        d.timeseries(f"Latency {name} by workload",
                     f"{name} of the time from the request to the response headers, over the workload's pods.",
                     [(quantile(q, "weft_response_latency_seconds", sel(*scope), "namespace, workload"),
                       "{{namespace}}/{{workload}}")], "s", w=8)
    d.timeseries("Failures by workload and status", "5xx responses (and the proxy's own errors) per second.",
                 [(rate("weft_responses_total", sel(*scope, 'classification="failure"'),
                        "namespace, workload, status_code"), "{{namespace}}/{{workload}} {{status_code}}")], "reqps")
    d.timeseries("Open connections by workload", "Inbound connections open now, by detected protocol.",
                 [(f"sum by (namespace, workload, protocol) (weft_tcp_open_connections{sel(*scope)})",
                   "{{namespace}}/{{workload}} {{protocol}}")], "none")
    by = "namespace, workload"
    d.table("Workloads", "The golden signals of each workload now (Linkerd's `stat` columns).", [
        ("Success", success_ratio("weft_responses_total", scope, by), "percentunit"),
        ("RPS", rate("weft_responses_total", sel(*scope), by), "reqps"),
        ("p50", quantile("0.5", "weft_response_latency_seconds", sel(*scope), by), "s"),
        ("p95", quantile("0.95", "weft_response_latency_seconds", sel(*scope), by), "s"),
        ("p99", quantile("0.99", "weft_response_latency_seconds", sel(*scope), by), "s"),
        ("TCP connections", f"sum by ({by}) (weft_tcp_open_connections{sel(*scope)})", "none"),
    ], ["namespace", "workload"])
    d.write("weft-mesh.json")


def service_var():
    return query_var("service", "Service", 'label_values(weft_requests_total{namespace=~"$namespace"}, service)',
                     multi=False)


def per_service():
    ns_var = query_var("namespace", "Namespace", "label_values(weft_requests_total, namespace)", multi=False)
    d = Dashboard("weft-service", "Weft / Service",
                  "One service: what its pods answered (success rate, requests per second, latency "
                  "percentiles), by pod and status code.",
                  [datasource_var(), ns_var, service_var()])
    scope = [IN, 'namespace="$namespace"', 'service="$service"']
    d.row("$service")
    d.stat("Success rate", "Non-5xx responses / all, over the service's pods.",
           success_ratio("weft_responses_total", scope, ""), "percentunit")
    d.stat("Requests per second", "", rate("weft_responses_total", sel(*scope), ""), "reqps")
    d.stat("p50 latency", "", quantile("0.5", "weft_response_latency_seconds", sel(*scope), ""), "s")
    d.stat("p99 latency", "", quantile("0.99", "weft_response_latency_seconds", sel(*scope), ""), "s")
    d.timeseries("Latency", "Percentiles of the time to the response headers, over all the service's pods.",
                 [(quantile(q, "weft_response_latency_seconds", sel(*scope), ""), name) for q, name in Q], "s",
                 w=24)
    d.timeseries("Success rate", "", [(success_ratio("weft_responses_total", scope, ""), "success")],
                 "percentunit", w=8)
    d.timeseries("Requests per second by status", "",
                 [(rate("weft_responses_total", sel(*scope), "status_code"), "{{status_code}}")], "reqps", w=8)
    d.timeseries("Requests per second by pod", "",
                 [(rate("weft_responses_total", sel(*scope), "pod"), "{{pod}}")], "reqps", w=8)
    d.timeseries("p99 latency by pod", "",
                 [(quantile("0.99", "weft_response_latency_seconds", sel(*scope), "pod"), "{{pod}}")], "s")
    d.timeseries("Inbound bytes per second", "Read from and written to clients, by direction on the wire.",
                 [(f"sum(rate(weft_tcp_read_bytes_total{sel(*scope)}[{RATE}]))", "received"),
                  (f"sum(rate(weft_tcp_write_bytes_total{sel(*scope)}[{RATE}]))", "sent")], "Bps")
    d.write("weft-service.json")


def canary():
    ns_var = query_var("namespace", "Namespace", "label_values(weft_requests_total, namespace)", multi=False)
    d = Dashboard("weft-canary", "Weft / Canary",
                  "The versions of one service side by side (the pods' `version` label), as during a "
                  "`weft rollout`: traffic share, success rate and latency per version.",
                  [datasource_var(), ns_var, service_var()])
    scope = [IN, 'namespace="$namespace"', 'service="$service"']
    d.row("$service by version")
    d.timeseries("Traffic share by version", "Each version's part of the service's responses.",
                 [(f"{rate('weft_responses_total', sel(*scope), 'version')}\n  / ignoring(version) group_left\n"
                   f"{rate('weft_responses_total', sel(*scope), '')}", "{{version}}")], "percentunit")
    d.timeseries("Requests per second by version", "",
                 [(rate("weft_responses_total", sel(*scope), "version"), "{{version}}")], "reqps")
    d.timeseries("Success rate by version", "Non-5xx responses / all, per version.",
                 [(success_ratio("weft_responses_total", scope, "version"), "{{version}}")], "percentunit")
    d.timeseries("Failures per second by version", "",
                 [(rate("weft_responses_total", sel(*scope, 'classification="failure"'), "version"),
                   "{{version}}")], "reqps")
    for q, name in Q:
        d.timeseries(f"Latency {name} by version", "",
                     [(quantile(q, "weft_response_latency_seconds", sel(*scope), "version"), "{{version}}")], "s",
                     w=8)
    by = "version"
    d.table("Versions", "Each version now.", [
        ("Pods", f"count by ({by}) (sum by ({by}, pod) (weft_detect_total{sel(*scope)}))", "none"),
        ("Success", success_ratio("weft_responses_total", scope, by), "percentunit"),
        ("RPS", rate("weft_responses_total", sel(*scope), by), "reqps"),
        ("p50", quantile("0.5", "weft_response_latency_seconds", sel(*scope), by), "s"),
        ("p99", quantile("0.99", "weft_response_latency_seconds", sel(*scope), by), "s"),
    ], ["version"])
    d.write("weft-canary.json")


def routes():
    route_var = query_var("route", "Route",
                          'label_values(weft_route_requests_total{namespace=~"$namespace"}, route)')
    d = Dashboard("weft-routes", "Weft / Routes",
                  "Per HTTPRoute rule (`namespace/name#rule`; `default` for a service without routes) and "
                  "backend, from the callers' outbound proxies: requests, success rate, latency, retries "
                  "and timeouts. $namespace is the callers' namespace.",
                  [datasource_var(), query_var("namespace", "Caller namespace",
                                               "label_values(weft_route_requests_total, namespace)"), route_var])
    scope = ['namespace=~"$namespace"', 'route=~"$route"']
    by = "route, backend"
    d.row("Routes")
    d.timeseries("Requests per second by route and backend", "",
                 [(rate("weft_route_requests_total", sel(*scope), by), "{{route}} → {{backend}}")], "reqps")
    d.timeseries("Success rate by route and backend", "",
                 [(success_ratio("weft_route_requests_total", scope, by), "{{route}} → {{backend}}")],
                 "percentunit")
    d.timeseries("Backend share by route", "Each backend's part of its route's requests (the split's weights "
                 "as the traffic saw them).",
                 [(f"{rate('weft_route_requests_total', sel(*scope), by)}\n  / ignoring(backend) group_left\n"
                   f"{rate('weft_route_requests_total', sel(*scope), 'route')}", "{{route}} → {{backend}}")],
                 "percentunit")
    d.timeseries("Retries and timeouts", "Retries sent, retries the budget refused, and timeouts by kind, "
                 "by caller workload.",
                 [(f"sum by (workload) (rate(weft_retries_total{sel(CALLERS)}[{RATE}]))",
                   "{{workload}} retries"),
                  (f"sum by (workload) (rate(weft_retry_budget_exhausted_total{sel(CALLERS)}"
                   f"[{RATE}]))", "{{workload}} budget exhausted"),
                  (f"sum by (workload, kind) (rate(weft_timeouts_total{sel(CALLERS)}[{RATE}]))",
                   "{{workload}} {{kind}} timeouts")], "reqps")
    for q, name in Q:
        d.timeseries(f"Latency {name} by route and backend", "",
                     [(quantile(q, "weft_route_response_latency_seconds", sel(*scope), by),
                       "{{route}} → {{backend}}")], "s", w=8)
    d.table("Routes", "Each route rule and backend now (`weft routes`' columns).", [
        ("Success", success_ratio("weft_route_requests_total", scope, by), "percentunit"),
        ("RPS", rate("weft_route_requests_total", sel(*scope), by), "reqps"),
        ("p50", quantile("0.5", "weft_route_response_latency_seconds", sel(*scope), by), "s"),
        ("p95", quantile("0.95", "weft_route_response_latency_seconds", sel(*scope), by), "s"),
        ("p99", quantile("0.99", "weft_route_response_latency_seconds", sel(*scope), by), "s"),
    ], ["route", "backend"])
    d.write("weft-routes.json")


def edges():
    d = Dashboard("weft-edges", "Weft / Edges",
                  "Who calls whom: per caller workload and destination service (outbound), or per client "
                  "identity (inbound), with latency, success rate and whether the connection was mTLS.",
                  [datasource_var(), NS_VAR])
    out = [OUT, 'namespace=~"$namespace"']
    inb = [IN, 'namespace=~"$namespace"']
    by = "namespace, workload, peer"
    d.row("Outbound edges (caller → service)")
    d.timeseries("Requests per second by edge", "",
                 [(rate("weft_edge_responses_total", sel(*out), by), "{{workload}} → {{peer}}")], "reqps")
    d.timeseries("Success rate by edge", "",
                 [(success_ratio("weft_edge_responses_total", out, by), "{{workload}} → {{peer}}")], "percentunit")
    d.timeseries("Latency p99 by edge", "",
                 [(quantile("0.99", "weft_edge_response_latency_seconds", sel(*out), by), "{{workload}} → {{peer}}")],
                 "s")
    d.timeseries("mTLS share by edge", "Part of each edge's responses that came over mTLS.",
                 [(f"{rate('weft_edge_responses_total', sel(*out, TLS), by)}\n  /\n"
                   f"{rate('weft_edge_responses_total', sel(*out), by)}", "{{workload}} → {{peer}}")], "percentunit")
    d.row("Inbound edges (client identity → workload)")
    d.timeseries("Requests per second by client identity", "`peer_id` is the client's SPIFFE ID; empty: plaintext.",
                 [(rate("weft_edge_responses_total", sel(*inb), "namespace, workload, peer_id, tls"),
                   "{{peer_id}} → {{workload}} (tls {{tls}})")], "reqps")
    d.timeseries("Latency p99 by client identity", "",
                 [(quantile("0.99", "weft_edge_response_latency_seconds", sel(*inb), "namespace, workload, peer_id"),
                   "{{peer_id}} → {{workload}}")], "s")
    cols = "namespace, workload, peer, peer_id, tls"
    d.table("Edges", "Each outbound edge now (`weft edges`' columns, with latency).", [
        ("Success", success_ratio("weft_edge_responses_total", out, cols), "percentunit"),
        ("RPS", rate("weft_edge_responses_total", sel(*out), cols), "reqps"),
        ("p50", quantile("0.5", "weft_edge_response_latency_seconds", sel(*out), cols), "s"),
        ("p99", quantile("0.99", "weft_edge_response_latency_seconds", sel(*out), cols), "s"),
    ], ["namespace", "workload", "peer", "peer_id", "tls"])
    d.write("weft-edges.json")


if __name__ == "__main__":
    mesh_overview()
    per_service()
    canary()
    routes()
    edges()

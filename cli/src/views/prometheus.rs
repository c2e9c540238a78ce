//! `--prometheus URL`: the same rows as the control plane's API, from a
//! Prometheus that scrapes the proxies with the labels of the control
//! plane's `/api/prometheus/sd` (`namespace`, `workload`, `pod`,
//! `version`, `service`), by PromQL over `/api/v1/query`.
//!
//! What Prometheus cannot know is left out: route weights (the policy is
//! not a metric); a route belongs to `--service S` when one of its
//! backends is `S` or `S-…` in the namespace; an edge's caller is the
//! workload whose outbound edge metrics name the callee's `service`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::client::get_json;

type Labels = BTreeMap<String, String>;

/// An instant query: each series' labels and value.
pub async fn query(base: &str, promql: &str, timeout: Duration) -> anyhow::Result<Vec<(Labels, f64)>> {
    let q: String = form_urlencoded::Serializer::new(String::new()).append_pair("query", promql).finish();
    let answer = get_json(base, &format!("/api/v1/query?{q}"), timeout).await?;
    if answer["status"] != "success" {
        bail!("Prometheus refused {promql}: {}", answer["error"]);
    }
    let result = answer["data"]["result"].as_array().context("no data.result in Prometheus' answer")?;
    Ok(result
        .iter()
        .filter_map(|r| {
            let labels: Labels = serde_json::from_value(r["metric"].clone()).ok()?;
            let v: f64 = r["value"][1].as_str()?.parse().ok()?;
            Some((labels, v))
        })
        .collect())
}

fn selector(extra: &[(&str, &str)]) -> String {
    let inner: Vec<String> =
        extra.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("{{{}}}", inner.join(","))
}

/// Values by the `by` labels' values.
async fn by(base: &str, promql: &str, keys: &[&str], timeout: Duration) -> anyhow::Result<BTreeMap<Vec<String>, f64>> {
    Ok(query(base, promql, timeout)
        .await?
        .into_iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(l, v)| (keys.iter().map(|k| l.get(*k).cloned().unwrap_or_default()).collect(), v))
        .collect())
}

fn number(v: Option<&f64>) -> Value {
    v.map_or(Value::Null, |v| json!(v))
}

/// Success, rps and latency quantiles of `counts`/`buckets` grouped by `keys`.
async fn golden(
    base: &str,
    counts: &str,
    buckets: &str,
    sel: &[(&str, &str)],
    keys: &[&str],
    window: &str,
    timeout: Duration,
) -> anyhow::Result<(Vec<Vec<String>>, Vec<BTreeMap<Vec<String>, f64>>)> {
    let g = keys.join(",");
    let all = selector(sel);
    let mut ok_sel = sel.to_vec();
    ok_sel.push(("classification", "success"));
    let ok = selector(&ok_sel);
    let queries = [
        format!("sum by ({g}) (rate({counts}{all}[{window}]))"),
        format!("sum by ({g}) (rate({counts}{ok}[{window}]))"),
        format!("histogram_quantile(0.5, sum by ({g}, le) (rate({buckets}{all}[{window}]))) * 1000"),
        format!("histogram_quantile(0.95, sum by ({g}, le) (rate({buckets}{all}[{window}]))) * 1000"),
        format!("histogram_quantile(0.99, sum by ({g}, le) (rate({buckets}{all}[{window}]))) * 1000"),
    ];
    let mut maps = Vec::new();
    for q in &queries {
        maps.push(by(base, q, keys, timeout).await?);
    }
    let rows: Vec<Vec<String>> = maps[0].keys().cloned().collect();
    Ok((rows, maps))
}

fn success(maps: &[BTreeMap<Vec<String>, f64>], key: &Vec<String>) -> Value {
    match (maps[0].get(key), maps[1].get(key)) {
        (Some(total), Some(ok)) if *total > 0.0 => json!(ok / total),
        (Some(total), None) if *total > 0.0 => json!(0.0),
        _ => Value::Null,
    }
}

/// `weft stat --prometheus`: rows shaped as `/api/stat`'s.
pub async fn stat(
    base: &str,
    services: bool,
    namespace: Option<&str>,
    window: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Value>> {
    let keys: &[&str] = if services { &["namespace", "service"] } else { &["namespace", "workload", "version"] };
    let mut sel = vec![("direction", "inbound")];
    if let Some(ns) = namespace {
        sel.push(("namespace", ns));
    }
    let (_, maps) =
        golden(base, "weft_responses_total", "weft_response_latency_seconds_bucket", &sel, keys, window, timeout)
            .await?;
    let g = keys.join(",");
    let ns_sel = selector(&namespace.map(|ns| vec![("namespace", ns)]).unwrap_or_default());
    let up = by(base, &format!("sum by ({g}) (up{ns_sel})"), keys, timeout).await?;
    let targets = by(base, &format!("count by ({g}) (up{ns_sel})"), keys, timeout).await?;
    let tcp = by(base, &format!("sum by ({g}) (weft_tcp_open_connections{})", selector(&sel)), keys, timeout).await?;
    Ok(targets
        .iter()
        .filter(|(k, _)| !k[1].is_empty())
        .map(|(key, n)| {
            json!({
                "namespace": key[0],
                "name": key[1],
                "kind": if services { "service" } else { "workload" },
                "version": key.get(2).cloned().unwrap_or_default(),
                "meshed": format!("{:.0}/{n:.0}", up.get(key).copied().unwrap_or(0.0)),
                "success": success(&maps, key),
                "rps": maps[0].get(key).copied().unwrap_or(0.0),
                "p50_ms": number(maps[2].get(key)),
                "p95_ms": number(maps[3].get(key)),
                "p99_ms": number(maps[4].get(key)),
                "tcp_conn": tcp.get(key).copied().unwrap_or(0.0),
            })
        })
        .collect())
}

/// Whether a route with these backends is `service`'s (see the module).
pub fn route_of(service: &str, namespace: &str, backends: &[&str]) -> bool {
    backends.iter().any(|b| {
        let b = b.rsplit_once(':').map_or(*b, |(b, _)| b);
        let Some((name, ns)) = b.rsplit_once('.') else { return false };
        ns == namespace && (name == service || name.strip_prefix(service).is_some_and(|r| r.starts_with('-')))
    })
}

/// `weft routes --prometheus`.
pub async fn routes(
    base: &str,
    service: &str,
    namespace: &str,
    window: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Value>> {
    let keys = ["route", "backend"];
    let (rows, maps) = golden(
        base,
        "weft_route_requests_total",
        "weft_route_response_latency_seconds_bucket",
        &[],
        &keys,
        window,
        timeout,
    )
    .await?;
    let mut by_route: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in &rows {
        by_route.entry(r[0].as_str()).or_default().push(r[1].as_str());
    }
    Ok(rows
        .iter()
        .filter(|r| route_of(service, namespace, &by_route[r[0].as_str()]))
        .map(|key| {
            json!({
                "route": if key[0].is_empty() { "default" } else { key[0].as_str() },
                "service": format!("{service}.{namespace}"),
                "backend": key[1],
                "weight": null,
                "success": success(&maps, key),
                "rps": maps[0].get(key).copied().unwrap_or(0.0),
                "p50_ms": number(maps[2].get(key)),
                "p95_ms": number(maps[3].get(key)),
                "p99_ms": number(maps[4].get(key)),
            })
        })
        .collect())
}

/// `weft edges --prometheus`.
pub async fn edges(base: &str, namespace: Option<&str>, window: &str, timeout: Duration) -> anyhow::Result<Vec<Value>> {
    let keys = ["namespace", "workload", "service", "peer_id", "tls"];
    let (rows, maps) = golden(
        base,
        "weft_edge_responses_total",
        "weft_edge_response_latency_seconds_bucket",
        &[("direction", "inbound")],
        &keys,
        window,
        timeout,
    )
    .await?;
    let out_keys = ["namespace", "workload", "peer", "peer_id", "tls"];
    let outbound = by(
        base,
        &format!(
            "sum by ({}) (increase(weft_edge_responses_total{{direction=\"outbound\"}}[{window}]))",
            out_keys.join(",")
        ),
        &out_keys,
        timeout,
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|key| {
            let [dst_ns, dst, service, client_id, tls] = [&key[0], &key[1], &key[2], &key[3], &key[4]];
            let callers: Vec<&Vec<String>> = outbound
                .iter()
                .filter(|(o, n)| **n > 0.0 && o[2] == format!("{service}.{dst_ns}") && o[4] == *tls)
                .map(|(o, _)| o)
                .collect();
            let src: Vec<&str> =
                callers.iter().map(|o| o[1].as_str()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            let src_ns = callers.first().map_or_else(
                || client_id.split("/ns/").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default().to_owned(),
                |o| o[0].clone(),
            );
            let keep = namespace.is_none_or(|ns| ns == dst_ns || ns == src_ns);
            keep.then(|| {
                json!({
                    "src": src.join(","),
                    "src_ns": src_ns,
                    "dst": dst,
                    "dst_ns": dst_ns,
                    "client_id": client_id,
                    "server_id": callers.first().map(|o| o[3].clone()).unwrap_or_default(),
                    "secured": tls == "true",
                    "success": success(&maps, key),
                    "rps": maps[0].get(key).copied().unwrap_or(0.0),
                    "p50_ms": number(maps[2].get(key)),
                    "p99_ms": number(maps[4].get(key)),
                })
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_belong_to_services_by_their_backends() {
        #[rustfmt::skip]
        let cases: [(&str, &[&str], bool); 6] = [
            ("web", &["web-v1.default", "web-v2.default"], true),
            ("web", &["web.default:80"], true),
            ("web", &["webby.default"], false),
            ("web", &["web-v1.shop"], false),
            ("store", &["store.default"], true),
            ("web", &["other"], false),
        ];
        for (service, backends, want) in cases {
            assert_eq!(route_of(service, "default", backends), want, "{service} {backends:?}");
        }
        assert_eq!(selector(&[("a", "x\"y"), ("b", "z")]), "{a=\"x\\\"y\",b=\"z\"}");
        assert_eq!(selector(&[]), "{}");
    }
}

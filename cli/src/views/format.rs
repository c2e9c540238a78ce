//! The views' tables and lines, as pure functions of the API's JSON rows
//! (Linkerd's column words).

use std::fmt::Write as _;

use serde_json::Value;

/// Left-aligned columns, three spaces apart, no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let _ = write!(text, "{cell:<width$}   ", width = widths[i]);
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn dash() -> String {
    "-".to_owned()
}

/// `99.50%`, or `-` for null.
pub fn success(v: &Value) -> String {
    v.as_f64().map_or_else(dash, |r| format!("{:.2}%", r * 100.0))
}

/// `12.5rps`.
pub fn rps(v: &Value) -> String {
    v.as_f64().map_or_else(dash, |r| format!("{r:.1}rps"))
}

/// `0.85ms`, `1.2ms`, `15ms`, `1250ms`; `-` for null.
pub fn ms(v: &Value) -> String {
    match v.as_f64() {
        None => dash(),
        Some(m) if m < 1.0 => format!("{m:.2}ms"),
        Some(m) if m < 10.0 => format!("{m:.1}ms"),
        Some(m) => format!("{m:.0}ms"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => dash(),
        Value::String(s) => s.clone(),
        Value::Null => dash(),
        other => other.to_string(),
    }
}

fn count(v: &Value) -> String {
    v.as_f64().map_or_else(dash, |n| format!("{n:.0}"))
}

/// `weft stat`: `NAME VERSION MESHED SUCCESS RPS LATENCY_P50 LATENCY_P95
/// LATENCY_P99 TCP_CONN`, with `NAMESPACE` first when asked.
pub fn stat_table(rows: &[Value], with_namespace: bool) -> String {
    let mut header =
        vec!["NAME", "VERSION", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                text(&r["name"]),
                text(&r["version"]),
                text(&r["meshed"]),
                success(&r["success"]),
                rps(&r["rps"]),
                ms(&r["p50_ms"]),
                ms(&r["p95_ms"]),
                ms(&r["p99_ms"]),
                count(&r["tcp_conn"]),
            ];
            if with_namespace {
                row.insert(0, text(&r["namespace"]));
            }
            row
        })
        .collect();
    table(&header, &cells)
}

/// `weft routes`: `ROUTE SERVICE BACKEND WEIGHT SUCCESS RPS LATENCY_P50
/// LATENCY_P95 LATENCY_P99`.
pub fn routes_table(rows: &[Value]) -> String {
    let header =
        ["ROUTE", "SERVICE", "BACKEND", "WEIGHT", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                text(&r["route"]),
                text(&r["service"]),
                text(&r["backend"]),
                count(&r["weight"]),
                success(&r["success"]),
                rps(&r["rps"]),
                ms(&r["p50_ms"]),
                ms(&r["p95_ms"]),
                ms(&r["p99_ms"]),
            ]
        })
        .collect();
    table(&header, &cells)
}

/// `weft edges`: `SRC DST SRC_NS DST_NS CLIENT_ID SERVER_ID SECURED`
/// (identities shortened to `SA.NAMESPACE` as Linkerd does).
pub fn edges_table(rows: &[Value]) -> String {
    let header = ["SRC", "DST", "SRC_NS", "DST_NS", "CLIENT_ID", "SERVER_ID", "SECURED"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let secured = if r["secured"].as_bool() == Some(true) { "√" } else { "×" };
            vec![
                text(&r["src"]),
                text(&r["dst"]),
                text(&r["src_ns"]),
                text(&r["dst_ns"]),
                short_id(r["client_id"].as_str().unwrap_or_default()),
                short_id(r["server_id"].as_str().unwrap_or_default()),
                secured.to_owned(),
            ]
        })
        .collect();
    table(&header, &cells)
}

/// `spiffe://TD/ns/NS/sa/SA` → `SA.NS`; anything else as it is; `-` if empty.
pub fn short_id(id: &str) -> String {
    let parts: Vec<&str> = id.split('/').collect();
    match parts.as_slice() {
        ["spiffe:", "", _, "ns", ns, "sa", sa] => format!("{sa}.{ns}"),
        [""] => dash(),
        _ => id.to_owned(),
    }
}

/// One `weft tap` line of an event (Linkerd's format); `None` for an
/// event of no known kind.
pub fn tap_line(e: &Value) -> Option<String> {
    let proxy = if e["direction"] == "outbound" { "out" } else { "in " };
    let head = format!(
        "id={}:{} proxy={proxy} src={} dst={} tls={}",
        e["pod"].as_str().unwrap_or_default(),
        e["id"],
        e["source"].as_str().unwrap_or_default(),
        e["destination"].as_str().unwrap_or_default(),
        e["tls"].as_bool().unwrap_or(false)
    );
    if let Some(r) = e.get("request") {
        return Some(format!(
            "req {head} :method={} :authority={} :path={}",
            r["method"].as_str().unwrap_or_default(),
            r["authority"].as_str().unwrap_or_default(),
            r["path"].as_str().unwrap_or_default()
        ));
    }
    if let Some(r) = e.get("response") {
        return Some(format!("rsp {head} :status={} latency={}µs", r["status"], r["latency_us"]));
    }
    if let Some(r) = e.get("end") {
        let mut line = format!("end {head} duration={}µs response-length={}B", r["duration_us"], r["response_bytes"]);
        if let Some(g) = r["grpc_status"].as_i64().filter(|g| *g >= 0) {
            let _ = write!(line, " grpc-status={g}");
        }
        if let Some(reason) = r["reason"].as_str().filter(|r| !r.is_empty()) {
            let _ = write!(line, " reason={reason:?}");
        }
        return Some(line);
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stat_tables() {
        let rows = [
            json!({"namespace": "default", "name": "web-v1", "kind": "workload", "version": "v1", "meshed": "2/2",
                   "success": 0.995, "rps": 12.25, "p50_ms": 0.85, "p95_ms": 4.21, "p99_ms": 12.6, "tcp_conn": 4.0}),
            json!({"namespace": "shop", "name": "db", "kind": "workload", "version": "", "meshed": "0/1",
                   "success": null, "rps": 0.0, "p50_ms": null, "p95_ms": null, "p99_ms": null, "tcp_conn": 0.0}),
        ];
        assert_eq!(
            stat_table(&rows, false),
            "NAME     VERSION   MESHED   SUCCESS   RPS       LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN\n\
             web-v1   v1        2/2      99.50%    12.2rps   0.85ms        4.2ms         13ms          4\n\
             db       -         0/1      -         0.0rps    -             -             -             0\n"
        );
        assert!(stat_table(&rows, true).starts_with("NAMESPACE   NAME     VERSION"));
        assert!(stat_table(&rows, true).contains("\nshop        db "));
        assert_eq!(stat_table(&[], false).lines().count(), 1, "the header alone");
    }

    #[test]
    fn routes_and_edges_tables() {
        let routes = [json!({"route": "default/web-canary#0", "service": "web.default", "backend": "web-v2.default",
                             "weight": 10, "success": 1.0, "rps": 5.0, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 30.5})];
        assert_eq!(
            routes_table(&routes),
            "ROUTE                  SERVICE       BACKEND          WEIGHT   SUCCESS   RPS      LATENCY_P50   LATENCY_P95   LATENCY_P99\n\
             default/web-canary#0   web.default   web-v2.default   10       100.00%   5.0rps   1.0ms         2.0ms         30ms\n"
        );
        let edges = [
            json!({"src": "load", "src_ns": "default", "dst": "web-v1", "dst_ns": "default",
                   "client_id": "spiffe://cluster.local/ns/default/sa/load",
                   "server_id": "spiffe://cluster.local/ns/default/sa/web", "secured": true}),
            json!({"src": "", "src_ns": "", "dst": "web-v1", "dst_ns": "default", "client_id": "", "server_id": "", "secured": false}),
        ];
        assert_eq!(
            edges_table(&edges),
            "SRC    DST      SRC_NS    DST_NS    CLIENT_ID      SERVER_ID     SECURED\n\
             load   web-v1   default   default   load.default   web.default   √\n\
             -      web-v1   -         default   -              -             ×\n"
        );
        assert_eq!(short_id("spiffe://td/other"), "spiffe://td/other");
    }

    #[test]
    fn tap_lines() {
        let base = json!({"pod": "web-v1-0", "id": 7, "direction": "inbound", "source": "198.18.1.4:40000",
                          "destination": "198.18.1.1:8080", "tls": true});
        let with = |key: &str, v: Value| {
            let mut e = base.clone();
            e[key] = v;
            e
        };
        #[rustfmt::skip]
        let cases = [
            (with("request", json!({"method": "GET", "authority": "web", "path": "/count"})),
             "req id=web-v1-0:7 proxy=in  src=198.18.1.4:40000 dst=198.18.1.1:8080 tls=true :method=GET :authority=web :path=/count"),
            (with("response", json!({"status": 200, "latency_us": 1234})),
             "rsp id=web-v1-0:7 proxy=in  src=198.18.1.4:40000 dst=198.18.1.1:8080 tls=true :status=200 latency=1234µs"),
            (with("end", json!({"duration_us": 1500, "response_bytes": 12, "grpc_status": -1, "reason": ""})),
             "end id=web-v1-0:7 proxy=in  src=198.18.1.4:40000 dst=198.18.1.1:8080 tls=true duration=1500µs response-length=12B"),
            (with("end", json!({"duration_us": 9, "response_bytes": 0, "grpc_status": 14, "reason": "reset"})),
             "end id=web-v1-0:7 proxy=in  src=198.18.1.4:40000 dst=198.18.1.1:8080 tls=true duration=9µs response-length=0B grpc-status=14 reason=\"reset\""),
        ];
        for (event, line) in cases {
            assert_eq!(tap_line(&event).as_deref(), Some(line));
        }
        let mut out = base.clone();
        out["direction"] = "outbound".into();
        out["request"] = json!({"method": "POST", "authority": "store:6379", "path": "/"});
        assert!(tap_line(&out).unwrap().contains(" proxy=out "));
        assert_eq!(tap_line(&base), None);
    }
}

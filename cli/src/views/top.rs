//! `weft top`: the busiest paths, from the tap stream. A request event
//! opens an entry (by proxy and id), its response closes it into the row
//! of (source, destination, method, path).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::format::table;

/// One row of the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub count: u64,
    pub ok: u64,
    pub best_us: u64,
    pub worst_us: u64,
    pub last_us: u64,
}

/// (source, destination, method, path).
pub type Key = (String, String, String, String);

#[derive(Debug, Default)]
pub struct Top {
    /// Pod names by IP, to name sources and destinations.
    names: HashMap<String, String>,
    pending: HashMap<(String, u64), Key>,
    pub rows: BTreeMap<Key, Row>,
}

impl Top {
    pub fn new(names: HashMap<String, String>) -> Top {
        Top { names, ..Top::default() }
    }

    /// `ip:port` → the pod at that IP, else the IP.
    fn name(&self, addr: &str) -> String {
        let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip).trim_matches(['[', ']']);
        self.names.get(ip).cloned().unwrap_or_else(|| ip.to_owned())
    }

    pub fn add(&mut self, e: &Value) {
        let id = (e["pod"].as_str().unwrap_or_default().to_owned(), e["id"].as_u64().unwrap_or_default());
        if let Some(r) = e.get("request") {
            let key = (
                self.name(e["source"].as_str().unwrap_or_default()),
                self.name(e["destination"].as_str().unwrap_or_default()),
                r["method"].as_str().unwrap_or_default().to_owned(),
                r["path"].as_str().unwrap_or_default().to_owned(),
            );
            // Bounded: a request whose response never came is forgotten.
            if self.pending.len() > 10_000 {
                self.pending.clear();
            }
            self.pending.insert(id, key);
        } else if let Some(r) = e.get("response")
            && let Some(key) = self.pending.remove(&id)
        {
            let latency = r["latency_us"].as_u64().unwrap_or_default();
            let row = self.rows.entry(key).or_default();
            if row.count == 0 || latency < row.best_us {
                row.best_us = latency;
            }
            row.worst_us = row.worst_us.max(latency);
            row.last_us = latency;
            row.count += 1;
            if r["status"].as_u64().is_some_and(|s| s < 500) {
                row.ok += 1;
            }
        }
    }

    /// `Source Destination Method Path Count Best Worst Last Success Rate`,
    /// the busiest first.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&Key, &Row)> = self.rows.iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        let ms = |us: u64| {
            let m = us as f64 / 1000.0;
            if m < 10.0 { format!("{m:.1}ms") } else { format!("{m:.0}ms") }
        };
        let cells: Vec<Vec<String>> = rows
            .into_iter()
            .map(|((src, dst, method, path), r)| {
                vec![
                    src.clone(),
                    dst.clone(),
                    method.clone(),
                    path.clone(),
                    r.count.to_string(),
                    ms(r.best_us),
                    ms(r.worst_us),
                    ms(r.last_us),
                    format!("{:.2}%", r.ok as f64 * 100.0 / r.count.max(1) as f64),
                ]
            })
            .collect();
        table(&["Source", "Destination", "Method", "Path", "Count", "Best", "Worst", "Last", "Success Rate"], &cells)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(pod: &str, id: u64, path: &str) -> Value {
        json!({"pod": pod, "id": id, "source": "198.18.1.4:4000", "destination": "198.18.1.1:8080",
               "request": {"method": "GET", "path": path}})
    }

    fn rsp(pod: &str, id: u64, status: u32, latency_us: u64) -> Value {
        json!({"pod": pod, "id": id, "response": {"status": status, "latency_us": latency_us}})
    }

    #[test]
    fn counts_paths_and_latencies() {
        let names = HashMap::from([("198.18.1.4".to_owned(), "load-0".to_owned())]);
        let mut top = Top::new(names);
        for e in [
            req("web-v1-0", 1, "/a"),
            req("web-v1-0", 2, "/a"),
            req("web-v2-0", 1, "/b"),
            rsp("web-v1-0", 2, 200, 1500),
            rsp("web-v1-0", 1, 503, 25_000),
            rsp("web-v2-0", 1, 200, 900),
            rsp("web-v2-0", 9, 200, 1),
            req("web-v1-0", 3, "/a"),
        ] {
            top.add(&e);
        }
        assert_eq!(
            top.table(),
            "Source   Destination   Method   Path   Count   Best    Worst   Last    Success Rate\n\
             load-0   198.18.1.1    GET      /a     2       1.5ms   25ms    25ms    50.00%\n\
             load-0   198.18.1.1    GET      /b     1       0.9ms   0.9ms   0.9ms   100.00%\n"
        );
        assert_eq!(top.pending.len(), 1, "request 3 waits for its response");
    }
}

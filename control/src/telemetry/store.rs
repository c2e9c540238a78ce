//! The bounded history of scrapes: per pod, the last `retention` of
//! snapshots (at most `retention / interval + 2` of them), its last scrape
//! time and error. Pods the index forgot are dropped on the next round.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::aggregate::{Pod, Snapshot, keep};
use super::prom::Sample;
use crate::index::WorkloadName;

/// One pod's record.
#[derive(Clone, Debug)]
pub struct Entry {
    pub pod: Pod,
    pub history: VecDeque<Snapshot>,
    /// Unix seconds of the last scrape attempt.
    pub last_scrape: Option<f64>,
    /// Why the last scrape failed; `None` after a success.
    pub last_error: Option<String>,
}

/// What the API reads: every pod with its history, in name order.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub entries: Vec<Entry>,
}

#[derive(Debug)]
pub struct Store {
    entries: Mutex<BTreeMap<WorkloadName, Entry>>,
    retention: f64,
    capacity: usize,
}

impl Store {
    pub fn new(retention: Duration, interval: Duration) -> Store {
        let interval = interval.as_secs_f64().max(0.001);
        let capacity = (retention.as_secs_f64() / interval).ceil() as usize + 2;
        Store { entries: Mutex::new(BTreeMap::new()), retention: retention.as_secs_f64(), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<WorkloadName, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps exactly these pods (updating what is known of them); the
    /// history of the others goes.
    pub fn set_pods(&self, pods: &[Pod]) {
        let mut entries = self.lock();
        let names: BTreeSet<&WorkloadName> = pods.iter().map(|p| &p.name).collect();
        entries.retain(|name, _| names.contains(name));
        for p in pods {
            entries.entry(p.name.clone()).and_modify(|e| e.pod = p.clone()).or_insert_with(|| Entry {
                pod: p.clone(),
                history: VecDeque::new(),
                last_scrape: None,
                last_error: None,
            });
        }
    }

    /// Records a scrape of `name` made at `at` (unix seconds).
    pub fn record(&self, name: &WorkloadName, at: f64, result: Result<Vec<Sample>, String>) {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(name) else { return };
        entry.last_scrape = Some(at);
        match result {
            Ok(samples) => {
                entry.last_error = None;
                entry.history.push_back(Snapshot { at, samples: Arc::new(keep(samples)) });
                while entry.history.len() > self.capacity
                    || entry.history.front().is_some_and(|s| s.at < at - self.retention)
                {
                    entry.history.pop_front();
                }
            }
            Err(e) => entry.last_error = Some(e),
        }
    }

    /// A copy of everything (snapshots share their samples).
    pub fn view(&self) -> View {
        View { entries: self.lock().values().cloned().collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::NsName;
    use crate::telemetry::prom::parse;

    fn pod(name: &str) -> Pod {
        Pod {
            name: NsName::new("default", name),
            workload: name.into(),
            labels: BTreeMap::new(),
            address: "10.0.0.1".parse().unwrap(),
            meshed: true,
            identity: String::new(),
        }
    }

    #[test]
    fn keeps_a_bounded_history_of_known_pods() {
        let store = Store::new(Duration::from_secs(20), Duration::from_secs(5));
        store.set_pods(&[pod("a"), pod("b")]);
        let a = NsName::new("default", "a");
        for i in 0..10 {
            let text = format!("weft_responses_total{{direction=\"inbound\"}} {i}\nweft_other 1\n");
            store.record(&a, f64::from(i) * 5.0, Ok(parse(&text)));
        }
        store.record(&NsName::new("default", "nobody"), 1.0, Ok(Vec::new()));
        let view = store.view();
        assert_eq!(view.entries.len(), 2);
        let times: Vec<f64> = view.entries[0].history.iter().map(|s| s.at).collect();
        assert_eq!(times, [25.0, 30.0, 35.0, 40.0, 45.0], "20 s back from the last");
        assert_eq!(view.entries[0].history[0].samples.len(), 1, "only the families telemetry reads");

        store.record(&a, 50.0, Err("connection refused".into()));
        let view = store.view();
        assert_eq!(
            (view.entries[0].last_scrape, view.entries[0].last_error.as_deref()),
            (Some(50.0), Some("connection refused"))
        );
        assert_eq!(view.entries[0].history.len(), 5, "a failed scrape keeps the history");

        store.set_pods(&[pod("b")]);
        assert_eq!(store.view().entries.iter().map(|e| e.pod.name.name.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}

//! Writing back what the control plane made of each policy object: status
//! conditions (through the status subresource) and, for refused objects,
//! a Warning Event.
//!
//! One task owns every write, so an object's status is written by one
//! writer in order. A status is written only when it differs (transition
//! times aside) from what the object shows, so our own writes, which come
//! back through the watch, end the loop there. Routes' statuses depend on
//! other objects (their parent and backend Services): they are evaluated
//! again whenever the index has changed, at most once a second.

use std::collections::HashMap;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Client, Resource as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::policy::{self, CONTROLLER_NAME};
use crate::index::{Index, NsName};
use crate::policy::Kind;
use crate::shutdown::Shutdown;

/// What the status task is told.
#[derive(Debug)]
pub enum Job {
    /// An object was listed or changed; `valid` is our verdict on it.
    Seen { kind: Kind, obj: Box<DynamicObject>, valid: Result<(), String> },
    /// An object was deleted: nothing more to write for it.
    Gone { kind: Kind, key: NsName },
}

/// The sending half, given to the policy translators.
pub type Jobs = mpsc::UnboundedSender<Job>;

struct Known {
    obj: DynamicObject,
    valid: Result<(), String>,
    /// The error a Warning Event was last published for.
    warned: Option<String>,
}

/// Runs the status writer until shutdown.
pub async fn run(client: Client, index: Index, mut jobs: mpsc::UnboundedReceiver<Job>, mut shutdown: Shutdown) {
    let reporter = Reporter {
        controller: "weft-control".into(),
        instance: std::env::var("POD_NAME").ok().or_else(|| std::env::var("HOSTNAME").ok()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let mut known: HashMap<(Kind, NsName), Known> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut evaluated_at = 0;
    loop {
        tokio::select! {
            job = jobs.recv() => match job {
                Some(Job::Seen { kind, obj, valid }) => {
                    let key = (kind, NsName::new(obj.metadata.namespace.clone().unwrap_or_default(), obj.metadata.name.clone().unwrap_or_default()));
                    let warned = known.remove(&key).and_then(|k| k.warned);
                    let mut k = Known { obj: *obj, valid, warned };
                    write(&client, &recorder, &index, kind, &mut k).await;
                    known.insert(key, k);
                }
                Some(Job::Gone { kind, key }) => {
                    known.remove(&(kind, key));
                }
                None => return,
            },
            _ = tick.tick() => {
                let version = index.state().version;
                if version == evaluated_at {
                    continue;
                }
                evaluated_at = version;
                for ((kind, _), k) in known.iter_mut().filter(|((kind, _), _)| *kind == Kind::HttpRoute) {
                    write(&client, &recorder, &index, *kind, k).await;
                }
            }
            () = shutdown.signaled() => return,
        }
    }
}

/// Writes `k`'s status if it differs, and warns once per distinct error.
async fn write(client: &Client, recorder: &Recorder, index: &Index, kind: Kind, k: &mut Known) {
    let ar = policy::api_resource(kind);
    let ns = k.obj.metadata.namespace.clone().unwrap_or_default();
    let name = k.obj.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let now = now_rfc3339();
    let generation = k.obj.metadata.generation;
    let status = k.obj.data.get("status");
    let patch = match kind {
        Kind::HttpRoute => {
            let state = index.state();
            let ours = policy::route_conditions(&k.obj, &k.valid, &state);
            route_status(status, &ours, generation, &now)
        }
        Kind::TrafficPolicy | Kind::AccessPolicy => {
            let old = status.and_then(|s| s.get("conditions"));
            let conditions = policy::with_times(&policy::accepted(&k.valid), generation, old, &now);
            (!policy::same_conditions(&conditions, old)).then(|| json!({"conditions": conditions}))
        }
    };
    if let Some(new_status) = patch {
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": new_status}))).await {
            Ok(updated) => k.obj = updated,
            // The object may be gone already (its deletion is on the way),
            // or the API server away: the next change or tick retries.
            Err(e) => tracing::warn!(%kind, %ns, %name, error = %e, "cannot write status"),
        }
    }
    if let Err(e) = &k.valid {
        if k.warned.as_ref() != Some(e) {
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: "Invalid".into(),
                note: Some(truncate(&format!("{e}; the last accepted version (if any) stays in force"), 1024)),
                action: "Validate".into(),
                secondary: None,
            };
            match recorder.publish(&event, &k.obj.object_ref(&ar)).await {
                Ok(()) => k.warned = Some(e.clone()),
                Err(err) => tracing::warn!(%kind, %ns, %name, error = %err, "cannot publish an Event"),
            }
        }
    } else {
        k.warned = None;
    }
}

/// The route's new `status` (`None`: unchanged): our entries replaced,
/// other controllers' entries kept as they are.
fn route_status(
    status: Option<&Value>,
    ours: &[(Value, Vec<policy::Condition>)],
    generation: Option<i64>,
    now: &str,
) -> Option<Value> {
    let empty = Vec::new();
    let parents = status.and_then(|s| s.get("parents")).and_then(Value::as_array).unwrap_or(&empty);
    let mine = |p: &Value| p.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME);
    let mut out: Vec<Value> = parents.iter().filter(|p| !mine(p)).cloned().collect();
    let mut changed = parents.iter().filter(|p| mine(p)).count() != ours.len();
    for (parent_ref, conditions) in ours {
        let old = parents.iter().find(|p| mine(p) && p.get("parentRef") == Some(parent_ref));
        let old_conditions = old.and_then(|p| p.get("conditions"));
        let conditions = policy::with_times(conditions, generation, old_conditions, now);
        changed |= old.is_none() || !policy::same_conditions(&conditions, old_conditions);
        out.push(json!({"parentRef": parent_ref, "controllerName": CONTROLLER_NAME, "conditions": conditions}));
    }
    changed.then(|| json!({"parents": out}))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kubernetes::policy::Condition;

    #[test]
    fn route_status_keeps_other_controllers_and_writes_only_changes() {
        let p = json!({"group": "", "kind": "Service", "name": "web"});
        let ok = vec![Condition { type_: "Accepted", status: true, reason: "Accepted", message: "in force".into() }];
        let other = json!({"parentRef": {"name": "edge"}, "controllerName": "example.com/gw", "conditions": []});
        let first = route_status(Some(&json!({"parents": [other]})), &[(p.clone(), ok.clone())], Some(1), "T0")
            .expect("a new entry is a change");
        let parents = first["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0]["controllerName"], "example.com/gw");
        assert_eq!(parents[1]["controllerName"], CONTROLLER_NAME);
        assert_eq!(parents[1]["conditions"][0]["lastTransitionTime"], "T0");
        assert_eq!(route_status(Some(&first), &[(p.clone(), ok)], Some(1), "T1"), None, "nothing changed");
        assert!(route_status(Some(&first), &[], Some(1), "T1").is_some(), "a parent dropped is a change");
    }
}

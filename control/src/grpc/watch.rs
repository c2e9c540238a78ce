//! One watch stream: a task that recomputes its answer whenever the index
//! publishes a new state, and sends it only when it differs from the last
//! one sent (versions aside).
//!
//! ```text
//!  Index ──watch──► task: answer = compute(&state)
//!                         unchanged? skip : send ──mpsc(1)──► tonic ──► proxy
//! ```
//!
//! The same task serves any `watch` channel ([`Streams::spawn_on`]): the
//! CA's trust anchors are streamed that way.
//!
//! A task over the index also takes the answer's [`Stamp`]: when a new
//! state leaves the stamp as it was, the answer cannot have changed and is
//! not recomputed, so a change wakes every stream but costs work only in
//! those that watch what changed.
//!
//! The mpsc has room for one message: a slow client slows only its own
//! task, and since `watch` keeps only the newest state, the task skips
//! straight to the latest answer once the client catches up. The task ends
//! when the client goes away (the receiver is dropped), or at shutdown,
//! when it sends UNAVAILABLE so that the proxy reconnects with backoff.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::answers::Asker;
use crate::index::{Index, Stamp, State};
use crate::metrics::{Metrics, StreamKind};
use crate::shutdown::Shutdown;

/// A full-snapshot message that carries the state version.
pub trait Snapshot: Clone + PartialEq + Send + Sync + 'static {
    fn version_mut(&mut self) -> &mut u64;
}

impl Snapshot for weft_api::discovery::EndpointSet {
    fn version_mut(&mut self) -> &mut u64 {
        &mut self.version
    }
}

impl Snapshot for weft_api::policy::OutboundPolicy {
    fn version_mut(&mut self) -> &mut u64 {
        &mut self.version
    }
}

impl Snapshot for weft_api::policy::InboundPolicy {
    fn version_mut(&mut self) -> &mut u64 {
        &mut self.version
    }
}

impl Snapshot for weft_api::identity::TrustBundle {
    fn version_mut(&mut self) -> &mut u64 {
        &mut self.version
    }
}

/// What a stream task needs from the server.
#[derive(Clone, Debug)]
pub struct Streams {
    pub index: Index,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
}

impl Streams {
    /// Starts a stream task answering with `compute` and returns the
    /// response stream.
    /// `stamp` says what the answer depends on (see [`Stamp`]).
    pub fn spawn<T, G, F>(
        &self,
        kind: StreamKind,
        proxy: String,
        stamp: G,
        compute: F,
    ) -> ReceiverStream<Result<T, Status>>
    where
        T: Snapshot,
        G: Fn(&State) -> Stamp + Send + 'static,
        F: Fn(&State) -> T + Send + 'static,
    {
        self.spawn_on(
            self.index.subscribe(),
            changed_at,
            kind,
            proxy,
            move |s: &Arc<State>| Some(stamp(s)),
            move |s: &Arc<State>| compute(s),
        )
    }

    /// [`Self::spawn`] for a question other streams may ask too (the same
    /// target's policy from every replica of a Deployment): the answer is
    /// computed once per stamp and shared through `asker`'s slot.
    pub fn spawn_shared<K, T, G, F>(
        &self,
        kind: StreamKind,
        proxy: String,
        asker: Asker<K, T>,
        stamp: G,
        compute: F,
    ) -> ReceiverStream<Result<T, Status>>
    where
        K: Hash + Eq + Send + 'static,
        T: Snapshot,
        G: Fn(&State) -> Stamp + Send + 'static,
        F: Fn(&State) -> T + Send + 'static,
    {
        self.start(
            self.index.subscribe(),
            changed_at,
            kind,
            proxy,
            move |s: &Arc<State>| Some(stamp(s)),
            move |s: &Arc<State>, stamp: Option<&Stamp>| {
                let answer = match stamp {
                    Some(stamp) => asker.answer(s, stamp, &compute),
                    None => versionless(compute(s)).1,
                };
                (s.version, answer)
            },
        )
    }

    /// [`Self::spawn`] over any watched value (the trust anchors, say);
    /// `changed_at` gives the push latency metric its start, if known, and
    /// `stamp` what the answer depends on (`None`: recompute every time).
    pub fn spawn_on<S, K, T, G, F>(
        &self,
        states: watch::Receiver<S>,
        changed_at: fn(&S) -> Option<Instant>,
        kind: StreamKind,
        proxy: String,
        stamp: G,
        compute: F,
    ) -> ReceiverStream<Result<T, Status>>
    where
        S: Clone + Send + Sync + 'static,
        K: PartialEq + Send + 'static,
        T: Snapshot,
        G: Fn(&S) -> Option<K> + Send + 'static,
        F: Fn(&S) -> T + Send + 'static,
    {
        self.start(states, changed_at, kind, proxy, stamp, move |s: &S, _: Option<&K>| versionless(compute(s)))
    }

    /// The stream task. `answer` gives the state's answer, with version 0,
    /// and the version to send it with.
    fn start<S, K, T, G, A>(
        &self,
        mut states: watch::Receiver<S>,
        changed_at: fn(&S) -> Option<Instant>,
        kind: StreamKind,
        proxy: String,
        stamp: G,
        answer: A,
    ) -> ReceiverStream<Result<T, Status>>
    where
        S: Clone + Send + Sync + 'static,
        K: PartialEq + Send + 'static,
        T: Snapshot,
        G: Fn(&S) -> Option<K> + Send + 'static,
        A: Fn(&S, Option<&K>) -> (u64, Arc<T>) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1);
        let mut shutdown = self.shutdown.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _guard = metrics.open_stream(kind, &proxy);
            let mut last: Option<Arc<T>> = None;
            let mut last_stamp: Option<K> = None;
            loop {
                let state = states.borrow_and_update().clone();
                let stamp = stamp(&state);
                let unchanged = last.is_some() && stamp.is_some() && stamp == last_stamp;
                if unchanged {
                    metrics.skipped(kind);
                } else {
                    let (version, answer) = answer(&state, stamp.as_ref());
                    last_stamp = stamp;
                    // A shared answer is often the very one sent last time.
                    let same = last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &answer) || **l == *answer);
                    if !same {
                        let first = last.is_none();
                        let mut message = T::clone(&answer);
                        *message.version_mut() = version;
                        last = Some(answer);
                        tokio::select! {
                            sent = tx.send(Ok(message)) => if sent.is_err() { return },
                            () = shutdown.signaled() => break,
                        }
                        let latency = if first { None } else { changed_at(&state).map(|t| t.elapsed()) };
                        metrics.pushed(kind, latency);
                        tracing::debug!(kind = kind.as_str(), %proxy, version, "pushed");
                    }
                }
                tokio::select! {
                    changed = states.changed() => if changed.is_err() { break },
                    () = tx.closed() => return,
                    () = shutdown.signaled() => break,
                }
            }
            let _ = tx.try_send(Err(Status::unavailable("the control plane is shutting down; reconnect")));
        });
        ReceiverStream::new(rx)
    }
}

/// When an index state was published: push latency is measured from there.
fn changed_at(state: &Arc<State>) -> Option<Instant> {
    Some(state.changed_at)
}

/// `answer`'s version, and `answer` with version 0 (answers are compared
/// without it).
fn versionless<T: Snapshot>(mut answer: T) -> (u64, Arc<T>) {
    let version = std::mem::take(answer.version_mut());
    (version, Arc::new(answer))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;
    use weft_api::discovery::EndpointSet;

    use super::*;
    use crate::index::{
        Event, MeshConfig, Protocol, Service, ServiceName, ServicePort, Target, Workload, WorkloadName,
    };

    fn workload(ns: &str, name: &str) -> Workload {
        Workload {
            name: WorkloadName::new(ns, name),
            service_account: String::new(),
            labels: [("app".to_string(), "web".to_string())].into(),
            address: "127.0.0.2".parse().expect("ip"),
            ports: vec![8080],
            meshed: true,
            ready: true,
            zone: String::new(),
            opaque_ports: Vec::new(),
        }
    }

    /// An index holding Service `default/web` (port 80 → 8080, selecting
    /// `app=web`) and no workload yet.
    fn web_index() -> Index {
        let index = Index::new(MeshConfig::default());
        index.apply([Event::ServiceApplied(Service {
            name: ServiceName::new("default", "web"),
            virtual_ip: None,
            ports: vec![ServicePort { name: None, port: 80, target_port: 8080, protocol: Protocol::Http }],
            selector: [("app".to_string(), "web".to_string())].into(),
            endpoints: Default::default(),
        })]);
        index
    }

    #[tokio::test(start_paused = true)]
    async fn streams_asking_the_same_share_one_computation_per_change() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use crate::grpc::answers::Answers;

        let index = web_index();
        let (_trigger, shutdown) = crate::shutdown::channel();
        let streams = Streams { index: index.clone(), metrics: Arc::new(Metrics::default()), shutdown };
        let answers: Answers<Target, EndpointSet> = Answers::default();
        let computed = Arc::new(AtomicUsize::new(0));
        let target: Target = "web:80".parse().expect("target");
        let mut open = Vec::new();
        for i in 0..3 {
            let (t, asked, counter) = (target.clone(), target.clone(), computed.clone());
            open.push(streams.spawn_shared(
                StreamKind::Discovery,
                format!("p{i}"),
                answers.ask(target.clone()),
                move |s| s.resolve_stamp(&t, "default"),
                move |s| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    s.resolve(&asked, "default")
                },
            ));
        }
        for stream in &mut open {
            assert_eq!(stream.next().await.expect("snapshot").expect("ok").version, 1);
        }
        assert_eq!(computed.load(Ordering::Relaxed), 1, "three streams, one computation");

        index.apply([Event::WorkloadApplied(workload("default", "web-0"))]);
        for stream in &mut open {
            let update = stream.next().await.expect("update").expect("ok");
            assert_eq!((update.version, update.endpoints.len()), (2, 1), "each sent with the current version");
        }
        assert_eq!(computed.load(Ordering::Relaxed), 2, "and one more for the change");
    }

    // Paused time: a timeout elapses only once every task is idle, so
    // "nothing was sent" is observed deterministically and instantly.
    #[tokio::test(start_paused = true)]
    async fn sends_a_snapshot_then_only_changed_answers() {
        let index = web_index();
        let metrics = Arc::new(Metrics::default());
        let (trigger, shutdown) = crate::shutdown::channel();
        let streams = Streams { index: index.clone(), metrics: metrics.clone(), shutdown };
        let target: Target = "web:80".parse().expect("target");
        let t = target.clone();
        let mut stream: ReceiverStream<Result<EndpointSet, Status>> = streams.spawn(
            StreamKind::Discovery,
            "p".into(),
            move |s| s.resolve_stamp(&t, "default"),
            move |s| s.resolve(&target, "default"),
        );
        let quiet = Duration::from_secs(1);

        let first = stream.next().await.expect("snapshot").expect("ok");
        assert_eq!((first.version, first.endpoints.len()), (1, 0));
        assert_eq!((metrics.streams(StreamKind::Discovery), metrics.connected_proxies()), (1, 1));

        // A change elsewhere bumps the version but not this answer.
        index.apply([Event::WorkloadApplied(workload("other", "x"))]);
        assert!(tokio::time::timeout(quiet, stream.next()).await.is_err(), "unchanged answers are not sent");
        assert_eq!(metrics.skips(StreamKind::Discovery), 1, "nor recomputed: no workload of web changed");

        index.apply([Event::WorkloadApplied(workload("default", "web-0"))]);
        let update = stream.next().await.expect("update").expect("ok");
        assert_eq!((update.version, update.endpoints.len()), (3, 1), "sent with the current version");
        assert_eq!(metrics.pushes(StreamKind::Discovery), 2);
        assert!(metrics.push_latency_quantile(1.0).is_some(), "updates record their latency");

        trigger.fire();
        let last = stream.next().await.expect("status");
        assert_eq!(last.expect_err("unavailable").code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none());
        // The task has ended and dropped its guard.
        tokio::task::yield_now().await;
        assert_eq!((metrics.streams(StreamKind::Discovery), metrics.connected_proxies()), (0, 0));
    }
}

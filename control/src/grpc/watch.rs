//! One watch stream: recomputes its answer whenever the index publishes a
//! new state, and sends it only when it differs from the last one sent
//! (versions aside).
//!
//! ```text
//!  Index ──watch──► Updates::next: answer = compute(&state)
//!                     unchanged? wait again : yield ──► tonic ──► proxy
//! ```
//!
//! The stream is the response body itself, polled by the HTTP/2 stream's
//! own task: a change wakes that task, which computes (or takes the shared
//! answer), encodes and hands it to the connection. There is no task or
//! channel of our own in between; with a thousand proxies watching, that
//! hop was a thousand more wake-ups per change.
//!
//! The same stream serves any `watch` channel ([`Streams::open_on`]): the
//! CA's trust anchors are streamed that way.
//!
//! A stream over the index also takes the answer's [`Stamp`]: when a new
//! state leaves the stamp as it was, the answer cannot have changed and is
//! not recomputed, so a change wakes every stream but costs work only in
//! those that watch what changed.
//!
//! A slow client holds back only its own stream: the body is polled when
//! HTTP/2 has room for it, and since `watch` keeps only the newest state,
//! the stream then skips straight to the latest answer. The stream ends
//! when the client goes away (hyper drops it), or at shutdown, after an
//! UNAVAILABLE status, so that the proxy reconnects with backoff.

use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::Stream;
use tokio::sync::watch;
use tonic::Status;

use super::answers::Asker;
use crate::index::{Index, Stamp, State};
use crate::metrics::{Metrics, StreamGuard, StreamKind};
use crate::shutdown::Shutdown;

/// A watch stream as tonic serves it.
pub type Updates<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

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

/// What a watch stream needs from the server.
#[derive(Clone, Debug)]
pub struct Streams {
    pub index: Index,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
}

impl Streams {
    /// A stream answering with `compute` at every state of the index.
    /// `stamp` says what the answer depends on (see [`Stamp`]).
    pub fn open<T, G, F>(&self, kind: StreamKind, proxy: String, stamp: G, compute: F) -> Updates<T>
    where
        T: Snapshot,
        G: Fn(&State) -> Stamp + Send + 'static,
        F: Fn(&State) -> T + Send + 'static,
    {
        self.start(
            self.index.subscribe(),
            changed_at,
            kind,
            proxy,
            move |s: &Arc<State>| stamp(s),
            move |s: &Arc<State>, _: &Stamp| versionless(compute(s)),
        )
    }

    /// [`Self::open`] for a question other streams may ask too (the same
    /// target's policy from every replica of a Deployment): the answer is
    /// computed once per stamp and shared through `asker`'s slot.
    pub fn open_shared<K, T, G, F>(
        &self,
        kind: StreamKind,
        proxy: String,
        asker: Asker<K, T>,
        stamp: G,
        compute: F,
    ) -> Updates<T>
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
            move |s: &Arc<State>| stamp(s),
            move |s: &Arc<State>, stamp: &Stamp| (s.version, asker.answer(s, stamp, &compute)),
        )
    }

    /// [`Self::open`] over any watched value (the trust anchors, say);
    /// `changed_at` gives the push latency metric its start, if known, and
    /// `stamp` what the answer depends on (`None`: recompute every time).
    pub fn open_on<S, K, T, G, F>(
        &self,
        states: watch::Receiver<S>,
        changed_at: fn(&S) -> Option<Instant>,
        kind: StreamKind,
        proxy: String,
        stamp: G,
        compute: F,
    ) -> Updates<T>
    where
        S: Clone + Send + Sync + 'static,
        K: PartialEq + Send + 'static,
        T: Snapshot,
        G: Fn(&S) -> Option<K> + Send + 'static,
        F: Fn(&S) -> T + Send + 'static,
    {
        self.start(states, changed_at, kind, proxy, stamp, move |s: &S, _: &Option<K>| versionless(compute(s)))
    }

    /// The stream. `answer` gives the state's answer, with version 0, and
    /// the version to send it with; a stamp equal to the last one's (and
    /// not `None`) means the last answer still holds.
    fn start<S, K, T, G, A>(
        &self,
        states: watch::Receiver<S>,
        changed_at: fn(&S) -> Option<Instant>,
        kind: StreamKind,
        proxy: String,
        stamp: G,
        answer: A,
    ) -> Updates<T>
    where
        S: Clone + Send + Sync + 'static,
        K: Stamped + Send + 'static,
        T: Snapshot,
        G: Fn(&S) -> K + Send + 'static,
        A: Fn(&S, &K) -> (u64, Arc<T>) + Send + 'static,
    {
        let watcher = Watcher {
            _open: self.metrics.open_stream(kind, &proxy),
            states,
            changed_at,
            kind,
            proxy,
            stamp,
            answer,
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            last: None,
        };
        Box::pin(futures_util::stream::unfold(Some(watcher), |watcher| async move {
            let mut watcher = watcher?;
            match watcher.next().await {
                Some(message) => Some((Ok(message), Some(watcher))),
                // The last message; the watcher (and its count in the
                // metrics) goes with it.
                None => Some((Err(Status::unavailable("the control plane is shutting down; reconnect")), None)),
            }
        }))
    }
}

/// A stamp: whether two states' answers must be equal.
trait Stamped {
    /// True when the answer for `self` is the one computed for `last`.
    fn holds(&self, last: &Self) -> bool;
}

impl Stamped for Stamp {
    fn holds(&self, last: &Self) -> bool {
        self == last
    }
}

/// Stamps of [`Streams::open_on`]: `None` promises nothing.
impl<K: PartialEq> Stamped for Option<K> {
    fn holds(&self, last: &Self) -> bool {
        self.is_some() && self == last
    }
}

/// The state of one watch stream between messages.
struct Watcher<S, K, T, G, A> {
    states: watch::Receiver<S>,
    changed_at: fn(&S) -> Option<Instant>,
    kind: StreamKind,
    proxy: String,
    stamp: G,
    answer: A,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    /// The answer last sent and the stamp it was computed for.
    last: Option<(Arc<T>, K)>,
    /// Counts the stream as open in the metrics while it lives.
    _open: StreamGuard,
}

impl<S, K, T, G, A> Watcher<S, K, T, G, A>
where
    S: Clone + Send + Sync + 'static,
    K: Stamped + Send + 'static,
    T: Snapshot,
    G: Fn(&S) -> K + Send + 'static,
    A: Fn(&S, &K) -> (u64, Arc<T>) + Send + 'static,
{
    /// The next message: the first answer at once, then the next answer
    /// that differs from the last one sent. `None` at shutdown, or when the
    /// watched value is gone.
    async fn next(&mut self) -> Option<T> {
        loop {
            let first = self.last.is_none();
            if !first {
                tokio::select! {
                    changed = self.states.changed() => changed.ok()?,
                    () = self.shutdown.signaled() => return None,
                }
            }
            let state = self.states.borrow_and_update().clone();
            let stamp = (self.stamp)(&state);
            if let Some((_, last_stamp)) = &self.last
                && stamp.holds(last_stamp)
            {
                self.metrics.skipped(self.kind);
                continue;
            }
            let (version, answer) = (self.answer)(&state, &stamp);
            // A shared answer is often the very one sent last time.
            let same = self.last.as_ref().is_some_and(|(l, _)| Arc::ptr_eq(l, &answer) || **l == *answer);
            let message = (!same).then(|| T::clone(&answer));
            self.last = Some((answer, stamp));
            let Some(mut message) = message else { continue };
            *message.version_mut() = version;
            let latency = if first { None } else { (self.changed_at)(&state).map(|t| t.elapsed()) };
            self.metrics.pushed(self.kind, latency);
            tracing::debug!(kind = self.kind.as_str(), proxy = %self.proxy, version, "pushed");
            return Some(message);
        }
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
            open.push(streams.open_shared(
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

    #[tokio::test(start_paused = true)]
    async fn a_client_that_falls_behind_gets_only_the_newest_answer() {
        let index = web_index();
        let (_trigger, shutdown) = crate::shutdown::channel();
        let streams = Streams { index: index.clone(), metrics: Arc::new(Metrics::default()), shutdown };
        let target: Target = "web:80".parse().expect("target");
        let t = target.clone();
        let mut stream = streams.open(
            StreamKind::Discovery,
            "p".into(),
            move |s| s.resolve_stamp(&t, "default"),
            move |s| s.resolve(&target, "default"),
        );
        assert_eq!(stream.next().await.expect("snapshot").expect("ok").version, 1);

        // Three changes while the client reads nothing: nothing queues up.
        for name in ["web-0", "web-1", "web-2"] {
            index.apply([Event::WorkloadApplied(workload("default", name))]);
        }
        let update = stream.next().await.expect("update").expect("ok");
        assert_eq!((update.version, update.endpoints.len()), (4, 3), "the newest state, in one message");
        let quiet = Duration::from_secs(1);
        assert!(tokio::time::timeout(quiet, stream.next()).await.is_err(), "and nothing older after it");
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
        let mut stream: Updates<EndpointSet> = streams.open(
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
        // The stream has ended and dropped its guard.
        assert_eq!((metrics.streams(StreamKind::Discovery), metrics.connected_proxies()), (0, 0));
    }
}

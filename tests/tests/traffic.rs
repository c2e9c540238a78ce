//! Traffic policy end to end: HTTPRoutes and TrafficPolicies written to the
//! control plane's policy directory steer real HTTP between pods.
//!
//! ```text
//! cp: weft-control (services web, web-v1, web-v2; policy dir)
//! client: curl ─► proxy ══► replicas: testkit http-server --name NAME ◄─ proxy (registered, labels)
//! ```
//!
//! Each replica names itself in `x-weft-server`, so a test counts where
//! requests went from the client's side.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weft_tests::{ControlPlane, Mesh, Pod, Proc, Proxy, eventually};

const WEB: &str = "198.18.0.200:80";
const WEB_V1: &str = "198.18.0.201:80";
const STORE: &str = "198.18.0.210:6379";
const SERVICES: &str = "services:
  - name: web
    namespace: default
    virtualIP: 198.18.0.200
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
  - name: web-v1
    namespace: default
    virtualIP: 198.18.0.201
    selector: {app: web, version: v1}
    ports: [{port: 80, targetPort: 8080}]
  - name: web-v2
    namespace: default
    virtualIP: 198.18.0.202
    selector: {app: web, version: v2}
    ports: [{port: 80, targetPort: 8080}]
  - name: store
    namespace: default
    virtualIP: 198.18.0.210
    selector: {app: store}
    ports: [{port: 6379, targetPort: 6379}]
";

struct Replica {
    pod: Pod,
    app: Proc,
    _proxy: Proxy,
}

impl Replica {
    /// Tells the replica's app to answer every `n`th request 503 (0: never).
    fn fail_every(&self, n: u32) {
        let url = format!("http://127.0.0.1:8080/control/fail-every?n={n}");
        let run = self.pod.exec("curl", &["-sS", "--max-time", "5", &url]);
        assert_eq!(run.stdout.trim(), "ok", "{run}");
    }
}

struct Fixture {
    mesh: Mesh,
    cp: ControlPlane,
    client: Pod,
    proxy: Proxy,
    replicas: BTreeMap<String, Replica>,
}

/// A control plane, replicas `(name, labels, extra testkit args)` and a
/// client whose proxy already balances over every `app=web` replica.
fn fixture(replicas: &[(&str, &str, &[&str])]) -> Fixture {
    let mesh = Mesh::new();
    let cp = mesh.pod("cp").run_control(SERVICES, &[]);
    let mut started = BTreeMap::new();
    for (name, labels, extra) in replicas {
        let pod = mesh.pod(name);
        let mut args = vec!["http-server", "--listen", "0.0.0.0:8080", "--name", name];
        args.extend_from_slice(extra);
        let app = pod.spawn_testkit("app", &args);
        pod.wait_listening(8080);
        let proxy = pod.run_registered_proxy(&cp, name, labels, 8080, &[]);
        started.insert((*name).to_owned(), Replica { pod, app, _proxy: proxy });
    }
    let client = mesh.pod("client");
    let proxy = client.run_proxy(&["--control-plane", &cp.url]);
    let fixture = Fixture { mesh, cp, client, proxy, replicas: started };
    let want = fixture.replicas.values().map(|r| r.pod.addr(8080).to_string()).collect::<Vec<_>>();
    eventually(Duration::from_secs(10), "the client balances over every replica", || {
        let _ = fixture.client.exec("curl", &["-s", "-o", "/dev/null", "--max-time", "2", "http://198.18.0.200/"]);
        let mut got = fixture.proxy.endpoints(WEB);
        let mut want = want.clone();
        got.sort();
        want.sort();
        if got == want { Ok(()) } else { Err(format!("endpoints {got:?}, want {want:?}")) }
    });
    fixture
}

impl Fixture {
    /// Writes `yaml` as `file` in the policy directory and waits until the
    /// client's proxy runs a policy for `target` made from `source`
    /// (`Kind/namespace/name`).
    fn apply(&self, file: &str, yaml: &str, target: &str, source: &str) {
        self.place(file, yaml);
        self.wait_policy(target, &format!("{source} in force"), || {
            let sources = self.proxy.policy_sources(target);
            if sources.iter().any(|s| s == source) { Ok(()) } else { Err(format!("policy sources {sources:?}")) }
        });
    }

    /// Replaces `file`, which already shapes `target`'s policy, with `yaml`
    /// and waits until the client's proxy runs a newer policy version for
    /// `target`. (The sources stay the same, so only the version tells the
    /// old policy from the new one.)
    fn rewrite(&self, file: &str, yaml: &str, target: &str) {
        let before = self.proxy.policy_version(target).expect("a policy to rewrite");
        self.place(file, yaml);
        self.wait_policy(target, &format!("{file} rewritten"), || match self.proxy.policy_version(target) {
            Some(v) if v > before => Ok(()),
            v => Err(format!("policy version {v:?}, {before} before the rewrite")),
        });
    }

    /// Writes a policy file whole (the control plane never reads half of it).
    fn place(&self, file: &str, yaml: &str) {
        let path = self.cp.policy_dir.join(file);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, yaml).expect("writing a policy file");
        std::fs::rename(&tmp, &path).expect("placing a policy file");
    }

    /// Removes `file` from the policy directory and waits until `source`
    /// no longer shapes `target`'s policy.
    fn remove(&self, file: &str, target: &str, source: &str) {
        std::fs::remove_file(self.cp.policy_dir.join(file)).expect("removing a policy file");
        self.wait_policy(target, &format!("{source} gone"), || {
            let sources = self.proxy.policy_sources(target);
            if sources.iter().any(|s| s == source) { Err(format!("policy sources {sources:?}")) } else { Ok(()) }
        });
    }

    /// Waits until `check` (reading the client proxy's `/config` once)
    /// holds for `target`.
    fn wait_policy(&self, target: &str, what: &str, check: impl Fn() -> Result<(), String>) {
        eventually(Duration::from_secs(10), what, || {
            // The proxy watches a target once it has been asked for it.
            let _ =
                self.client.exec("curl", &["-s", "-o", "/dev/null", "--max-time", "2", &format!("http://{target}/")]);
            check()
        });
    }

    /// `n` requests to `url_base` + `[1-n]` on one connection: (status,
    /// answering replica) of each.
    fn send(&self, url_base: &str, n: usize, extra: &[&str]) -> Vec<(u16, String)> {
        self.client.requests(url_base, n, extra)
    }

    fn metric(&self, name: &str) -> f64 {
        self.proxy.metrics().sum(name, &[])
    }
}

fn count(results: &[(u16, String)], server: &str) -> usize {
    results.iter().filter(|(_, s)| s == server).count()
}

fn statuses(results: &[(u16, String)]) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for (code, _) in results {
        *m.entry(*code).or_default() += 1;
    }
    m
}

fn route(rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: web, port: 80}}]
  rules:
{rules}"
    )
}

fn traffic(name: &str, target: &str, spec: &str) -> String {
    format!(
        "apiVersion: policy.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRef: {target}
{spec}"
    )
}

const ROUTE: &str = "HTTPRoute/default/web";

#[test]
fn weighted_splits_and_header_and_cookie_matches_route_exactly() {
    let f = fixture(&[("v1", "app=web,version=v1", &[]), ("v2", "app=web,version=v2", &[])]);

    // 90/10 over 2,000 requests.
    let split = |v1: u32, v2: u32| {
        route(&format!(
            "    - backendRefs: [{{name: web-v1, port: 80, weight: {v1}}}, {{name: web-v2, port: 80, weight: {v2}}}]\n"
        ))
    };
    f.apply("route.yaml", &split(90, 10), WEB, ROUTE);
    let v2_counted = || {
        let m = f.proxy.metrics();
        m.sum("weft_route_requests_total", &[("route", "default/web#0"), ("backend", "web-v2.default:80")])
    };
    // (The requests that waited for the route are counted too: take a delta.)
    let v2_before = v2_counted();
    let results = f.send("http://198.18.0.200/split-", 2000, &[]);
    assert_eq!(statuses(&results), BTreeMap::from([(200, 2000)]));
    let share = count(&results, "v2") as f64 / 20.0;
    eprintln!("measured: v2 received {share:.1} % of 2000 requests under a 90/10 split");
    assert!((7.0..=13.0).contains(&share), "v2 got {share:.1} % under a 10 % weight");
    let v2 = v2_counted() - v2_before;
    assert_eq!(v2 as usize, count(&results, "v2"), "weft_route_requests_total disagrees with what the client saw");

    // An in-flight request finishes under the policy it started with.
    // (Under 90/10 it could land on v2; send it under a v1-only split.)
    f.rewrite("route.yaml", &split(100, 0), WEB);
    let client = f.client.clone();
    let slow = std::thread::spawn(move || {
        let args = ["-s", "-o", "/dev/null", "-w", "%{http_code} %header{x-weft-server}", "--max-time", "10"];
        client.exec("curl", &[&args[..], &["http://198.18.0.200/delay?ms=1500"]].concat())
    });
    // Let the slow request start before the policy changes under it.
    eventually(Duration::from_secs(5), "the slow request reached v1", || {
        let app_log = f.replicas["v1"].app.stdout();
        if app_log.contains("/delay?ms=1500") { Ok(()) } else { Err("not yet".into()) }
    });

    // 0/100: nothing to the old backend.
    f.rewrite("route.yaml", &split(0, 100), WEB);
    let results = f.send("http://198.18.0.200/all-v2-", 200, &[]);
    assert_eq!(count(&results, "v2"), 200, "under 0/100: {:?}", statuses(&results));
    let in_flight = slow.join().expect("the slow request's thread");
    assert_eq!(in_flight.stdout, "200 v1", "the in-flight request did not finish under its own policy: {in_flight}");

    // A/B: a header, a cookie, everything else.
    let ab = route(
        "    - matches: [{headers: [{name: x-version, value: v2}]}]
      backendRefs: [{name: web-v2, port: 80}]
    - matches: [{headers: [{name: cookie, type: RegularExpression, value: '(.*; )?group=b(; .*)?'}]}]
      backendRefs: [{name: web-v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs: [{name: web-v1, port: 80}]
",
    );
    f.rewrite("route.yaml", &ab, WEB);
    let by_header = f.send("http://198.18.0.200/h-", 100, &["-H", "x-version: v2"]);
    let by_cookie = f.send("http://198.18.0.200/c-", 100, &["-H", "cookie: session=42; group=b; theme=dark"]);
    let other_cookie = f.send("http://198.18.0.200/o-", 100, &["-H", "cookie: group=bb"]);
    let plain = f.send("http://198.18.0.200/p-", 100, &[]);
    assert_eq!(count(&by_header, "v2"), 100, "x-version: v2 → {:?}", by_header.first());
    assert_eq!(count(&by_cookie, "v2"), 100, "cookie group=b → {:?}", by_cookie.first());
    assert_eq!(count(&other_cookie, "v1"), 100, "cookie group=bb → {:?}", other_cookie.first());
    assert_eq!(count(&plain, "v1"), 100, "no header → {:?}", plain.first());

    // Routes that match nothing: 404 from the proxy.
    let api_only = route(
        "    - matches: [{path: {type: PathPrefix, value: /api}}]\n      backendRefs: [{name: web-v1, port: 80}]\n",
    );
    f.rewrite("route.yaml", &api_only, WEB);
    let no_route_before = f.metric("weft_no_route_total");
    assert_eq!(statuses(&f.send("http://198.18.0.200/api/x-", 20, &[])), BTreeMap::from([(200, 20)]));
    assert_eq!(statuses(&f.send("http://198.18.0.200/apix-", 20, &[])), BTreeMap::from([(404, 20)]));
    assert_eq!(f.metric("weft_no_route_total") - no_route_before, 20.0, "each unrouted request counted once");

    // A mirror: v1 answers, v2 gets a copy of each request.
    let mirrored = route(
        "    - backendRefs: [{name: web-v1, port: 80}]
      filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: web-v2, port: 80}}
",
    );
    f.rewrite("route.yaml", &mirrored, WEB);
    let mirrored = |outcome: &str| f.proxy.metrics().sum("weft_mirror_requests_total", &[("outcome", outcome)]);
    let answered_before = mirrored("answered");
    let results = f.send("http://198.18.0.200/mirror-", 50, &["-X", "POST", "-d", "copy me"]);
    assert_eq!(count(&results, "v1"), 50, "the mirror answered instead of the backend: {results:?}");
    eventually(Duration::from_secs(5), "v2 received a copy of each request", || {
        let copies = f.replicas["v2"].app.stdout().lines().filter(|l| l.contains(" POST /mirror-")).count();
        if copies == 50 { Ok(()) } else { Err(format!("{copies} copies")) }
    });
    // Whole copies: each was answered by v2 (an incomplete body fails).
    eventually(Duration::from_secs(5), "every copy was answered", || {
        let answered = mirrored("answered") - answered_before;
        if answered == 50.0 { Ok(()) } else { Err(format!("{answered} answered, {} failed", mirrored("failed"))) }
    });
    // Bodiless requests too.
    let answered_before = mirrored("answered");
    let gets = f.send("http://198.18.0.200/mirror-get-", 5, &[]);
    assert_eq!(count(&gets, "v1"), 5, "{gets:?}");
    eventually(Duration::from_secs(5), "every GET's copy was answered", || {
        let answered = mirrored("answered") - answered_before;
        if answered == 5.0 { Ok(()) } else { Err(format!("{answered} answered, {} failed", mirrored("failed"))) }
    });
    // Streamed bodies (chunked, larger than the retry buffer) are teed to
    // the mirror as they go: v2 receives each byte for byte. (200 KiB stays
    // under the tee's 256 KiB bound even if the mirror's connection has not
    // started reading yet; giving a copy up is unit-tested in body.rs.)
    let upload = f.client.dir().join("upload.bin");
    std::fs::write(&upload, weft_tests::workload::pattern(200 * 1024)).expect("writing the upload");
    let (skipped_before, failed_before) = (mirrored("skipped"), mirrored("failed"));
    let data = format!("@{}", upload.display());
    let args = ["-sS", "--max-time", "20", "-H", "transfer-encoding: chunked", "--data-binary", &data];
    let url = "http://198.18.0.200/sha256?i=[1-10]";
    let run = f.client.exec("curl", &[&args[..], &[url]].concat());
    let answers: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(answers.len(), 10, "{run}");
    let digest = answers[0];
    assert!(digest.ends_with(&format!("bytes={}", 200 * 1024)) && answers.iter().all(|a| *a == digest), "{run}");
    eventually(Duration::from_secs(10), "v2 received each streamed body whole", || {
        let copies = f.replicas["v2"].app.stdout().lines().filter(|l| *l == digest).count();
        if copies == 10 { Ok(()) } else { Err(format!("{copies} whole copies")) }
    });
    assert_eq!(mirrored("skipped") - skipped_before, 0.0, "a streamed body was not mirrored");
    assert_eq!(mirrored("failed") - failed_before, 0.0, "a streamed copy failed");
}

#[test]
fn consistent_hash_keeps_a_client_on_one_replica_and_faults_abort_their_share() {
    let f = fixture(&[("r1", "app=web", &[]), ("r2", "app=web", &[]), ("r3", "app=web", &[])]);
    let lb = traffic(
        "sticky",
        "{kind: Service, name: web}",
        "  loadBalancer: {type: consistentHash, hashOn: {header: x-user}}\n",
    );
    f.apply("sticky.yaml", &lb, WEB, "TrafficPolicy/default/sticky");
    let mut homes = BTreeMap::new();
    for user in 0..12 {
        let header = format!("x-user: user-{user}");
        let results = f.send("http://198.18.0.200/u-", 20, &["-H", &header]);
        let first = results[0].1.clone();
        assert!(results.iter().all(|(code, s)| *code == 200 && *s == first), "user-{user} moved: {results:?}");
        *homes.entry(first).or_insert(0) += 1;
    }
    eprintln!("measured: 12 users' homes {homes:?}");
    assert!(homes.len() >= 2, "every user hashed to one replica: {homes:?}");

    // Fault injection: half the requests aborted with 418 by the client's proxy.
    let faults = traffic("faults", "{kind: Service, name: web}", "  faults: {abort: {percent: 50, httpStatus: 418}}\n");
    f.apply("faults.yaml", &faults, WEB, "TrafficPolicy/default/faults");
    let results = f.send("http://198.18.0.200/fault-", 400, &[]);
    let by_status = statuses(&results);
    let aborted = by_status.get(&418).copied().unwrap_or(0);
    eprintln!("measured: {aborted}/400 aborted under a 50 % abort fault");
    assert_eq!(aborted + by_status.get(&200).copied().unwrap_or(0), 400, "{by_status:?}");
    assert!((160..=240).contains(&aborted), "{aborted} of 400 aborted under a 50 % fault");
    assert!(results.iter().all(|(c, s)| (*c == 418) == s.is_empty()), "an aborted request reached a replica");
}

#[test]
fn retries_mask_a_flaky_endpoint_within_their_budget_and_only_when_safe() {
    let f = fixture(&[("flaky", "app=web", &["--fail-every", "2"]), ("good", "app=web", &[])]);
    let retries = |extra: &str| {
        traffic(
            "retries",
            "{kind: Service, name: web}",
            &format!("  retries: {{attempts: 2, retryOn: [5xx], backoff: {{base: 1ms, max: 5ms}}{extra}}}\n"),
        )
    };
    f.apply("retries.yaml", &retries(""), WEB, "TrafficPolicy/default/retries");

    let results = f.send("http://198.18.0.200/r-", 400, &[]);
    let ok = statuses(&results).get(&200).copied().unwrap_or(0);
    eprintln!("measured: {ok}/400 succeeded with one endpoint failing every other request");
    assert!(ok >= 396, "only {ok} of 400 succeeded with retries on: {:?}", statuses(&results));
    assert!(count(&results, "flaky") > 0, "the flaky endpoint served nothing");
    assert!(f.metric("weft_retries_total") >= 1.0, "nothing was retried, so nothing failed");

    // A POST is not retried after a 503 unless allowed.
    let before = f.metric("weft_retries_total");
    let posts = f.send("http://198.18.0.200/post-", 100, &["-X", "POST", "-d", "x=1"]);
    assert_eq!(f.metric("weft_retries_total"), before, "a POST was retried");
    assert!(statuses(&posts).contains_key(&503), "no POST failed, so the check above proves nothing");
    // Nor a body over the buffer limit (64 KiB), whatever the method.
    let big = f.client.dir().join("big.bin");
    std::fs::write(&big, vec![b'x'; 100 * 1024]).expect("writing a body");
    let big_arg = format!("@{}", big.display());
    let puts = f.send("http://198.18.0.200/put-", 40, &["-X", "PUT", "--data-binary", &big_arg]);
    assert_eq!(f.metric("weft_retries_total"), before, "a 100 KiB body was retried");
    assert!(statuses(&puts).contains_key(&503), "no PUT failed, so the check above proves nothing");
    f.apply("retries.yaml", &retries(", allowNonIdempotent: true"), WEB, "TrafficPolicy/default/retries");
    eventually(Duration::from_secs(5), "POSTs are retried once allowed", || {
        let posts = f.send("http://198.18.0.200/post-ok-", 50, &["-X", "POST", "-d", "x=1"]);
        let ok = statuses(&posts).get(&200).copied().unwrap_or(0);
        if ok == 50 { Ok(()) } else { Err(format!("{:?}", statuses(&posts))) }
    });

    // Every endpoint failing: the budget bounds retries and failures come back fast.
    for r in f.replicas.values() {
        r.fail_every(1);
    }
    let budget = traffic(
        "budget",
        "{kind: Service, name: web}",
        "  retries: {attempts: 3, retryOn: [5xx], backoff: {base: 1ms, max: 5ms}, budget: {ratio: 0.1, window: 10s, minRetriesPerSecond: 1}}\n",
    );
    f.remove("retries.yaml", WEB, "TrafficPolicy/default/retries");
    f.apply("budget.yaml", &budget, WEB, "TrafficPolicy/default/budget");
    // A policy version starts a fresh budget; measure from here (the few
    // requests that waited for the policy count in its window too).
    let (retries_before, exhausted_before) =
        (f.metric("weft_retries_total"), f.metric("weft_retry_budget_exhausted_total"));
    let start = Instant::now();
    let results = f.send("http://198.18.0.200/down-", 200, &[]);
    let took = start.elapsed();
    let retried = f.metric("weft_retries_total") - retries_before;
    eprintln!("measured: 200 requests to a dead service took {took:?} with {retried} retries");
    assert_eq!(statuses(&results), BTreeMap::from([(503, 200)]), "the failure is passed through");
    // ratio × requests + floor × window (allowing for up to 10 requests
    // that waited for the policy in the same window).
    let bound = 0.1 * 210.0 + 1.0 * 10.0;
    assert!(retried <= bound, "{retried} retries for 200 requests exceed the budget ({bound})");
    assert!(f.metric("weft_retry_budget_exhausted_total") > exhausted_before, "the budget never refused a retry");
    assert!(took < Duration::from_secs(10), "failing 200 requests took {took:?}");
}

#[test]
fn the_default_policy_retries_connect_failures_of_any_method_once_each() {
    let f = fixture(&[("r1", "app=web", &[])]);
    // A replica that is registered but refuses every connection to its
    // proxy: each attempt there is a connect failure, the request never
    // written.
    let dead = f.mesh.pod("dead");
    let reject = ["-A", "INPUT", "-p", "tcp", "--dport", "4143", "-j", "REJECT", "--reject-with", "tcp-reset"];
    let run = dead.exec("iptables", &reject);
    assert!(run.status.success(), "{run}");
    let _app = dead.spawn_testkit("app", &["http-server", "--listen", "0.0.0.0:8080", "--name", "dead"]);
    dead.wait_listening(8080);
    let _proxy = dead.run_registered_proxy(&f.cp, "dead", "app=web", 8080, &[]);
    eventually(Duration::from_secs(10), "the client balances over both replicas", || {
        let _ = f.client.exec("curl", &["-s", "-o", "/dev/null", "--max-time", "2", "http://198.18.0.200/"]);
        let eps = f.proxy.endpoints(WEB);
        if eps.len() == 2 { Ok(()) } else { Err(format!("endpoints {eps:?}")) }
    });
    // Round robin, so that first attempts keep reaching the dead replica.
    let rr = traffic("rr", "{kind: Service, name: web}", "  loadBalancer: {type: roundRobin}\n");
    f.apply("rr.yaml", &rr, WEB, "TrafficPolicy/default/rr");

    let before = f.metric("weft_retries_total");
    let posts = f.send("http://198.18.0.200/post-", 30, &["-X", "POST", "-d", "x=1"]);
    let gets = f.send("http://198.18.0.200/get-", 20, &[]);
    // A streamed body (no length) is never buffered, and still retried.
    let chunked = ["-X", "POST", "-H", "transfer-encoding: chunked", "-d", "x=1"];
    let streamed = f.send("http://198.18.0.200/chunked-", 10, &chunked);
    let retried = f.metric("weft_retries_total") - before;
    eprintln!("measured: 60 requests with one replica refusing connections: {retried} retries");
    assert_eq!(statuses(&posts), BTreeMap::from([(200, 30)]), "POSTs: {posts:?}");
    assert_eq!(statuses(&gets), BTreeMap::from([(200, 20)]), "GETs: {gets:?}");
    assert_eq!(statuses(&streamed), BTreeMap::from([(200, 10)]), "chunked POSTs: {streamed:?}");
    assert_eq!(count(&posts, "r1") + count(&gets, "r1") + count(&streamed, "r1"), 60);
    // Round robin counts the retry's pick too: once a first attempt lands
    // on the dead replica, its retry takes r1's turn and the next request's
    // first attempt lands on the dead one again. So every request but
    // perhaps the first is retried, exactly once.
    assert!((59.0..=60.0).contains(&retried), "{retried} retries for 60 requests");
    // Each request reached the app once: nothing written was sent again.
    let log = f.replicas["r1"].app.stdout();
    assert_eq!(log.lines().filter(|l| l.contains(" POST /post-")).count(), 30, "POSTs at r1");
    assert_eq!(log.lines().filter(|l| l.contains(" GET /get-")).count(), 20, "GETs at r1");
    assert_eq!(log.lines().filter(|l| l.contains(" POST /chunked-")).count(), 10, "chunked POSTs at r1");
}

#[test]
fn timeouts_cut_slow_backends_and_per_try_timeouts_retry_elsewhere() {
    let f = fixture(&[("fast", "app=web", &[]), ("slow", "app=web", &["--delay-ms", "2000"])]);
    let timeout =
        traffic("timeouts", "{kind: Service, name: web}", "  timeouts: {request: 200ms}\n  retries: {attempts: 0}\n");
    f.apply("timeouts.yaml", &timeout, WEB, "TrafficPolicy/default/timeouts");
    let run = f.client.exec(
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}\n", "http://198.18.0.200/delay?ms=2000&i=[1-5]"],
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{run}");
    for line in lines {
        let (code, secs) = line.split_once(' ').expect("code and time");
        let took: f64 = secs.parse().expect("curl's time_total");
        eprintln!("measured: {code} after {took:.3} s");
        assert_eq!(code, "504", "a 2 s backend under a 200 ms timeout: {run}");
        assert!((0.2..0.3).contains(&took), "504 after {took:.3} s for a 200 ms timeout");
    }

    // A policy under a new name, so that waiting for its source proves the
    // proxy holds it (a rewrite under the old name would look the same as
    // the 200 ms policy it replaces).
    let per_try = traffic(
        "per-try",
        "{kind: Service, name: web}",
        "  timeouts: {request: 5s}\n  retries: {attempts: 2, retryOn: [gateway-error], perTryTimeout: 100ms, backoff: {base: 1ms, max: 2ms}}\n",
    );
    f.remove("timeouts.yaml", WEB, "TrafficPolicy/default/timeouts");
    f.apply("per-try.yaml", &per_try, WEB, "TrafficPolicy/default/per-try");
    let start = Instant::now();
    let results = f.send("http://198.18.0.200/pt-", 40, &[]);
    let took = start.elapsed();
    assert_eq!(count(&results, "fast"), 40, "every request ends on the fast replica: {results:?}");
    assert!(f.metric("weft_timeouts_total") > 0.0);
    eprintln!("measured: 40 requests with per-try timeouts took {took:?}");
    assert!(took < Duration::from_secs(10), "40 requests took {took:?}: per-try timeouts did not cut the slow replica");
}

#[test]
fn idle_timeouts_cut_stalled_response_bodies_and_silent_connections() {
    let f = fixture(&[("r1", "app=web", &[])]);
    let idle = traffic("idle", "{kind: Service, name: web}", "  timeouts: {idle: 500ms}\n");
    f.apply("idle.yaml", &idle, WEB, "TrafficPolicy/default/idle");
    let idle_cuts = || f.proxy.metrics().sum("weft_timeouts_total", &[("kind", "idle")]);

    // A body that sends a line every 200 ms outlives a 500 ms idle timeout.
    let curl = |url: &str| {
        let args = ["-sS", "--max-time", "20", "-w", "%{http_code} %{time_total}\n", url];
        let start = Instant::now();
        (f.client.exec("curl", &args), start.elapsed())
    };
    let (run, took) = curl("http://198.18.0.200/drip?n=8&every=200");
    let lines: String = (0..8).map(|i| format!("drip {i}\n")).collect();
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stdout.starts_with(&format!("{lines}200 ")), "{run}");
    assert!(took >= Duration::from_millis(1600), "8 lines 200 ms apart came in {took:?}");
    assert_eq!(idle_cuts(), 0.0, "a dripping body was counted as idle");

    // One that stalls after two lines is cut 500 ms after the second.
    let (run, took) = curl("http://198.18.0.200/drip?n=2&every=100&stall=10000");
    eprintln!("measured: a stalled body was cut after {took:?} (200 ms of lines, then 500 ms idle)");
    assert_eq!(run.code(), Some(18), "curl: transfer closed with outstanding read data remaining: {run}");
    assert!(run.stdout.starts_with("drip 0\ndrip 1\n200 "), "the lines before the stall arrive: {run}");
    assert!(!run.stdout.contains("after stall"), "{run}");
    assert!(
        (Duration::from_millis(650)..Duration::from_millis(2000)).contains(&took),
        "cut after {took:?}, not about 700 ms"
    );
    assert_eq!(idle_cuts(), 1.0, "the cut is counted once");

    // Opaque TCP: a connection that goes quiet is closed after the store's
    // idle timeout, and not before one is set.
    let store = f.mesh.pod("store");
    let _echo = store.spawn_testkit("echo", &["tcp-server", "--listen", "0.0.0.0:6379"]);
    store.wait_listening(6379);
    let _store_proxy = store.run_registered_proxy(&f.cp, "store-0", "app=store", 6379, &[]);
    let quiet =
        |max_ms: &str| f.client.testkit(&["slow-client", "--connect", STORE, "--send", "hello\\n", "--max-ms", max_ms]);
    eventually(Duration::from_secs(10), "the client reaches the store", || {
        let run = quiet("300");
        if run.stdout.contains("received=hello\\n") { Ok(()) } else { Err(format!("{run}")) }
    });
    let run = quiet("2000");
    assert_eq!(run.code(), Some(3), "without a policy, the proxy's 1 h idle timeout applies: {run}");
    let store_idle = traffic("store-idle", "{kind: Service, name: store}", "  timeouts: {idle: 500ms}\n");
    f.apply("store-idle.yaml", &store_idle, STORE, "TrafficPolicy/default/store-idle");
    let run = quiet("5000");
    assert_eq!(run.code(), Some(0), "the quiet connection was not closed: {run}");
    assert!(run.stdout.contains("received=hello\\n"), "{run}");
    let closed_ms: u64 = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("closed_after_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no closed_after_ms: {run}"));
    eprintln!("measured: a quiet TCP connection was closed after {closed_ms} ms under a 500 ms idle timeout");
    assert!((450..1500).contains(&closed_ms), "closed after {closed_ms} ms");
    assert_eq!(idle_cuts(), 2.0, "the idle connection is counted");
}

#[test]
fn the_circuit_breaker_ejects_a_failing_endpoint_readmits_it_and_never_ejects_the_last() {
    let f = fixture(&[("good", "app=web,version=v2", &[]), ("bad", "app=web,version=v1", &["--fail-every", "1"])]);
    let breaker = |name: &str, target: &str| {
        traffic(
            name,
            target,
            "  retries: {attempts: 0}\n  circuitBreaker: {consecutiveFailures: 3, baseEjection: 6s, maxEjection: 20s}\n",
        )
    };
    f.apply("breaker.yaml", &breaker("breaker", "{kind: Service, name: web}"), WEB, "TrafficPolicy/default/breaker");

    // Three failures in a row eject it (some may have come from the
    // requests that waited for the policy): at most 3 of these reach it.
    let results = f.send("http://198.18.0.200/cb-", 100, &[]);
    let bad = count(&results, "bad");
    assert!(bad <= 3, "the failing endpoint got {bad} of 100 requests: it was not ejected after 3 failures");
    assert_eq!(f.metric("weft_circuit_ejections_total"), 1.0);
    let bad_addr = f.replicas["bad"].pod.addr(8080).to_string();
    let open = f.proxy.metrics().sum("weft_circuit_open", &[("target", WEB), ("endpoint", &bad_addr)]);
    assert_eq!(open, 1.0, "weft_circuit_open does not show the ejection:\n{}", f.proxy.metrics_text());
    // While ejected (6 s, ample for 200 requests even on a loaded machine), nothing reaches it.
    let during = f.send("http://198.18.0.200/ejected-", 200, &[]);
    assert_eq!(count(&during, "good"), 200, "traffic reached the ejected endpoint: {:?}", statuses(&during));

    // Healed, it is re-admitted after its ejection (by a probe).
    f.replicas["bad"].fail_every(0);
    let back = eventually(Duration::from_secs(20), "the healed endpoint gets traffic again", || {
        let r = f.send("http://198.18.0.200/healed-", 50, &[]);
        if count(&r, "bad") > 0 { Ok(r) } else { Err(format!("{:?}", statuses(&r))) }
    });
    assert!(back.iter().all(|(c, _)| *c == 200), "{back:?}");

    // The last endpoint of a service is never ejected: web-v1 is `bad` alone.
    f.replicas["bad"].fail_every(1);
    f.apply(
        "breaker-v1.yaml",
        &breaker("breaker-v1", "{kind: Service, name: web-v1}"),
        WEB_V1,
        "TrafficPolicy/default/breaker-v1",
    );
    let alone = f.send("http://198.18.0.201/alone-", 30, &[]);
    assert!(
        alone.iter().all(|(c, s)| *c == 503 && s == "bad"),
        "the only endpoint stopped getting requests: {alone:?}"
    );
    f.remove("breaker-v1.yaml", WEB_V1, "TrafficPolicy/default/breaker-v1");
}

#[test]
fn a_rate_limit_admits_its_rate_and_answers_the_rest_429() {
    let f = fixture(&[("r1", "app=web", &[])]);
    let limit = traffic("limit", "{kind: Service, name: web}", "  rateLimit: {requestsPerSecond: 50, burst: 10}\n");
    std::fs::write(f.cp.policy_dir.join("limit.yaml"), limit).expect("writing the rate limit");
    eventually(Duration::from_secs(10), "the server's proxy enforces the limit", || {
        let r = f.send("http://198.18.0.200/rl-probe-", 30, &[]);
        if r.iter().any(|(c, _)| *c == 429) { Ok(()) } else { Err(format!("{:?}", statuses(&r))) }
    });
    // Let the bucket refill (burst 10 at 50/s takes 0.2 s).
    std::thread::sleep(Duration::from_millis(500));

    let start = Instant::now();
    let results = f.send("http://198.18.0.200/rl-", 600, &["--rate", "200/s"]);
    let secs = start.elapsed().as_secs_f64();
    let admitted = statuses(&results).get(&200).copied().unwrap_or(0) as f64;
    let limited = statuses(&results).get(&429).copied().unwrap_or(0);
    let per_second = (admitted - 10.0) / secs;
    eprintln!(
        "measured: {admitted} admitted, {limited} answered 429 in {secs:.2} s: {per_second:.1}/s beyond the burst"
    );
    assert_eq!(admitted as usize + limited, 600, "{:?}", statuses(&results));
    assert!((45.0..=55.0).contains(&per_second), "admitted {per_second:.1}/s under a 50/s limit");

    let heads =
        f.client.exec("curl", &["-s", "-o", "/dev/null", "-D", "-", "--rate", "1000/s", "http://198.18.0.200/h[1-40]"]);
    assert!(
        heads.stdout.lines().any(|l| l.to_ascii_lowercase().starts_with("retry-after: 1")),
        "no 429 with Retry-After among 40 fast requests:\n{}",
        heads.stdout
    );
}

#[test]
fn upgrades_take_the_routes_backend_and_never_an_ejected_endpoint() {
    let f = fixture(&[("v1", "app=web,version=v1", &[]), ("v2", "app=web,version=v2", &[])]);
    let upgrade = ["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"];

    // Everything to v2: WebSocket upgrades too.
    f.apply("route.yaml", &route("    - backendRefs: [{name: web-v2, port: 80, weight: 1}]\n"), WEB, ROUTE);
    let split = f.send("http://198.18.0.200/ws-", 40, &upgrade);
    assert_eq!(count(&split, "v2"), 40, "upgrades escaped the route's backend: {split:?}");
    f.remove("route.yaml", WEB, ROUTE);

    // v1 fails and is ejected by plain requests; upgrades avoid it too.
    f.replicas["v1"].fail_every(1);
    let breaker = traffic(
        "breaker",
        "{kind: Service, name: web}",
        "  retries: {attempts: 0}\n  circuitBreaker: {consecutiveFailures: 3, baseEjection: 20s, maxEjection: 30s}\n",
    );
    f.apply("breaker.yaml", &breaker, WEB, "TrafficPolicy/default/breaker");
    let _ = f.send("http://198.18.0.200/eject-", 40, &[]);
    assert_eq!(f.metric("weft_circuit_ejections_total"), 1.0, "{}", f.proxy.metrics_text());
    let during = f.send("http://198.18.0.200/ws-ejected-", 40, &upgrade);
    assert_eq!(count(&during, "v2"), 40, "upgrades reached the ejected endpoint: {during:?}");
}

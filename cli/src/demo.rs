//! `weft demo`: the micro-service demo on a local mesh, and its report.
//!
//! ```text
//!   load (50 req/s) ──► web v1 ×2, v2 ×1 ──► store (redis-server, or `weft example store`)
//! ```
//!
//! The mesh is `examples/demo/mesh.yaml` (embedded in the binary) run by the
//! same machinery as `weft up`. Once requests reach `web`, the proxies'
//! metrics are read (the baseline); when the run ends (after `--duration`,
//! or at Ctrl-C) they are read again, and the difference becomes the table
//! `SERVICE SUCCESS RPS P50 P95 P99`. The demo succeeded when `web` answered
//! requests and at least 99 % of every service's requests succeeded, and,
//! with mTLS (the default as root), every proxy held a certificate for its
//! pod's identity at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::meshfile::LoadedMesh;
use crate::metrics::{self, HttpStats, Row, Sample};
use crate::plan::{Mode, Plan};
use crate::runtime::{LocalMesh, Settings};
use crate::stop::{Interrupted, Stop};

/// The service the load generator calls: it must see traffic.
pub const ENTRY_SERVICE: &str = "web";
/// Least share of successful requests for the demo to pass.
pub const MIN_SUCCESS: f64 = 0.99;
/// How long to wait for the first request to reach `web`.
const TRAFFIC_DEADLINE: Duration = Duration::from_secs(60);

/// Writes the demo's policy files (the canary route) into `dir/policy`,
/// where the demo's mesh file (`policies: [./policy]`) looks for them.
pub fn write_demo_policies(dir: &Path) -> anyhow::Result<()> {
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).with_context(|| format!("creating {}", policy.display()))?;
    for (name, text) in weft_examples::DEMO_POLICIES {
        std::fs::write(policy.join(name), text).with_context(|| format!("writing {}", policy.join(name).display()))?;
    }
    Ok(())
}

/// The demo's mesh file, adapted to this machine: the store is Debian's
/// `redis-server` when installed, else `weft example store`; the load
/// generator runs at `rate` requests per second. Its policies are read from
/// `dir/policy` ([`write_demo_policies`]).
pub fn demo_mesh(redis_installed: bool, rate: f64, dir: &Path) -> anyhow::Result<LoadedMesh> {
    let mut mesh = LoadedMesh::parse(weft_examples::DEMO_MESH, Path::new("examples/demo/mesh.yaml"), dir.to_owned())
        .context("the built-in demo mesh is invalid")?;
    for w in &mut mesh.file.spec.workloads {
        match w.name.as_str() {
            "store" if !redis_installed => {
                w.command = ["weft", "example", "store", "--listen", "$(WEFT_LISTEN_IP):6379"].map(String::from).into();
            }
            "load" => {
                if let Some(i) = w.command.iter().position(|a| a == "--rate") {
                    w.command[i + 1] = rate.to_string();
                }
            }
            _ => {}
        }
    }
    Ok(mesh)
}

/// Where an operator's browser reaches the control plane's dashboard: in
/// loopback mode its own address; with network namespaces it listens in
/// the hub, so a forwarder on this machine's 127.0.0.1:8084 (or another
/// free port) relays each connection into the hub. Returns the URL and
/// the forwarder's task (abort it when the mesh stops).
pub async fn dashboard(mesh: &LocalMesh) -> (String, Option<tokio::task::JoinHandle<()>>) {
    let target = std::net::SocketAddr::from((mesh.plan.control_ip, crate::runtime::CONTROL_DASHBOARD_PORT));
    if let Mode::Loopback { .. } = mesh.plan.mode {
        return (format!("http://{target}/"), None);
    }
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", crate::runtime::CONTROL_DASHBOARD_PORT)).await {
        Ok(l) => l,
        Err(_) => match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l,
            Err(e) => return (format!("http://{target}/ (inside network namespace {}; {e})", mesh.hub()), None),
        },
    };
    let url = listener.local_addr().map_or_else(|_| format!("http://{target}/"), |a| format!("http://{a}/"));
    let hub = mesh.hub();
    let task = tokio::spawn(async move {
        loop {
            let mut client = match listener.accept().await {
                Ok((client, _)) => client,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!("the dashboard forwarder cannot accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let hub = hub.clone();
            tokio::spawn(async move {
                match crate::netns::connect_in(Some(&hub), target, Duration::from_secs(5)).await {
                    Ok(mut upstream) => {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(e) => tracing::warn!("cannot reach the dashboard at {target} in {hub}: {e}"),
                }
            });
        }
    });
    (url, Some(task))
}

/// Each pod's metrics, `None` where a scrape failed.
pub type Scrape = Vec<Option<Vec<Sample>>>;

/// Reads every pod's proxy metrics.
pub async fn scrape(mesh: &LocalMesh) -> Scrape {
    let scrapes = mesh.plan.pods.iter().map(|pod| {
        let (netns, addr) = mesh.proxy_admin(pod);
        crate::probe::proxy_metrics(&pod.name, netns, addr, Duration::from_secs(5))
    });
    futures_util::future::join_all(scrapes).await
}

/// HTTP traffic of service `s` in one scrape. With network namespaces, that
/// is what the inbound proxies of its pods answered; in loopback mode there
/// is no inbound proxy, so it is what every pod's outbound proxy got back
/// for requests to the service's names.
fn service_stats(plan: &Plan, service: usize, scrape: &Scrape) -> HttpStats {
    let s = &plan.services[service];
    let mut total = HttpStats::default();
    match plan.mode {
        Mode::Netns => {
            for &pod in &s.pods {
                if let Some(Some(samples)) = scrape.get(pod) {
                    total.add(&HttpStats::from_samples(samples, "inbound", None));
                }
            }
        }
        Mode::Loopback { .. } => {
            let fqdn = format!("{}.{}.svc.{}", s.name, s.namespace, crate::hosts::CLUSTER_DOMAIN);
            let names = [s.name.clone(), s.qualified(), fqdn];
            let mut authorities: Vec<String> = names.to_vec();
            for p in &s.ports {
                authorities.extend(names.iter().map(|n| format!("{n}:{}", p.port)));
            }
            for samples in scrape.iter().flatten() {
                let stats = HttpStats::from_samples(samples, "outbound", Some(&authorities));
                if stats.requests() > 0.0 {
                    total.add(&stats);
                }
            }
        }
    }
    total
}

/// Each pod's proxy's identity as its admin `/config` shows it, when it
/// holds a certificate (`identity.ready`); `None` otherwise.
pub async fn identities(mesh: &LocalMesh) -> Vec<Option<String>> {
    let reads = mesh.plan.pods.iter().map(|pod| async move {
        let (netns, addr) = mesh.proxy_admin(pod);
        match crate::probe::get(netns, addr, "/config", Duration::from_secs(5)).await {
            Ok((status, body)) if status.is_success() => certified_identity(&body),
            Ok((status, _)) => {
                tracing::warn!("{}'s proxy answered {status} to /config", pod.name);
                None
            }
            Err(e) => {
                tracing::warn!("cannot read {}'s proxy /config: {e}", pod.name);
                None
            }
        }
    });
    futures_util::future::join_all(reads).await
}

/// The identity in a proxy's `/config`, if it holds a certificate for it.
pub fn certified_identity(config: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(config).ok()?;
    let identity = &value["identity"];
    (identity["ready"] == true).then(|| identity["identity"].as_str().map(str::to_owned)).flatten()
}

/// With mTLS: whether every proxy held its pod's identity, and a sentence.
pub fn mtls_verdict(plan: &Plan, identities: &[Option<String>]) -> Option<Result<String, String>> {
    let mtls = plan.mtls.as_ref()?;
    let missing: Vec<&str> = plan
        .pods
        .iter()
        .zip(identities.iter().chain(std::iter::repeat(&None)))
        .filter(|(pod, id)| id.as_deref() != Some(pod.identity().as_str()))
        .map(|(pod, _)| pod.name.as_str())
        .collect();
    let n = plan.pods.len();
    Some(if missing.is_empty() {
        Ok(format!(
            "mTLS on ({}): all {n} proxies held a certificate for their pod's identity, so every connection between \
             pods was mutually authenticated TLS",
            mtls.mode_name()
        ))
    } else {
        Err(format!(
            "mTLS is on, yet {} of {n} proxies held no certificate for their identity: {}",
            missing.len(),
            missing.join(", ")
        ))
    })
}

/// One row per service: the traffic between the two scrapes.
pub fn rows(plan: &Plan, start: &Scrape, end: &Scrape, window: Duration) -> Vec<Row> {
    (0..plan.services.len())
        .map(|i| {
            let stats = service_stats(plan, i, end).since(&service_stats(plan, i, start));
            Row { service: plan.services[i].qualified(), stats: (stats.requests() > 0.0).then_some(stats), window }
        })
        .collect()
}

/// Whether the demo traffic succeeded, and a sentence saying so.
pub fn verdict(rows: &[Row], entry: &str) -> Result<String, String> {
    let entry_row = rows.iter().find(|r| r.service.split('.').next() == Some(entry));
    let Some((entry_row, stats)) = entry_row.and_then(|r| Some((r, r.stats.as_ref()?))) else {
        return Err(format!("no request reached {entry}"));
    };
    for row in rows {
        if let Some(ratio) = row.success_ratio().filter(|r| *r < MIN_SUCCESS) {
            let n = row.stats.as_ref().map_or(0.0, HttpStats::requests);
            return Err(format!(
                "only {:.2}% of {n} requests to {} succeeded (at least {}% needed)",
                ratio * 100.0,
                row.service,
                MIN_SUCCESS * 100.0
            ));
        }
    }
    Ok(format!(
        "demo traffic succeeded: {} requests to {} at {:.1}/s, {:.2}% successful",
        stats.requests(),
        entry_row.service,
        entry_row.rps().unwrap_or(0.0),
        entry_row.success_ratio().unwrap_or(0.0) * 100.0
    ))
}

/// Waits until requests reach the entry service's pods (or the deadline),
/// and returns that scrape as the baseline.
async fn baseline(mesh: &LocalMesh, stop: &Stop) -> Result<Scrape, Interrupted> {
    let entry = mesh.plan.services.iter().position(|s| s.name == ENTRY_SERVICE);
    let deadline = Instant::now() + TRAFFIC_DEADLINE;
    loop {
        let scrape = scrape(mesh).await;
        let flowing = entry.is_some_and(|i| service_stats(&mesh.plan, i, &scrape).requests() > 0.0);
        if flowing || Instant::now() >= deadline {
            if !flowing {
                tracing::warn!("no request reached {ENTRY_SERVICE} within {TRAFFIC_DEADLINE:?}; measuring anyway");
            }
            return Ok(scrape);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {},
            () = stop.wait() => return Err(Interrupted),
        }
    }
}

/// Runs the demo: returns whether it succeeded.
pub async fn run(settings: Settings, rate: f64, duration: Option<Duration>, keep_logs: bool) -> anyhow::Result<bool> {
    let redis = crate::system::find("redis-server").is_some();
    // The canary route lives in a private directory for the run (the
    // binary carries it, so the demo needs no checkout).
    let files =
        tempfile::Builder::new().prefix("weft-demo-").tempdir().context("creating the demo's policy directory")?;
    write_demo_policies(files.path())?;
    let mesh = demo_mesh(redis, rate, files.path())?;
    if !redis {
        println!(
            "weft: redis-server is not installed; the store is `weft example store` (apt-get install redis-server for the real one)"
        );
    }
    let stop = Stop::install().context("cannot handle signals")?;
    let mut local = LocalMesh::new(&mesh, settings)?;
    if let Err(e) = local.start(&stop).await {
        let interrupted = e.is::<Interrupted>();
        report_leftovers(local.shutdown(!interrupted, &stop).await);
        if interrupted {
            eprintln!("weft: stopped before the demo was up; everything it had created is removed");
            return Ok(false);
        }
        return Err(e.context(format!("the demo mesh did not start; logs kept in {}", local.logs_dir.display())));
    }
    println!("{}", local.summary());
    let load_log = local.log_path("load-0.app");
    println!("  load generator  tail -f {}", load_log.display());
    println!(
        "  canary          web-v2 takes 10 % of web's requests (HTTPRoute {}); the table shows the split",
        files.path().join("policy").join("web-canary.yaml").display()
    );
    println!(
        "  roll it out     weft rollout --service web --stable web-v1 --canary web-v2 --steps 50,100 --interval 10s"
    );
    let (dashboard_url, forwarder) = dashboard(&local).await;
    println!("  dashboard       {dashboard_url} (open it in a browser while the demo runs)");
    println!(
        "  from the CLI    weft stat services --control {}   (also routes --service web, edges, top, tap)",
        dashboard_url.split_whitespace().next().unwrap_or_default().trim_end_matches('/')
    );
    println!();

    let Ok(start) = baseline(&local, &stop).await else {
        if let Some(f) = &forwarder {
            f.abort();
        }
        report_leftovers(local.shutdown(keep_logs, &stop).await);
        eprintln!("weft: stopped before traffic flowed; everything the demo created is removed");
        return Ok(false);
    };
    let started = Instant::now();
    match duration {
        Some(d) => {
            println!("weft: traffic is flowing; measuring for {}…", humantime::format_duration(d));
            tokio::select! {
                () = tokio::time::sleep(d) => {},
                () = stop.wait() => {},
            }
        }
        None => {
            println!("weft: traffic is flowing; press Ctrl-C to stop and see the report");
            stop.wait().await;
        }
    }
    let (end, identities) = tokio::join!(scrape(&local), identities(&local));
    let rows = rows(&local.plan, &start, &end, started.elapsed());
    let mtls = mtls_verdict(&local.plan, &identities);
    let verdict = verdict(&rows, ENTRY_SERVICE).and_then(|traffic| match &mtls {
        Some(Err(e)) => Err(e.clone()),
        _ => Ok(traffic),
    });
    let logs = local.logs_dir.clone();
    if let Some(f) = &forwarder {
        f.abort();
    }
    let source = match local.plan.mode {
        Mode::Netns => "the inbound proxies of each service's pods",
        Mode::Loopback { .. } => "the callers' outbound proxies (loopback mode)",
    };
    report_leftovers(local.shutdown(verdict.is_err() || keep_logs, &stop).await);

    println!("\n{}", metrics::render_table(&rows));
    println!("(from {source}; latency quantiles interpolated in the histogram buckets)");
    match verdict {
        Ok(sentence) => {
            println!("weft: {sentence}");
            match mtls {
                Some(Ok(sentence)) => println!("weft: {sentence}"),
                _ => println!("weft: mTLS off: traffic between the pods was plaintext"),
            }
            if keep_logs {
                println!("weft: logs kept in {}", logs.display());
            }
            Ok(true)
        }
        Err(reason) => {
            println!("weft: the demo failed: {reason}; logs kept in {}", logs.display());
            Ok(false)
        }
    }
}

pub fn report_leftovers(problems: Vec<String>) {
    for problem in problems {
        eprintln!("weft: could not remove {problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory holding the demo's policies, as `weft demo` makes one.
    fn demo_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write_demo_policies(dir.path()).expect("policies");
        dir
    }

    fn plan(mode: Mode) -> Plan {
        let dir = demo_dir();
        let mesh = demo_mesh(true, 50.0, dir.path()).unwrap();
        Plan::new(&mesh.file, mode, 1, Path::new("/weft"), &[])
    }

    #[test]
    fn the_demo_mesh_adapts_to_the_machine() {
        let dir = demo_dir();
        let with_redis = demo_mesh(true, 20.0, dir.path()).unwrap();
        let workloads = &with_redis.file.spec.workloads;
        let names: Vec<(&str, u32)> = workloads.iter().map(|w| (w.name.as_str(), w.replicas)).collect();
        assert_eq!(names, [("store", 1), ("web-v1", 2), ("web-v2", 1), ("load", 1)]);
        assert_eq!(workloads[0].command[0], "redis-server");
        assert_eq!(workloads[3].command, ["weft", "example", "load", "--target", "http://web/", "--rate", "20"]);
        assert!(with_redis.warnings.is_empty(), "{:?}", with_redis.warnings);

        let without = demo_mesh(false, 50.0, dir.path()).unwrap();
        assert_eq!(without.file.spec.workloads[0].command[..3], ["weft", "example", "store"]);
        let p = Plan::new(&without.file, Mode::Netns, 1, Path::new("/weft"), &[]);
        assert_eq!(p.pods[0].command, ["/weft", "example", "store", "--listen", "0.0.0.0:6379"]);
        assert_eq!(p.pods[1].command[6], "198.19.0.2:6379", "web reaches the store's virtual IP");
    }

    fn samples(text: &str) -> Option<Vec<Sample>> {
        Some(metrics::parse(text))
    }

    fn inbound(ok: u32, failed: u32) -> Option<Vec<Sample>> {
        samples(&format!(
            "weft_responses_total{{direction=\"inbound\",authority=\"web\",status_code=\"200\",classification=\"success\"}} {ok}\n\
             weft_responses_total{{direction=\"inbound\",authority=\"web\",status_code=\"502\",classification=\"failure\"}} {failed}\n\
             weft_response_latency_seconds_bucket{{direction=\"inbound\",classification=\"success\",le=\"0.01\"}} {ok}\n\
             weft_response_latency_seconds_bucket{{direction=\"inbound\",classification=\"success\",le=\"+Inf\"}} {}\n",
            ok + failed
        ))
    }

    #[test]
    fn rows_come_from_the_inbound_proxies_of_each_services_pods() {
        let p = plan(Mode::Netns);
        // Pods: store-0, web-v1-0, web-v1-1, web-v2-0, load-0.
        let start: Scrape = vec![inbound(0, 0), inbound(10, 0), inbound(10, 0), None, inbound(0, 0)];
        let end: Scrape = vec![inbound(0, 0), inbound(410, 0), inbound(409, 1), inbound(200, 0), inbound(999, 0)];
        let rows = rows(&p, &start, &end, Duration::from_secs(10));
        assert_eq!(rows[0].service, "web.default");
        let web = rows[0].stats.as_ref().unwrap();
        assert_eq!((web.success, web.failure), (999.0, 1.0), "the load pod's own inbound is not web's");
        assert_eq!(rows[0].rps(), Some(100.0));
        assert_eq!(rows[1].service, "store.default");
        assert_eq!(rows[1].stats, None);
        assert_eq!(
            verdict(&rows, "web"),
            Ok("demo traffic succeeded: 1000 requests to web.default at 100.0/s, 99.90% successful".into())
        );
    }

    #[test]
    fn loopback_rows_come_from_the_callers_outbound_proxies() {
        let p = plan(Mode::Loopback { block: 50 });
        let load = samples(
            "weft_responses_total{direction=\"outbound\",authority=\"web\",status_code=\"200\",classification=\"success\"} 50\n\
             weft_responses_total{direction=\"outbound\",authority=\"other\",status_code=\"200\",classification=\"success\"} 7\n",
        );
        let rows = rows(&p, &vec![None; 5], &vec![None, None, None, None, load], Duration::from_secs(1));
        assert_eq!(rows[0].stats.as_ref().map(HttpStats::requests), Some(50.0));
    }

    #[test]
    fn identities_come_from_the_proxies_config() {
        let config =
            r#"{"version":"0.1.0","identity":{"identity":"spiffe://cluster.local/ns/default/sa/web","ready":true}}"#;
        assert_eq!(certified_identity(config).as_deref(), Some("spiffe://cluster.local/ns/default/sa/web"));
        assert_eq!(certified_identity(&config.replace("true", "false")), None, "no certificate yet");
        assert_eq!(certified_identity(r#"{"identity":null}"#), None, "no mTLS");
        assert_eq!(certified_identity("nope"), None);

        let p = plan(Mode::Netns);
        let all: Vec<Option<String>> = p.pods.iter().map(|pod| Some(pod.identity())).collect();
        assert_eq!(
            mtls_verdict(&p, &all),
            Some(Ok("mTLS on (permissive): all 5 proxies held a certificate for their pod's identity, so every \
                     connection between pods was mutually authenticated TLS"
                .into()))
        );
        let mut some = all.clone();
        some[1] = None;
        some[4] = Some("spiffe://cluster.local/ns/default/sa/other".into());
        assert_eq!(
            mtls_verdict(&p, &some),
            Some(Err("mTLS is on, yet 2 of 5 proxies held no certificate for their identity: web-v1-0, load-0".into()))
        );
        assert_eq!(mtls_verdict(&plan(Mode::Loopback { block: 50 }), &[]), None);
    }

    #[test]
    fn verdicts() {
        let p = plan(Mode::Netns);
        let none: Scrape = vec![None; 5];
        let rows_for = |end: Scrape| rows(&p, &none, &end, Duration::from_secs(10));
        assert_eq!(verdict(&rows_for(none.clone()), "web"), Err("no request reached web".into()));
        let failing = rows_for(vec![None, inbound(90, 10), None, None, None]);
        assert_eq!(
            verdict(&failing, "web"),
            Err("only 90.00% of 100 requests to web.default succeeded (at least 99% needed)".into())
        );
    }
}

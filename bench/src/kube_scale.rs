//! `weft-bench kube-scale`: the control plane as a Kubernetes controller
//! at size, against the tests' real API server.
//!
//! ```text
//!  kube-apiserver (127.0.0.1) ◄── weft-control --source kubernetes (127.0.0.1, no CA)
//!   N Services, N EndpointSlices            ▲ Discovery.Watch("svc-0.scale:80"), one stream
//!   of E/N endpoints each (data only)       │
//!  curl PATCH svc-0's slice (endpoint 0 ready ↔ not) ── t0 … the stream's answer ── t1
//! ```
//!
//! Figures: the time for a cold control plane to be ready (start → `/ready`
//! 200, every kind listed), its RSS then and at the end (and VmHWM), and
//! per change the time from the PATCH being sent to the watching stream's
//! new answer (p50/p99), beside the PATCH's own round trip (its floor).
//! Addresses in the slices are data: nothing is dialled.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use weft_api::discovery::WatchRequest;
use weft_api::discovery::discovery_client::DiscoveryClient;
use weft_tests::KubeCluster;

use crate::cplane::Quantiles;
use crate::footprint;
use crate::stop::KillOnDrop;

#[derive(clap::Args, Debug, Clone)]
pub struct KubeScaleArgs {
    /// Services (each with one EndpointSlice).
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Endpoints in all, spread evenly over the Services' slices.
    #[arg(long, default_value_t = 10_000)]
    pub endpoints: usize,
    /// EndpointSlice changes timed.
    #[arg(long, default_value_t = 100)]
    pub changes: usize,
    /// The control plane binary [default: built beside this one].
    #[arg(long)]
    pub control_bin: Option<PathBuf>,
    /// Directory for kube-scale.{md,json} [default: bench/results].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct KubeScaleReport {
    pub kubernetes: String,
    pub services: usize,
    pub endpoints: usize,
    /// Creating the objects through the API server (not the control plane).
    pub create_s: f64,
    /// Start of weft-control to `/ready` 200.
    pub ready_s: f64,
    pub rss_ready_kib: u64,
    pub rss_end_kib: u64,
    pub hwm_kib: u64,
    /// PATCH sent → the watching stream's new answer, ms.
    pub update: Option<Quantiles>,
    /// The PATCH's own round trip (curl start to exit), ms: the floor.
    pub patch_rtt: Option<Quantiles>,
    pub missed: usize,
}

const NAMESPACE: &str = "scale";

pub fn run(args: &KubeScaleArgs) -> anyhow::Result<()> {
    if args.services == 0 || args.endpoints < args.services {
        bail!("--endpoints must be at least --services (each slice needs one)");
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let control_bin = args.control_bin.clone().unwrap_or_else(|| weft_tests::control_bin().to_owned());

    eprintln!("kube-scale: starting the Kubernetes control plane");
    let cluster = KubeCluster::start();
    cluster.install_weft();
    cluster.kubectl(&["create", "namespace", NAMESPACE]);

    let per = args.endpoints / args.services;
    let created = Instant::now();
    let chunk = 100;
    let mut base = 0;
    for first in (0..args.services).step_by(chunk) {
        let mut yaml = String::new();
        for i in first..(first + chunk).min(args.services) {
            let n = per + usize::from(i < args.endpoints % args.services);
            objects(&mut yaml, i, base, n);
            base += n;
        }
        let path = cluster.dir().join(format!("scale-{first}.yaml"));
        std::fs::write(&path, yaml)?;
        cluster.kubectl(&["apply", "-n", NAMESPACE, "-f", &path.display().to_string()]);
    }
    let create_s = created.elapsed().as_secs_f64();
    eprintln!("kube-scale: {} Services, {} endpoints created in {create_s:.1} s", args.services, args.endpoints);

    let grpc = free_addr()?;
    let admin = free_addr()?;
    let kubeconfig = cluster.control_plane_kubeconfig(cluster.server(), &cluster.dir().join("weft-control.kubeconfig"));
    let log = std::fs::File::create(cluster.dir().join("weft-control.stderr"))?;
    let started = Instant::now();
    let mut control = KillOnDrop(
        Command::new(&control_bin)
            .args(["--source", "kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--grpc-addr", &grpc.to_string(), "--admin-addr", &admin.to_string(), "--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", control_bin.display()))?,
    );
    let deadline = started + Duration::from_secs(120);
    while !ready(admin) {
        if let Some(status) = control.0.try_wait()? {
            bail!("weft-control exited ({status}); see {}", cluster.dir().join("weft-control.stderr").display());
        }
        if Instant::now() > deadline {
            bail!("weft-control not ready within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ready_s = started.elapsed().as_secs_f64();
    let pid = control.0.id();
    let rss_ready_kib = footprint::memory(pid)?.rss_kib;
    eprintln!("kube-scale: weft-control ready in {ready_s:.2} s, RSS {rss_ready_kib} KiB");

    let svc0 = per + usize::from(!args.endpoints.is_multiple_of(args.services));
    let (update, patch_rtt, missed) = changes(&cluster, grpc, args.changes, svc0)?;
    let end = footprint::memory(pid)?;
    let report = KubeScaleReport {
        kubernetes: weft_tests::kube_version().to_owned(),
        services: args.services,
        endpoints: args.endpoints,
        create_s,
        ready_s,
        rss_ready_kib,
        rss_end_kib: end.rss_kib,
        hwm_kib: end.hwm_kib,
        update: Quantiles::of(&update),
        patch_rtt: Quantiles::of(&patch_rtt),
        missed,
    };
    let md = markdown(&report, args);
    print!("{md}");
    std::fs::write(out.join("kube-scale.md"), &md)?;
    crate::report::write_json(&out.join("kube-scale.json"), &report)?;
    eprintln!("kube-scale: wrote {}", out.join("kube-scale.{md,json}").display());
    Ok(())
}

/// Service `svc-I` (port 80 → 8080, no selector) and its slice of `n`
/// ready endpoints, numbered from `base` (each address is distinct).
fn objects(yaml: &mut String, i: usize, base: usize, n: usize) {
    let _ = write!(
        yaml,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  ports: [{{port: 80, targetPort: 8080}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-a\n  labels: \
         {{kubernetes.io/service-name: svc-{i}}}\naddressType: IPv4\nports: [{{name: \"\", port: 8080, protocol: TCP}}]\n\
         endpoints:\n"
    );
    for j in 0..n {
        let k = base + j;
        let _ = writeln!(
            yaml,
            "- {{addresses: [\"10.{}.{}.{}\"], conditions: {{ready: true}}}}",
            100 + (k >> 16) % 100,
            (k >> 8) & 0xff,
            k & 0xff
        );
    }
    yaml.push_str("---\n");
}

/// Times `n` changes of svc-0's slice as one watching stream sees them.
fn changes(
    cluster: &KubeCluster,
    grpc: SocketAddr,
    n: usize,
    per: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, usize)> {
    // A worker thread of its own, so that the stream is read (and each
    // answer stamped) while this thread waits for curl.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, usize)>();
    let url = format!("http://{grpc}");
    let watcher = rt.spawn(async move {
        let mut client = DiscoveryClient::connect(url).await.context("connecting to weft-control")?;
        let req = WatchRequest {
            target: format!("svc-0.{NAMESPACE}:80"),
            proxy_id: "kube-scale".into(),
            namespace: NAMESPACE.into(),
        };
        let mut stream = client.watch(req).await.context("Discovery.Watch")?.into_inner();
        while let Some(set) = stream.message().await? {
            let _ = tx.send((Instant::now(), set.endpoints.len()));
        }
        anyhow::Ok(())
    });
    // The first answer: every endpoint of svc-0.
    let first = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), rx.recv()).await });
    match first {
        Ok(Some((_, got))) if got == per => {}
        other => bail!("the first answer for svc-0 is {other:?}, want {per} endpoints"),
    }
    let pki = cluster.dir().join("pki");
    let (mut update, mut rtt, mut missed) = (Vec::new(), Vec::new(), 0);
    for k in 0..n {
        let ready = k % 2 == 1; // endpoint 0: not ready, then ready again, …
        let want = if ready { per } else { per - 1 };
        let body = format!(r#"[{{"op":"replace","path":"/endpoints/0/conditions/ready","value":{ready}}}]"#);
        let t0 = Instant::now();
        let run = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "-X", "PATCH"])
            .args(["-H", "Content-Type: application/json-patch+json", "--data", &body])
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .arg(format!("{}/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices/svc-0-a", cluster.server()))
            .output()
            .context("running curl")?;
        let patched = t0.elapsed();
        if String::from_utf8_lossy(&run.stdout) != "200" {
            bail!("PATCH answered {}: {}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        }
        rtt.push(patched.as_secs_f64() * 1e3);
        let seen = rt.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((at, got))) if got == want => return Some(at),
                    Ok(Some(_)) => continue,
                    _ => return None,
                }
            }
        });
        match seen {
            Some(at) => update.push(at.duration_since(t0).as_secs_f64() * 1e3),
            None => missed += 1,
        }
    }
    watcher.abort();
    Ok((update, rtt, missed))
}

fn markdown(r: &KubeScaleReport, args: &KubeScaleArgs) -> String {
    let q = |q: &Option<Quantiles>| q.map_or("-".to_owned(), |q| format!("{:.1} / {:.1} / {:.1}", q.p50, q.p99, q.max));
    let mut md = String::new();
    let _ = writeln!(md, "# The control plane on Kubernetes, at size\n");
    let _ = writeln!(
        md,
        "Kubernetes {}, {} Services, {} endpoints in EndpointSlices; {} changes of one slice \
         (`cargo run --release -p weft-bench -- kube-scale --services {} --endpoints {} --changes {}`).\n",
        r.kubernetes, r.services, r.endpoints, args.changes, args.services, args.endpoints, args.changes
    );
    let _ = writeln!(md, "| figure | value | target |\n| --- | --- | --- |");
    let _ = writeln!(md, "| objects created through the API server | {:.1} s | |", r.create_s);
    let _ = writeln!(md, "| cold control plane ready (start → `/ready`) | {:.2} s | ≤ 10 s |", r.ready_s);
    let _ = writeln!(
        md,
        "| RSS when ready / at the end / peak | {} / {} / {} MiB | ≤ 150 MB |",
        r.rss_ready_kib / 1024,
        r.rss_end_kib / 1024,
        r.hwm_kib / 1024
    );
    let _ = writeln!(
        md,
        "| EndpointSlice PATCH sent → watching stream updated, p50 / p99 / max | {} ms | p99 ≤ 100 ms |",
        q(&r.update)
    );
    let _ = writeln!(md, "| the PATCH's own round trip (curl), p50 / p99 / max | {} ms | |", q(&r.patch_rtt));
    let _ = writeln!(md, "| changes never seen within 10 s | {} | 0 |", r.missed);
    md
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET /ready` answers 200.
fn ready(admin: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

//! `weft-proxy await`: waits until the proxy in this pod is ready. It is
//! the `postStart` hook of a classic (non-native) sidecar: the kubelet
//! starts a Pod's containers in order and does not start the next one
//! until the previous one's `postStart` hook returns, so the app starts
//! only once its proxy has its certificate and serves (what a native
//! sidecar's startup probe gives on Kubernetes ≥ 1.29).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Flags of `weft-proxy await`.
#[derive(clap::Args, Debug, Clone)]
pub struct AwaitArgs {
    /// The proxy's admin address; an unspecified IP (0.0.0.0) means this
    /// host's loopback.
    #[arg(long, env = crate::config::ENV_ADMIN_ADDR, default_value = "127.0.0.1:4191")]
    pub admin_addr: SocketAddr,
    /// Give up (exit 1) after this long.
    #[arg(long, default_value = "2m")]
    pub timeout: humantime::Duration,
}

/// Where to ask: the admin address, its unspecified IP made loopback.
pub fn probe_addr(admin: SocketAddr) -> SocketAddr {
    let ip = match admin.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, admin.port())
}

/// Polls `GET /ready` every 100 ms until it answers 200 or `timeout`
/// passes.
pub fn run(args: &AwaitArgs) -> anyhow::Result<()> {
    let addr = probe_addr(args.admin_addr);
    let deadline = Instant::now() + *args.timeout;
    let mut last = String::from("not asked yet");
    while Instant::now() < deadline {
        match ready(addr) {
            Ok(true) => return Ok(()),
            Ok(false) => last = "GET /ready did not answer 200".into(),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("the proxy at {addr} was not ready within {} ({last})", args.timeout)
}

fn ready(addr: SocketAddr) -> anyhow::Result<bool> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"GET /ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).context("reading the status line")?;
    Ok(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_admin_address_is_asked_on_loopback() {
        for (admin, want) in [
            ("0.0.0.0:4191", "127.0.0.1:4191"),
            ("[::]:4191", "[::1]:4191"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("10.1.2.3:4191", "10.1.2.3:4191"),
        ] {
            assert_eq!(probe_addr(admin.parse().unwrap()), want.parse().unwrap(), "{admin}");
        }
    }

    #[test]
    fn waits_for_200_and_gives_up_at_the_deadline() {
        use std::net::TcpListener;
        // A server answering 503 twice, then 200.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for status in ["503 Service Unavailable", "503 Service Unavailable", "200 OK"] {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes());
            }
        });
        let args = AwaitArgs { admin_addr: addr, timeout: Duration::from_secs(10).into() };
        run(&args).expect("ready on the third try");
        server.join().unwrap();

        // Nothing listens: it fails, saying why, after the timeout.
        let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let args = AwaitArgs { admin_addr: gone, timeout: Duration::from_millis(300).into() };
        let started = Instant::now();
        let e = run(&args).expect_err("nothing is ready");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(e.to_string().contains("was not ready within 300ms"), "{e}");
    }
}

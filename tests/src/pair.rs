//! The usual fixture: client pod `a` and server pod `b`, both meshed, with
//! the testkit HTTP server as b's app on port 8080.
//!
//! ```text
//! a: client ─► a's proxy (outbound) ─► b's proxy (inbound) ─► b: app 127.0.0.1:8080
//! ```

use crate::mesh::{Mesh, Pod};
use crate::process::Proc;
use crate::proxy::Proxy;

/// The app's port in pod b.
pub const APP_PORT: u16 = 8080;

/// Two meshed pods. Field order is drop order: processes first, then pods,
/// then the mesh (which deletes the namespaces).
pub struct Pair {
    pub proxy_a: Proxy,
    pub proxy_b: Proxy,
    pub app: Proc,
    pub a: Pod,
    pub b: Pod,
    pub mesh: Mesh,
}

impl Pair {
    /// Starts b's app and both proxies, with extra `weft-proxy run` flags for
    /// each.
    pub fn start(proxy_a_args: &[&str], proxy_b_args: &[&str]) -> Pair {
        let mesh = Mesh::new();
        let a = mesh.pod("a");
        let b = mesh.pod("b");
        let app = b.http_server(APP_PORT);
        let proxy_b = b.run_proxy(proxy_b_args);
        let proxy_a = a.run_proxy(proxy_a_args);
        Pair { proxy_a, proxy_b, app, a, b, mesh }
    }

    /// `http://<b>:8080<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.b.addr(APP_PORT))
    }

    /// How many connections b's app has accepted.
    pub fn app_connections(&self) -> usize {
        self.app.stdout().lines().filter(|l| l.starts_with("connection ")).count()
    }

    /// How many requests b's app has received.
    pub fn app_requests(&self) -> usize {
        self.app.stdout().lines().filter(|l| l.starts_with("request ")).count()
    }
}

//! `weft example web`: the demo's counter service. Every `GET /` increments
//! a counter in the store and answers with who served it:
//!
//! ```text
//!   GET / ──► INCR weft-demo:count (store, through the mesh) ──► 200 {"pod":"web-v1-0","version":"v1","count":42,"caller":"spiffe://…/sa/load"}
//!                                       store unreachable    ──► 503 (the load generator counts a failure)
//! ```
//!
//! `GET /healthz` answers 200 without touching the store. The app knows
//! nothing about the mesh: it listens on a plain port and dials the store by
//! name, exactly as it would on Kubernetes. `caller` is the `weft-client-id`
//! header its proxy adds for a caller proven by mTLS (`null` without one):
//! what the app can know of the mesh without linking anything of it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::store::client::StoreClient;

/// Flags of `weft example web`.
#[derive(clap::Args, Debug, Clone)]
pub struct WebArgs {
    /// Address to listen on.
    #[arg(long, env = "WEFT_EXAMPLE_WEB_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The store (Redis protocol), HOST:PORT; the host may be a service name.
    #[arg(long, env = "WEFT_EXAMPLE_WEB_STORE", default_value = "store:6379")]
    pub store: String,
    /// The name this replica reports (the local mesh sets POD_NAME).
    #[arg(long, env = "POD_NAME", default_value = "web")]
    pub pod_name: String,
    /// The version this replica reports.
    #[arg(long, env = "APP_VERSION", default_value = "v1")]
    pub app_version: String,
    /// The store key that holds the counter.
    #[arg(long, default_value = "weft-demo:count")]
    pub key: String,
    /// Extra time before every counter response (e.g. 20ms), to watch the
    /// load balancer send less traffic to a slow replica.
    #[arg(long, default_value = "0s")]
    pub delay: humantime::Duration,
    /// How long one store command may take, connecting included.
    #[arg(long, default_value = "1s")]
    pub store_timeout: humantime::Duration,
}

/// What a request handler needs.
pub struct App {
    pod_name: String,
    app_version: String,
    key: String,
    delay: Duration,
    store: StoreClient,
}

impl App {
    pub fn new(args: &WebArgs) -> Self {
        Self {
            pod_name: args.pod_name.clone(),
            app_version: args.app_version.clone(),
            key: args.key.clone(),
            delay: *args.delay,
            store: StoreClient::new(args.store.clone(), *args.store_timeout),
        }
    }
}

/// Runs `weft example web`.
pub async fn run(args: WebArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e} (is the port in use?)", args.listen))?;
    let app = Arc::new(App::new(&args));
    tracing::info!(
        "web {} ({}) listening on {}, store at {}",
        app.pod_name,
        app.app_version,
        listener.local_addr()?,
        app.store.addr()
    );
    serve(listener, app, crate::shutdown_signal()).await?;
    Ok(())
}

/// Serves HTTP/1 and HTTP/2 until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn handle(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/") => {
            let caller = req.headers().get("weft-client-id").and_then(|v| v.to_str().ok()).map(json_string);
            if !app.delay.is_zero() {
                tokio::time::sleep(app.delay).await;
            }
            match app.store.incr(&app.key).await {
                Ok(count) => {
                    let body = format!(
                        "{{\"pod\":{},\"version\":{},\"count\":{count},\"caller\":{}}}\n",
                        json_string(&app.pod_name),
                        json_string(&app.app_version),
                        caller.as_deref().unwrap_or("null")
                    );
                    let mut response = text(StatusCode::OK, body);
                    response.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("valid"));
                    response
                }
                Err(e) => {
                    tracing::warn!("counter update failed: {e}");
                    text(StatusCode::SERVICE_UNAVAILABLE, format!("{} cannot reach the store: {e}\n", app.pod_name))
                }
            }
        }
        (_, "/" | "/healthz") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into()),
        _ => text(StatusCode::NOT_FOUND, "not found; try GET /\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("valid"));
    response
}

/// `s` as a JSON string literal (RFC 8259 §7).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Empty};
    use tokio::net::TcpStream;

    async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get(path).header(header::HOST, "web").body(Empty::<Bytes>::new()).unwrap();
        let response = sender.send_request(req).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn counts_in_the_store_and_says_who_answered() {
        let store = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store_addr = store.local_addr().unwrap();
        tokio::spawn(crate::store::serve(store, std::future::pending()));

        let args = WebArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: store_addr.to_string(),
            pod_name: "web-v2-0".into(),
            app_version: "v2".into(),
            key: "k".into(),
            delay: Duration::ZERO.into(),
            store_timeout: Duration::from_secs(1).into(),
        };
        let listener = TcpListener::bind(args.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(App::new(&args)), std::future::pending()));

        assert_eq!(
            get(addr, "/").await,
            (StatusCode::OK, "{\"pod\":\"web-v2-0\",\"version\":\"v2\",\"count\":1,\"caller\":null}\n".into())
        );
        assert_eq!(get(addr, "/").await.1, "{\"pod\":\"web-v2-0\",\"version\":\"v2\",\"count\":2,\"caller\":null}\n");
        assert_eq!(get(addr, "/healthz").await, (StatusCode::OK, "ok\n".into()));
        assert_eq!(get(addr, "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_missing_store_is_a_503() {
        // A port that was free a moment ago: nothing listens there.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let args = WebArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: free.to_string(),
            pod_name: "web".into(),
            app_version: "v1".into(),
            key: "k".into(),
            delay: Duration::ZERO.into(),
            store_timeout: Duration::from_secs(1).into(),
        };
        let listener = TcpListener::bind(args.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(App::new(&args)), std::future::pending()));
        let (status, body) = get(addr, "/").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("cannot reach the store"), "{body}");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}

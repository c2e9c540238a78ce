//! Plain HTTP/1.1 GETs to the control plane's dashboard API (or a
//! Prometheus): JSON answers, and Server-Sent Event streams.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// `base` (`http://HOST:PORT[/prefix]`) joined with `path` (which starts
/// with `/` and may carry a query).
async fn send(base: &str, path: &str, timeout: Duration) -> anyhow::Result<http::Response<Incoming>> {
    let uri: http::Uri = base.parse().with_context(|| format!("{base:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{base}: only http:// URLs are supported");
    }
    let host = uri.host().ok_or_else(|| anyhow!("{base}: no host"))?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let prefix = uri.path().trim_end_matches('/');
    let target = format!("{prefix}{path}");
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| anyhow!("cannot connect to {base} within {timeout:?}"))?
        .with_context(|| format!("cannot connect to {base}; is the control plane's dashboard there (--control)?"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = uri.authority().map_or_else(|| host.clone(), |a| a.to_string());
    let request = Request::get(&target).header(header::HOST, authority).body(Empty::<Bytes>::new())?;
    tokio::time::timeout(timeout, sender.send_request(request))
        .await
        .map_err(|_| anyhow!("GET {base}{path}: no answer within {timeout:?}"))?
        .with_context(|| format!("GET {base}{path}"))
}

/// `GET` a JSON document; an error status becomes an error with the
/// answer's `error` (or its text).
pub async fn get_json(base: &str, path: &str, timeout: Duration) -> anyhow::Result<Value> {
    let response = send(base, path, timeout).await?;
    let status = response.status();
    let body = tokio::time::timeout(timeout, response.into_body().collect())
        .await
        .map_err(|_| anyhow!("GET {base}{path}: the body did not come within {timeout:?}"))??
        .to_bytes();
    let value: Result<Value, _> = serde_json::from_slice(&body);
    if !status.is_success() {
        let why = match &value {
            Ok(v) => v["error"].as_str().map_or_else(|| v.to_string(), str::to_owned),
            Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
        };
        bail!("GET {base}{path} answered {status}: {why}");
    }
    value.with_context(|| format!("GET {base}{path}: the answer is not JSON"))
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `message` unless the stream named it (`event: error`).
    pub kind: String,
    pub data: String,
}

/// Splits a Server-Sent Events text into events; returns the events
/// complete in `buf` and leaves the rest in it.
pub fn take_events(buf: &mut String) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let (mut kind, mut data) = ("message".to_owned(), Vec::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            out.push(Event { kind, data: data.join("\n") });
        }
    }
    out
}

/// An open event stream.
pub struct Stream {
    body: Incoming,
    buf: String,
    ready: std::collections::VecDeque<Event>,
}

impl Stream {
    pub async fn open(base: &str, path: &str, timeout: Duration) -> anyhow::Result<Stream> {
        let response = send(base, path, timeout).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.into_body().collect().await?.to_bytes();
            let why = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
            bail!("GET {base}{path} answered {status}: {why}");
        }
        Ok(Stream { body: response.into_body(), buf: String::new(), ready: Default::default() })
    }

    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&data));
                        self.ready.extend(take_events(&mut self.buf));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events() {
        let mut buf =
            String::from(": keep-alive\n\ndata: {\"a\":1}\n\nevent: error\ndata: x\ndata: y\n\ndata: partial");
        let events = take_events(&mut buf);
        assert_eq!(
            events,
            [
                Event { kind: "message".into(), data: "{\"a\":1}".into() },
                Event { kind: "error".into(), data: "x\ny".into() }
            ]
        );
        assert_eq!(buf, "data: partial");
    }
}

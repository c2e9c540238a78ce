//! The web app's Redis client: one connection, opened on first use and
//! reopened after any failure, one command at a time. Enough for a demo at
//! tens of requests per second; a command holds the connection for about a
//! round trip.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::resp::{self, Frame, ProtocolError};

/// Why a store command failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the store at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("the store at {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("talking to the store at {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("the store at {addr} closed the connection")]
    Closed { addr: String },
    #[error("the store at {addr} sent bytes that are not RESP: {source}")]
    Protocol { addr: String, source: ProtocolError },
    #[error("the store answered with an error: {0}")]
    Server(String),
    #[error("the store answered {0:?}, which is not what the command returns")]
    Unexpected(Frame),
}

struct Connection {
    stream: TcpStream,
    buf: BytesMut,
}

/// A client for one store address (`HOST:PORT`; the host may be a name).
pub struct StoreClient {
    addr: String,
    timeout: Duration,
    conn: Mutex<Option<Connection>>,
}

impl StoreClient {
    /// `timeout` bounds each command, connecting included.
    pub fn new(addr: String, timeout: Duration) -> Self {
        Self { addr, timeout, conn: Mutex::new(None) }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `INCR key`: the new value.
    pub async fn incr(&self, key: &str) -> Result<i64, StoreError> {
        match self.command(&[b"INCR", key.as_bytes()]).await? {
            Frame::Integer(n) => Ok(n),
            other => Err(StoreError::Unexpected(other)),
        }
    }

    /// Sends one command and returns its reply. A connection that fails is
    /// dropped; the next command opens a new one. A connection that had sat
    /// in the pool and turns out closed (the store or a proxy on the way
    /// closed it while idle) is retried once on a fresh connection; a
    /// fresh connection's failure is reported.
    pub async fn command(&self, args: &[&[u8]]) -> Result<Frame, StoreError> {
        let mut wire = BytesMut::new();
        Frame::command(args).encode(&mut wire);
        let mut slot = self.conn.lock().await;
        let reused = slot.is_some();
        match self.exchange(&mut slot, &wire).await {
            Err(StoreError::Closed { .. } | StoreError::Io { .. }) if reused => self.exchange(&mut slot, &wire).await,
            result => result,
        }
    }

    async fn exchange(&self, slot: &mut Option<Connection>, wire: &[u8]) -> Result<Frame, StoreError> {
        let result = tokio::time::timeout(self.timeout, self.exchange_inner(slot, wire))
            .await
            .unwrap_or_else(|_| Err(StoreError::Timeout { addr: self.addr.clone(), timeout: self.timeout }));
        match result {
            Ok(Frame::Error(message)) => Err(StoreError::Server(message)),
            Ok(frame) => Ok(frame),
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    }

    async fn exchange_inner(&self, slot: &mut Option<Connection>, wire: &[u8]) -> Result<Frame, StoreError> {
        let io = |source| StoreError::Io { addr: self.addr.clone(), source };
        let conn = match slot {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(&self.addr)
                    .await
                    .map_err(|source| StoreError::Connect { addr: self.addr.clone(), source })?;
                stream.set_nodelay(true).map_err(io)?;
                slot.insert(Connection { stream, buf: BytesMut::with_capacity(512) })
            }
        };
        conn.stream.write_all(wire).await.map_err(io)?;
        loop {
            match resp::parse_frame(&mut conn.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(source) => return Err(StoreError::Protocol { addr: self.addr.clone(), source }),
            }
            if conn.stream.read_buf(&mut conn.buf).await.map_err(io)? == 0 {
                return Err(StoreError::Closed { addr: self.addr.clone() });
            }
        }
    }
}

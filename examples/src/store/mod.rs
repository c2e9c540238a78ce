//! `weft example store`: a small Redis-protocol server, so that `weft demo`
//! runs on a machine without Debian's `redis-server`. It speaks RESP2 with
//! the commands of [`db`] (PING, GET, SET, INCR, DEL, …), enough for the
//! counter web app and for `redis-cli`. Also the client the web app uses
//! ([`client`]), which works against either server.
//!
//! ```text
//!   client ──RESP──► connection task ──► Db::execute (one mutex, held briefly) ──► reply
//! ```

pub mod client;
pub mod db;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::resp::{self, Frame};
pub use db::Db;

/// Flags of `weft example store`.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Address to listen on.
    #[arg(long, env = "WEFT_EXAMPLE_STORE_LISTEN", default_value = "0.0.0.0:6379")]
    pub listen: SocketAddr,
}

/// Serves until `shutdown` completes.
pub async fn serve(listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
    let db = Arc::new(Mutex::new(Db::default()));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let db = db.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &db).await {
                tracing::debug!(%peer, "store connection ended: {e}");
            }
        });
    }
}

/// Runs `weft example store`.
pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e} (is another store running there?)", args.listen))?;
    tracing::info!("store listening on {}", listener.local_addr()?);
    serve(listener, crate::shutdown_signal()).await?;
    Ok(())
}

async fn connection(mut stream: TcpStream, db: &Mutex<Db>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = BytesMut::with_capacity(4096);
    let mut output = BytesMut::with_capacity(4096);
    loop {
        // Answer every complete command in the buffer with one write
        // (pipelined clients send several at once).
        loop {
            match resp::parse_command(&mut input) {
                Ok(Some(args)) => {
                    if args[0].eq_ignore_ascii_case(b"QUIT") {
                        Frame::ok().encode(&mut output);
                        stream.write_all(&output).await?;
                        return Ok(());
                    }
                    let reply = db.lock().unwrap_or_else(|e| e.into_inner()).execute(&args, Instant::now());
                    reply.encode(&mut output);
                }
                Ok(None) => break,
                Err(e) => {
                    // As Redis does: say why, then close.
                    Frame::Error(format!("ERR Protocol error: {e}")).encode(&mut output);
                    stream.write_all(&output).await?;
                    return Ok(());
                }
            }
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::StoreClient;
    use std::time::Duration;

    #[tokio::test]
    async fn serves_the_client_and_pipelined_raw_commands() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, async {
            let _ = stopped.await;
        }));

        let client = StoreClient::new(addr.to_string(), Duration::from_secs(2));
        assert_eq!(client.incr("hits").await.unwrap(), 1);
        assert_eq!(client.incr("hits").await.unwrap(), 2);

        // Two commands in one write, one of them inline, then QUIT.
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(b"*2\r\n$3\r\nGET\r\n$4\r\nhits\r\nPING\r\nQUIT\r\n").await.unwrap();
        let mut reply = Vec::new();
        raw.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"$1\r\n2\r\n+PONG\r\n+OK\r\n");

        // Garbage is answered with a protocol error and the connection closes.
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(b"*1\r\n:5\r\n").await.unwrap();
        let mut reply = Vec::new();
        raw.read_to_end(&mut reply).await.unwrap();
        assert!(reply.starts_with(b"-ERR Protocol error"), "{}", String::from_utf8_lossy(&reply));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}

//! The Prometheus endpoint: `GET /metrics` in the text exposition format.
//!
//! # What this module owns
//! - A tiny HTTP/1.x responder on a tokio `TcpListener`: one request per connection, the
//!   request head bounded in size and time, `Connection: close`. A full HTTP stack would be
//!   a large dependency for one static GET route.
//! - Serving the latest text the daemon published in [`MetricsText`].
//!
//! # What it must never do
//! - Compute anything or talk to etcd: it serves what the daemon last rendered.
//! - Let a client hold a task forever: slow or oversized requests are dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The metrics text the daemon renders and the listener serves.
pub type MetricsText = Arc<Mutex<String>>;

/// Largest request head read; a scraper's GET is a few hundred bytes.
const MAX_REQUEST: usize = 8192;
/// Bound on reading the request and writing the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves connections until the listener fails.
pub async fn serve(listener: TcpListener, metrics: MetricsText) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    // A client that goes away mid-answer is nobody's problem.
                    let _ = tokio::time::timeout(IO_TIMEOUT, answer(stream, metrics)).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: MetricsText) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body, kind) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let text = metrics.lock().map(|m| m.clone()).unwrap_or_default();
            ("200 OK", text, "text/plain; version=0.0.4; charset=utf-8")
        }
        ("GET", _) => ("404 Not Found", "not found\n".to_owned(), "text/plain"),
        _ => (
            "405 Method Not Allowed",
            "GET only\n".to_owned(),
            "text/plain",
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

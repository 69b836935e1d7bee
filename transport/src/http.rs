//! The HTTP accept loop, bounded: at most `transport.max_http_connections` connections at once
//! (one more gets a 503 and is closed), a connection that has not sent a request's headers within
//! `transport.http_header_timeout_ms` is closed (slowloris), and on shutdown the open
//! connections get `transport.http_drain_ms` to finish before they are dropped, so the process
//! always exits. axum's own `serve` has none of these knobs, so connections are served here with
//! hyper directly (HTTP/1.1: what the page, the Rust client and `curl` speak).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::TransportError;

/// The limits of [`serve_bounded`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub drain: Duration,
}

/// What a refused connection is told before it is closed: the same JSON error as every other
/// refusal.
fn refused() -> Vec<u8> {
    let body = serde_json::json!({
        "error": "too_many_connections",
        "reason": "the server is at transport.max_http_connections; retry later",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener` until `shutdown` resolves; then `before_drain` runs (sessions
/// close), the connections are told to finish, and the call returns once they have, or after
/// `limits.drain` regardless.
pub(crate) async fn serve_bounded(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    before_drain: impl Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Dropping the sender tells every connection task to shut down gracefully.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("transport_http_connections_refused_total").increment(1);
            tracing::debug!(%peer, "connection refused: transport.max_http_connections reached");
            tokio::spawn(async move {
                let mut stream = stream;
                // Bounded: a peer that does not read its 503 is dropped all the same.
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&refused()))
                    .await;
            });
            continue;
        };
        metrics::gauge!("transport_http_connections_open").increment(1.0);
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => log_end(r),
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await);
                }
            }
            metrics::gauge!("transport_http_connections_open").decrement(1.0);
        });
    }
    drop(listener);
    before_drain.await;
    drop(stop_tx);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        let open = limits
            .max_connections
            .saturating_sub(permits.available_permits());
        tracing::warn!(
            open,
            "HTTP connections still open after transport.http_drain_ms; exiting without them"
        );
    }
    Ok(())
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        if e.is_timeout() {
            metrics::counter!("transport_http_header_timeouts_total").increment(1);
        }
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

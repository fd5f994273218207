//! The accept loop: warp's routes served over hyper with the limits a public server needs.
//! warp's own server has no setting for them, and without them enough slow or idle clients
//! hold every file descriptor and the server stops accepting.

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::{Filter, Reply};

/// Limits on connections (the WebSocket of a call is bounded by its token, not by these).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// HTTP connections open at once; past it, new ones wait in the listen backlog.
    pub connections: usize,
    /// For a request's headers to arrive, and for the next request on an idle keep-alive
    /// connection (hyper starts the same timer for both).
    pub header_read: Duration,
    /// Largest buffered request head.
    pub max_buf: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 1024,
            header_read: Duration::from_secs(10),
            max_buf: 64 * 1024,
        }
    }
}

/// Serve `routes` on `listener` until `shutdown`, then let requests in flight finish.
pub(super) async fn serve<F>(
    listener: TcpListener,
    routes: F,
    limits: Limits,
    shutdown: CancellationToken,
) where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let permits = Arc::new(Semaphore::new(limits.connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: give the open ones time to close
                    // rather than spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Media frames are small and latency-bound: never wait for an ACK to send one.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        let stop = shutdown.clone();
        connections.spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .max_buf_size(limits.max_buf)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let routes = warp::any().map(|| "ok");
        tokio::spawn(serve(listener, routes, limits, token.clone()));
        (addr, token)
    }

    /// Read until the server closes; what it sent.
    async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
        let mut buf = Vec::new();
        match tokio::time::timeout(within, stream.read_to_end(&mut buf)).await {
            Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn a_half_sent_request_is_closed_after_the_header_timeout() {
        let limits = Limits {
            header_read: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        assert!(
            read_to_close(&mut slow, Duration::from_secs(5))
                .await
                .is_some(),
            "the server kept a half-sent request open"
        );
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let limits = Limits {
            header_read: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut idle, Duration::from_secs(5))
            .await
            .expect("the idle connection was closed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn past_the_connection_limit_new_clients_wait_for_a_free_slot() {
        let limits = Limits {
            connections: 2,
            header_read: Duration::from_millis(500),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut holders = Vec::new();
        for _ in 0..2 {
            holders.push(TcpStream::connect(addr).await.unwrap());
        }
        // Let the server take both before the third arrives.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), third.read(&mut first))
                .await
                .is_err(),
            "served past the limit"
        );
        // The holders time out, their slots free up, and the third is served.
        let answer = read_to_close(&mut third, Duration::from_secs(5))
            .await
            .expect("served once a slot was free");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_returns() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            warp::any().map(|| "ok"),
            Limits::default(),
            token.clone(),
        ));
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stopped")
            .unwrap();
    }
}

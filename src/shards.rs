//! The threads that carry live calls: each runs a single-threaded runtime that owns the sockets
//! of the calls placed on it (their Media Stream and their agent connection), so a frame is
//! read, bridged and written on one thread, woken by that thread's own `epoll`, and no other
//! thread is woken for it. On tokio's shared runtime every frame could wake a second worker to
//! look for work to steal, and those wake-ups were a tenth of the dialer's time under load
//! (BENCHMARKS.md).
//!
//! One thread per core (`TOKIO_WORKER_THREADS` when set, as for the main runtime), started on
//! first use and kept for the life of the process. They own no work of their own: every task on
//! them belongs to a call, which its own cancellation token ends, so they need no place in the
//! shutdown tree.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;

struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static SHARDS: OnceLock<Option<Shards>> = OnceLock::new();

/// The runtime for the next call's sockets: the call threads in turn. Should they not start
/// (the system refused a thread), the caller's own runtime, as before they existed.
pub(crate) fn home() -> Handle {
    match SHARDS.get_or_init(start) {
        Some(shards) => {
            let i = shards.next.fetch_add(1, Ordering::Relaxed) % shards.handles.len();
            shards.handles[i].clone()
        }
        None => Handle::current(),
    }
}

/// Start the call threads now rather than on the first call, which would otherwise wait for
/// them.
pub(crate) fn warm() {
    SHARDS.get_or_init(start);
}

fn count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn start() -> Option<Shards> {
    let mut handles = Vec::new();
    for i in 0..count() {
        let started = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|runtime| {
                let handle = runtime.handle().clone();
                std::thread::Builder::new()
                    .name(format!("dialer-calls-{i}"))
                    // Drives the tasks spawned onto it, for as long as the process lives.
                    .spawn(move || runtime.block_on(std::future::pending::<()>()))
                    .map(|_| handle)
            });
        match started {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a call thread; calls run on the main runtime");
                return None;
            }
        }
    }
    Some(Shards {
        handles,
        next: AtomicUsize::new(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_spread_over_threads_that_are_not_the_callers() {
        let caller = std::thread::current().id();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..count() * 2 {
            let thread = home()
                .spawn(async { std::thread::current().id() })
                .await
                .unwrap();
            assert_ne!(thread, caller);
            threads.insert(thread);
        }
        assert_eq!(threads.len(), count(), "{threads:?}");
    }

    #[tokio::test]
    async fn a_socket_moved_to_a_call_thread_works_there() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"ping").await.unwrap();
            let mut answer = [0; 4];
            tcp.read_exact(&mut answer).await.unwrap();
            answer
        });
        let (accepted, _) = listener.accept().await.unwrap();
        let std = accepted.into_std().unwrap();
        home()
            .spawn(async move {
                let mut tcp = tokio::net::TcpStream::from_std(std).unwrap();
                let mut got = [0; 4];
                tcp.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"ping");
                tcp.write_all(b"pong").await.unwrap();
            })
            .await
            .unwrap();
        assert_eq!(&client.await.unwrap(), b"pong");
    }
}

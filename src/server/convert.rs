//! The Media Stream's WebSocket upgrade, done here rather than by `warp::ws()`: warp gives no
//! setting for the socket's buffers, and its defaults (a 128 KiB read buffer, zero-filled
//! before every read) cost each call more memory and time than its frames of a few hundred
//! bytes ever need. After the 101 the socket is framed by [`ws::frames`], as the agent leg is.

use crate::shards;
use crate::ws::Role;
use crate::ws::{self, FrameSink, FrameStream};
use futures_util::future;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::{StatusCode, header};
use warp::{Filter, Rejection, Reply};

/// A WebSocket handshake that checked out, waiting for its reply to be sent.
pub(super) struct Upgrade {
    accept: String,
    on_upgrade: OnUpgrade,
}

/// Why a request to a WebSocket route is not a WebSocket handshake.
#[derive(Debug)]
pub(super) struct NotWebSocket;

impl warp::reject::Reject for NotWebSocket {}

/// A `GET` with `Connection: upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a
/// `Sec-WebSocket-Key` (RFC 6455 §4.2.1), on a connection hyper can hand over.
pub(super) fn upgrade() -> impl Filter<Extract = (Upgrade,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::header::<String>("connection"))
        .and(warp::header::exact_ignore_case("upgrade", "websocket"))
        .and(warp::header::exact("sec-websocket-version", "13"))
        .and(warp::header::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<OnUpgrade>())
        .and_then(
            |connection: String, key: String, on_upgrade: Option<OnUpgrade>| {
                let upgrade = connection
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
                future::ready(match on_upgrade {
                    Some(on_upgrade) if upgrade => Ok(Upgrade {
                        accept: derive_accept_key(key.as_bytes()),
                        on_upgrade,
                    }),
                    _ => Err(warp::reject::custom(NotWebSocket)),
                })
            },
        )
}

impl Upgrade {
    /// The 101 reply; once hyper has sent it, `handle` gets the socket's two frame halves.
    /// `max_message` bounds each message and frame the peer may send.
    pub(super) fn reply<F, Fut>(self, max_message: usize, handle: F) -> impl Reply
    where
        F: FnOnce(FrameStream, FrameSink) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "media stream upgrade failed");
                    return;
                }
            };
            // The accept loop serves plain TCP: take the socket back from hyper, so reads and
            // writes go to it directly rather than through hyper's boxed IO, and move it to a
            // call thread, which will carry the whole call (`crate::shards`).
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let socket = match parts.io.into_inner().into_std() {
                        Ok(socket) => socket,
                        Err(e) => {
                            tracing::debug!(error = %e, "media stream socket lost on upgrade");
                            return;
                        }
                    };
                    // What hyper read past the request may already hold the first frames.
                    let leftover = parts.read_buf;
                    shards::home().spawn(async move {
                        match TcpStream::from_std(socket) {
                            Ok(socket) => {
                                let (stream, sink) =
                                    ws::frames(socket, Role::Server, &leftover, max_message);
                                handle(stream, sink).await;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "media stream socket lost on upgrade");
                            }
                        }
                    });
                }
                Err(upgraded) => {
                    let (stream, sink) =
                        ws::frames(TokioIo::new(upgraded), Role::Server, &[], max_message);
                    handle(stream, sink).await;
                }
            }
        });
        let reply = warp::reply::with_status(warp::reply(), StatusCode::SWITCHING_PROTOCOLS);
        let reply = warp::reply::with_header(reply, header::CONNECTION, "upgrade");
        let reply = warp::reply::with_header(reply, header::UPGRADE, "websocket");
        warp::reply::with_header(reply, header::SEC_WEBSOCKET_ACCEPT, self.accept)
    }
}

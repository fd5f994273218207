//! The embedded HTTP/WebSocket server Twilio talks to: status and answering-machine callbacks,
//! TwiML, the Media Stream socket, and a health check. Every Twilio request is checked against
//! `X-Twilio-Signature` before it changes anything. This module is the only one that knows warp.

mod convert;
mod routes;

use crate::call::registry::Registry;
use crate::secret::Secret;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
#[derive(Clone)]
pub struct ServerState {
    pub registry: Arc<Registry>,
    /// The key Twilio signs requests with.
    pub auth_token: Secret,
    /// The public base URL Twilio uses to reach us (`https://…`, no trailing slash): signatures
    /// are computed over the URL Twilio requested, not over what a proxy forwarded to us.
    pub public_url: String,
}

impl ServerState {
    /// `wss://…` (or `ws://…`) form of the public URL, for the Media Stream.
    pub fn public_ws_url(&self) -> String {
        to_ws_url(&self.public_url)
    }
}

/// `https://x` → `wss://x`, `http://x` → `ws://x`.
pub fn to_ws_url(public_url: &str) -> String {
    if let Some(rest) = public_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = public_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        public_url.to_string()
    }
}

/// Paths Twilio is given.
pub mod paths {
    pub const STATUS: &str = "/twilio/status";
    pub const AMD: &str = "/twilio/amd";
    pub const TWIML: &str = "/twilio/twiml";
    pub const MEDIA: &str = "/twilio/media";
}

/// Bind the server's listener (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: ServerState, shutdown: CancellationToken) {
    warp::serve(routes::routes(state))
        .incoming(listener)
        .graceful(shutdown.cancelled_owned())
        .run()
        .await;
}

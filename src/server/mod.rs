//! The embedded HTTP/WebSocket server Twilio talks to: incoming calls' Voice URL, status and
//! answering-machine callbacks, the Media Stream socket, the operator's health (naming this
//! process), readiness and metrics, and the call API (`/api/`, see [`api`]). Every Twilio
//! request is checked against `X-Twilio-Signature`, computed over `PUBLIC_URL`, before it
//! changes anything. This module is the only one that knows warp.

mod accept;
pub(crate) mod api;
mod auth;
mod convert;
pub(crate) mod desk;
pub(crate) mod metrics;
mod routes;

pub(crate) use accept::Limits;
pub(crate) use api::{Api, ApiSlot};

use crate::call::registry::Registry;
use crate::inbound::Reception;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::webhooks::PublicUrls;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct ServerState {
    pub registry: Arc<Registry>,
    /// The key Twilio signs requests with.
    pub auth_token: Secret,
    /// The URLs Twilio was given: signatures are computed over them.
    pub urls: PublicUrls,
    /// The call API, once `serve` enables it.
    pub api: ApiSlot,
    pub metrics: Arc<Metrics>,
    /// Answers incoming calls (refusing them in a process that does not serve).
    pub reception: Arc<Reception>,
    /// This process's id, which `/health` answers with: whoever knows it (`dialer doctor`)
    /// can tell this process from another one behind the same address.
    pub instance: String,
}

/// Bind the server's listener (port 0 picks a free port).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve until `shutdown` is cancelled, then let requests in flight finish.
pub(crate) async fn serve(
    listener: TcpListener,
    state: ServerState,
    limits: Limits,
    shutdown: CancellationToken,
) {
    accept::serve(listener, routes::routes(state), limits, shutdown).await;
}

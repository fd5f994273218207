//! A local fake of AssemblyAI's Voice Agent API WebSocket (`/v1/ws`), built from the published
//! protocol (`shared/reference/assemblyai-voice-agent.md`, Appendix B). It owns the server:
//! handshake and auth, strict `session.update` validation, the event sequences of the real
//! service (greeting, user turns, barge-in, tool calls, clean end), paced `reply.audio`, and a
//! per-connection [`SessionRecord`] for tests. It rejects what the real service rejects.
//!
//! The agent hears only audio: simulated speech (`sim::speech`) is transcribed, anything else
//! is loud or silent noise. It never looks at who the callee is (`sim::personas`).
//!
//! Deliberate simplifications: no stored agents (any `agent_id` is `agent_not_found`), no
//! temporary-token endpoint (`?token=` must carry the API key), `hold` tools behave like
//! `interactive` ones, `reply.create` during a reply is queued rather than replacing it, and
//! `audio_rate_violation` is never raised.
//!
//! With no faults configured it behaves as above; [`faults`] lists what it can be told to do
//! wrong, per connection ([`FakeAgentConfig::faults`]) or on demand ([`FakeAgent::inject`]).

mod brain;
mod conn;
mod ears;
pub mod faults;
mod session;

use crate::sim::TimeScale;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

pub use brain::match_disposition;
pub use faults::{AgentFault, ErrorAt, FaultRule, Sessions};
pub use session::DEFAULT_VOICE;

/// The path the real service serves.
pub const PATH: &str = "/v1/ws";

/// The documented voices (16) plus `iris` and `reid`, seen live (reference §10.1).
pub const VOICES: &[&str] = &[
    "alba", "eve", "george", "jane", "jean", "mary", "michael", "anna", "charles", "paul", "vera",
    "giovanni", "lola", "juergen", "rafael", "estelle", "iris", "reid",
];

/// How `session.resume` is answered. Live, every resume failed (reference §7), hence the
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResumeMode {
    /// `session_not_found` and close 1008.
    #[default]
    Reject,
    /// Within 30 s (simulated) of a drop: `session.ready` for the same session, no greeting.
    Accept,
}

#[derive(Debug, Clone)]
pub struct FakeAgentConfig {
    /// Accepted as `Authorization: Bearer <key>`, a raw `Authorization: <key>`, or `?token=<key>`.
    pub api_key: String,
    pub time_scale: TimeScale,
    /// Voices accepted in `output.voice`.
    pub voices: Vec<String>,
    pub resume: ResumeMode,
    /// Faults to inject; a connection gets the first rule that matches it. Empty: none.
    pub faults: Vec<FaultRule>,
}

impl Default for FakeAgentConfig {
    fn default() -> Self {
        Self {
            api_key: "sim-assemblyai-key".into(),
            time_scale: TimeScale::REAL_TIME,
            voices: VOICES.iter().map(|v| v.to_string()).collect(),
            resume: ResumeMode::Reject,
            faults: Vec::new(),
        }
    }
}

/// What happened on one connection, for tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionRecord {
    pub session_id: Option<String>,
    /// The `session` object of the first `session.update`.
    pub first_update: Option<Value>,
    /// Every `reply.audio` byte sent, decoded from base64, in order.
    pub audio_sent: Vec<u8>,
    /// Bytes of `input.audio` received after `session.ready`.
    pub audio_received: usize,
    /// The `type` of every event sent, in order.
    pub events_sent: Vec<String>,
    /// `session.error` codes sent.
    pub errors_sent: Vec<String>,
    /// `tool.call`s sent: name, arguments.
    pub tool_calls: Vec<(String, Value)>,
    /// `tool.result` messages received.
    pub tool_results: Vec<Value>,
    /// `reply.create` instructions received (empty when it had none).
    pub reply_creates: Vec<String>,
    pub user_transcripts: Vec<String>,
    /// `transcript.agent`: text, interrupted.
    pub agent_transcripts: Vec<(String, bool)>,
    /// The client sent `session.end`.
    pub ended_by_client: bool,
    /// The code the server closed with.
    pub close_code: Option<u16>,
    /// The fault chosen for (or injected into) this connection.
    pub fault: Option<AgentFault>,
    /// The fault took effect: a test that expects it can tell it from a call that ended first.
    pub fault_fired: bool,
}

/// The running fake.
#[derive(Debug)]
pub struct FakeAgent {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeAgent {
    /// Bind `127.0.0.1:0` and serve until `shutdown` is cancelled.
    /// Faults the real service could not produce are refused (`InvalidInput`).
    pub async fn start(
        config: FakeAgentConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<FakeAgent> {
        for rule in &config.faults {
            rule.fault
                .check()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            records: Mutex::new(Vec::new()),
            held: Mutex::new(HashMap::new()),
        });
        tokio::spawn(accept_loop(listener, shared.clone(), shutdown));
        Ok(FakeAgent { addr, shared })
    }

    /// `ws://127.0.0.1:PORT/v1/ws`
    pub fn url(&self) -> String {
        format!("ws://{}{PATH}", self.addr)
    }

    /// A snapshot of every connection that completed the WebSocket handshake, in order.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        lock(&self.shared.records)
            .iter()
            .map(|c| lock(&c.record).clone())
            .collect()
    }

    /// Inject `fault` into the `n`-th connection (from 1, as in [`FakeAgent::sessions`]) now; a
    /// timed fault fires its `after` from now, or from `session.ready` if that is still to
    /// come. Refused for a fault the real service could not produce, one that only concerns
    /// setup, or a connection that is gone.
    pub fn inject(&self, n: usize, fault: AgentFault) -> Result<(), String> {
        fault.check()?;
        if !fault.is_live() {
            return Err(format!("{fault:?} only concerns a session being set up"));
        }
        let records = lock(&self.shared.records);
        let conn = n
            .checked_sub(1)
            .and_then(|i| records.get(i))
            .ok_or_else(|| format!("no connection {n}"))?;
        conn.inject
            .send(fault)
            .map_err(|_| format!("connection {n} is closed"))
    }
}

/// One connection, as tests reach it.
#[derive(Debug)]
struct ConnEntry {
    record: Arc<Mutex<SessionRecord>>,
    inject: mpsc::UnboundedSender<AgentFault>,
}

#[derive(Debug)]
struct Shared {
    config: FakeAgentConfig,
    records: Mutex<Vec<ConnEntry>>,
    /// Sessions dropped without `session.end`, kept for `ResumeMode::Accept`.
    held: Mutex<HashMap<String, conn::Held>>,
}

/// std Mutex: never held across an await, and a poisoned lock still holds usable data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, shared.clone(), shutdown.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "fake agent: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut credential = None;
    // The error type is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        if req.uri().path() != PATH {
            let mut not_found = ErrorResponse::new(Some("Not Found".into()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            return Err(not_found);
        }
        credential = credential_of(req);
        Ok(resp)
    };
    // The real server runs Python `websockets`, whose default frame limit is 1 MiB.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config));
    let ws = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(std::time::Duration::from_secs(10), handshake) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "fake agent: handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    let authorized = credential.as_deref() == Some(shared.config.api_key.as_str());
    let (inject, injected) = mpsc::unbounded_channel();
    let record = Arc::new(Mutex::new(SessionRecord::default()));
    let fault = {
        let mut records = lock(&shared.records);
        records.push(ConnEntry {
            record: record.clone(),
            inject,
        });
        faults::for_session(&shared.config.faults, records.len())
    };
    lock(&record).fault = fault.clone();
    conn::run(ws, shared, record, authorized, fault, injected, shutdown).await;
}

/// The credential on the upgrade request: the `Authorization` header (`Bearer X` or raw `X`),
/// else the `token` query parameter.
fn credential_of(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get("authorization") {
        let v = h.to_str().ok()?.trim();
        let key = match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => v,
        };
        return Some(key.to_string());
    }
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests;

//! Opening a Voice Agent WebSocket: the URL is a setting (production, the EU host, or a
//! simulator), the API key travels as `Authorization: Bearer`.

use super::config::AgentConfig;
use super::protocol::{self, AgentError, AgentMessage, ToolSpec};
use crate::secret::Secret;
use crate::ws::{self, Frame, FrameSink, FrameStream};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, http};

/// Production endpoint.
pub(crate) const DEFAULT_URL: &str = "wss://agents.assemblyai.com/v1/ws";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("ASSEMBLYAI_AGENT_URL '{0}' is not a ws:// or wss:// URL")]
    BadUrl(String),
    #[error("AssemblyAI refused the connection (HTTP {0}); check ASSEMBLYAI_API_KEY")]
    Refused(u16),
    #[error("cannot reach the Voice Agent API at {url}: {detail}")]
    Unreachable { url: String, detail: String },
}

/// Connect and return the two halves. The session itself is configured by the bridge.
pub(crate) async fn connect(
    url: &str,
    api_key: &Secret,
) -> Result<(FrameStream, FrameSink), ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|_| ConnectError::BadUrl(url.to_string()))?;
    let value = http::HeaderValue::from_str(&format!("Bearer {}", api_key.expose()))
        .map_err(|_| ConnectError::BadUrl(url.to_string()))?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, value);
    // Audio frames are small and latency-bound: never hold one back waiting for an ACK.
    let connecting =
        tokio_tungstenite::connect_async_with_config(request, Some(ws::config()), true);
    let (socket, _) = tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
        .await
        .map_err(|_| ConnectError::Unreachable {
            url: url.to_string(),
            detail: "timed out after 10 s".into(),
        })?
        .map_err(|e| match e {
            tungstenite::Error::Http(resp) => ConnectError::Refused(resp.status().as_u16()),
            tungstenite::Error::Url(_) => ConnectError::BadUrl(url.to_string()),
            other => ConnectError::Unreachable {
                url: url.to_string(),
                detail: other.to_string(),
            },
        })?;
    Ok(ws::from_tungstenite(socket))
}

/// Why a trial session failed.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The service refused the key or the session (`unauthorized`, `invalid_value`, …).
    #[error(transparent)]
    Rejected(AgentError),
    #[error("the Voice Agent API did not confirm a trial session within {0} s")]
    Timeout(u64),
    #[error("the Voice Agent API closed a trial session before confirming it")]
    Closed,
}

/// Open a session with this agent and close it at once. A campaign does this before its first
/// dial, so that a rejected key or settings the service refuses (an unknown voice, say) stop it
/// before anyone is called, rather than on the first callees to answer. The service says
/// nothing until the first `session.update`, so the trial has to send one.
pub(crate) async fn preflight(
    url: &str,
    api_key: &Secret,
    agent: &AgentConfig,
    tools: &[ToolSpec],
    limit: Duration,
) -> Result<(), PreflightError> {
    let (mut stream, mut sink) = connect(url, api_key).await?;
    let update = protocol::session_update(agent, tools);
    if sink.send(Frame::text(update)).await.is_err() {
        return Err(PreflightError::Closed);
    }
    let verdict = tokio::time::timeout(limit, async {
        let mut rejected = None;
        while let Some(frame) = stream.next().await {
            let Frame::Text(bytes) = frame else {
                if matches!(frame, Frame::Close(_)) {
                    break;
                }
                continue;
            };
            match protocol::parse_bytes(&bytes) {
                Ok(AgentMessage::SessionReady { .. }) => return Ok(()),
                Ok(AgentMessage::SessionError(error)) => {
                    rejected = Some(PreflightError::Rejected(error));
                }
                _ => {}
            }
        }
        Err(rejected.unwrap_or(PreflightError::Closed))
    })
    .await
    .unwrap_or(Err(PreflightError::Timeout(limit.as_secs())));
    let _ = sink
        .send(Frame::Close(Some((1000, "trial session".into()))))
        .await;
    verdict
}

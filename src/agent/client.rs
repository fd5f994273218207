//! Opening a Voice Agent WebSocket: the URL is a setting (production, the EU host, or a
//! simulator), the API key travels as `Authorization: Bearer`.

use crate::secret::Secret;
use crate::ws::{self, FrameSink, FrameStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, http};

/// Production endpoint.
pub const DEFAULT_URL: &str = "wss://agents.assemblyai.com/v1/ws";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("ASSEMBLYAI_AGENT_URL '{0}' is not a ws:// or wss:// URL")]
    BadUrl(String),
    #[error("AssemblyAI refused the connection (HTTP {0}); check ASSEMBLYAI_API_KEY")]
    Refused(u16),
    #[error("cannot reach the Voice Agent API at {url}: {detail}")]
    Unreachable { url: String, detail: String },
}

/// Connect and return the two halves. The session itself is configured by the bridge.
pub async fn connect(
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
    let connecting = tokio_tungstenite::connect_async(request);
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

//! Opening a Voice Agent WebSocket: the URL is a setting (production, the EU host, or a
//! simulator), the API key travels as `Authorization: Bearer`, and `wss://` is verified
//! against the system's roots.

use super::config::AgentConfig;
use super::protocol::{self, AgentError, AgentMessage, ToolSpec};
use crate::secret::Secret;
use crate::ws::{self, Frame, FrameSink, FrameStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, http};

/// Production endpoint.
pub(crate) const DEFAULT_URL: &str = "wss://agents.assemblyai.com/v1/ws";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("ASSEMBLYAI_AGENT_URL '{url}' is not usable: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("AssemblyAI refused the connection (HTTP {0}); check ASSEMBLYAI_API_KEY")]
    Refused(u16),
    #[error("cannot reach the Voice Agent API at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The TLS handshake failed or the certificate was not trusted: a proxy that inspects
    /// TLS needs its CA in `SSL_CERT_FILE`, which the system roots honour.
    #[error(
        "no secure connection to the Voice Agent API at {url}: {detail} (a TLS-inspecting proxy's CA can be added with SSL_CERT_FILE)"
    )]
    Tls { url: String, detail: String },
}

/// Which certificates a `wss://` agent URL must chain to.
#[derive(Clone, Default)]
pub(crate) enum AgentTls {
    /// The operating system's roots (plus `SSL_CERT_FILE`/`SSL_CERT_DIR`), as reqwest uses
    /// for Twilio.
    #[default]
    System,
    /// A config built by the caller: tests trust their own self-signed certificate.
    #[cfg(test)]
    Custom(Arc<rustls::ClientConfig>),
}

impl AgentTls {
    fn config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        match self {
            #[cfg(test)]
            Self::Custom(config) => Ok(config.clone()),
            // Reading the system's roots parses every CA file: once per process is enough.
            Self::System => {
                static SYSTEM: OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
                    OnceLock::new();
                SYSTEM.get_or_init(system_config).clone()
            }
        }
    }
}

fn system_config() -> Result<Arc<rustls::ClientConfig>, String> {
    // Named explicitly: rustls refuses to guess when more than one provider is compiled in.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| {
        format!("cannot load the system's CA certificates ({e}); install ca-certificates")
    })?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connect and return the two halves. The session itself is configured by the bridge.
pub(crate) async fn connect(
    url: &str,
    api_key: &Secret,
) -> Result<(FrameStream, FrameSink), ConnectError> {
    connect_with(url, api_key, &AgentTls::System).await
}

async fn connect_with(
    url: &str,
    api_key: &Secret,
    tls: &AgentTls,
) -> Result<(FrameStream, FrameSink), ConnectError> {
    let bad_url = |detail: String| ConnectError::BadUrl {
        url: url.to_string(),
        detail,
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| bad_url(e.to_string()))?;
    let connector = match request.uri().scheme_str() {
        Some("wss") => {
            let config = tls.config().map_err(|detail| ConnectError::Tls {
                url: url.to_string(),
                detail,
            })?;
            Some(tokio_tungstenite::Connector::Rustls(config))
        }
        Some("ws") => Some(tokio_tungstenite::Connector::Plain),
        _ => {
            return Err(bad_url(
                "the scheme must be wss:// (or ws:// for a simulator)".into(),
            ));
        }
    };
    let value = http::HeaderValue::from_str(&format!("Bearer {}", api_key.expose()))
        .map_err(|_| bad_url("the API key is not a valid header value".into()))?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, value);
    // Audio frames are small and latency-bound: never hold one back waiting for an ACK.
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws::config()),
        true,
        connector,
    );
    let (socket, _) = tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
        .await
        .map_err(|_| ConnectError::Unreachable {
            url: url.to_string(),
            detail: "timed out after 10 s".into(),
        })?
        .map_err(|e| match e {
            tungstenite::Error::Http(resp) => ConnectError::Refused(resp.status().as_u16()),
            tungstenite::Error::Url(e) => bad_url(e.to_string()),
            tungstenite::Error::Tls(e) => ConnectError::Tls {
                url: url.to_string(),
                detail: e.to_string(),
            },
            // tokio-rustls reports a refused certificate as an I/O error wrapping rustls's.
            tungstenite::Error::Io(e) if tls_failure(&e).is_some() => ConnectError::Tls {
                url: url.to_string(),
                detail: tls_failure(&e).unwrap_or_default(),
            },
            other => ConnectError::Unreachable {
                url: url.to_string(),
                detail: other.to_string(),
            },
        })?;
    Ok(ws::from_tungstenite(socket))
}

fn tls_failure(e: &std::io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(|tls| tls.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// A `wss://` server on loopback with a certificate for `localhost` that no system trusts.
    /// It answers one connection with the `Authorization` header it was sent, as a text frame.
    async fn tls_agent() -> (String, CertificateDer<'static>) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut authorization = String::new();
                // The callback's error type is tungstenite's; this one never fails.
                #[allow(clippy::result_large_err)]
                let seen = |req: &Request, resp: Response| {
                    authorization = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    Ok(resp)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(tls, seen).await else {
                    continue;
                };
                let _ = socket.send(Message::text(authorization)).await;
            }
        });
        (format!("wss://localhost:{port}/v1/ws"), cert)
    }

    fn trusting(cert: CertificateDer<'static>) -> AgentTls {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        AgentTls::Custom(Arc::new(config))
    }

    #[tokio::test]
    async fn wss_carries_the_session_when_the_certificate_chains_to_a_trusted_root() {
        let (url, cert) = tls_agent().await;
        let key = Secret::new("agent-key".to_string());
        let (mut stream, _sink) = connect_with(&url, &key, &trusting(cert)).await.unwrap();
        let Some(Frame::Text(first)) = stream.next().await else {
            panic!("the server's first frame did not arrive over TLS");
        };
        assert_eq!(&first[..], b"Bearer agent-key");
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_a_tls_error_that_says_so() {
        let (url, _) = tls_agent().await;
        let key = Secret::new("agent-key".to_string());
        let Err(err) = connect(&url, &key).await else {
            panic!("a self-signed certificate was trusted");
        };
        assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
        let line = err.to_string();
        assert!(line.contains("no secure connection"), "{line}");
        assert!(!line.contains("agent-key"), "{line}");
    }

    #[tokio::test]
    async fn a_url_that_is_not_a_websocket_is_refused_before_connecting() {
        let key = Secret::new("k".to_string());
        for url in [
            "https://agents.assemblyai.com/v1/ws",
            "agents.assemblyai.com",
        ] {
            let Err(err) = connect(url, &key).await else {
                panic!("{url} was accepted");
            };
            assert!(matches!(err, ConnectError::BadUrl { .. }), "{url}: {err:?}");
        }
    }
}

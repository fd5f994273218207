//! Opening a Voice Agent WebSocket: the URL is a setting (production, the EU host, or a
//! simulator), the API key travels as `Authorization: Bearer`, and `wss://` is verified
//! against the system's roots. The upgrade request is written here (TCP, then rustls for
//! `wss://`, then RFC 6455's HTTP/1.1 handshake), so that the socket it leaves is framed by
//! [`ws::frames`] directly.

use super::config::AgentConfig;
use super::protocol::{self, AgentError, AgentMessage, ToolSpec};
use crate::secret::Secret;
use crate::ws::{self, Frame, FrameSink, FrameStream, Role};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http;

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
    let parsed = url::Url::parse(url).map_err(|e| bad_url(e.to_string()))?;
    let secure = match parsed.scheme() {
        "wss" => true,
        "ws" => false,
        _ => {
            return Err(bad_url(
                "the scheme must be wss:// (or ws:// for a simulator)".into(),
            ));
        }
    };
    let (Some(host), Some(port)) = (parsed.host(), parsed.port_or_known_default()) else {
        return Err(bad_url("the URL has no host".into()));
    };
    // Checked as a header value so that the key cannot end the header early.
    let authorization = http::HeaderValue::from_str(&format!("Bearer {}", api_key.expose()))
        .map_err(|_| bad_url("the API key is not a valid header value".into()))?;
    let tls_config = if secure {
        Some(tls.config().map_err(|detail| ConnectError::Tls {
            url: url.to_string(),
            detail,
        })?)
    } else {
        None
    };
    let request = Upgrade {
        // As the URL gives it: with the port only when it is not the scheme's own.
        host_header: match parsed.port() {
            Some(port) => format!("{}:{port}", host),
            None => host.to_string(),
        },
        target: &parsed[url::Position::BeforePath..url::Position::AfterQuery],
        authorization: &authorization,
    };
    let host = match host {
        url::Host::Domain(d) => d.to_string(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    let unreachable = |detail: String| ConnectError::Unreachable {
        url: url.to_string(),
        detail,
    };
    let connecting = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // Audio frames are small and latency-bound: never hold one back waiting for an ACK.
        tcp.set_nodelay(true)
            .map_err(|e| unreachable(e.to_string()))?;
        match tls_config {
            None => request.send(tcp).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| bad_url(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| match tls_failure(&e) {
                        Some(detail) => ConnectError::Tls {
                            url: url.to_string(),
                            detail,
                        },
                        None => unreachable(e.to_string()),
                    })?;
                request.send(tls).await
            }
        }
        .map_err(|e| match e {
            HandshakeError::Refused(status) => ConnectError::Refused(status),
            HandshakeError::Failed(detail) => unreachable(detail),
        })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| unreachable(format!("timed out after {} s", CONNECT_TIMEOUT.as_secs())))?
}

/// The whole of connecting (TCP, TLS and the upgrade) must be done within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest upgrade response read: a 101 is a few hundred bytes, and a refusal's headers
/// (its body is never read) not much more.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Messages from the agent are JSON events with at most a few KiB of audio or text each. The
/// limit only bounds what a misbehaving peer can make a call buffer.
const MAX_AGENT_MESSAGE: usize = 1024 * 1024;

/// The HTTP/1.1 upgrade request of RFC 6455 §4.1, sent on a connected (and secured) stream.
struct Upgrade<'a> {
    host_header: String,
    /// Path and query.
    target: &'a str,
    authorization: &'a http::HeaderValue,
}

/// Why the upgrade did not give a WebSocket. Neither carries the request (and so the key).
#[derive(Debug)]
enum HandshakeError {
    /// The server answered with this status rather than 101.
    Refused(u16),
    Failed(String),
}

impl Upgrade<'_> {
    async fn send<S>(&self, mut io: S) -> Result<(FrameStream, FrameSink), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let failed = |e: std::io::Error| HandshakeError::Failed(e.to_string());
        let key = generate_key();
        let mut request = Vec::with_capacity(256);
        request.extend_from_slice(b"GET ");
        request.extend_from_slice(self.target.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        request.extend_from_slice(self.host_header.as_bytes());
        request.extend_from_slice(b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n");
        request.extend_from_slice(b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
        request.extend_from_slice(key.as_bytes());
        request.extend_from_slice(b"\r\nAuthorization: ");
        request.extend_from_slice(self.authorization.as_bytes());
        request.extend_from_slice(b"\r\n\r\n");
        io.write_all(&request).await.map_err(failed)?;
        // TLS keeps the request in its last record until flushed.
        io.flush().await.map_err(failed)?;

        let mut buf = BytesMut::with_capacity(1024);
        let head = loop {
            if buf.len() >= MAX_RESPONSE_HEAD {
                return Err(HandshakeError::Failed(format!(
                    "the upgrade response's headers exceed {MAX_RESPONSE_HEAD} bytes"
                )));
            }
            buf.reserve(1024);
            if io.read_buf(&mut buf).await.map_err(failed)? == 0 {
                return Err(HandshakeError::Failed(
                    "the server closed the connection during the WebSocket upgrade".into(),
                ));
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buf) {
                Ok(httparse::Status::Partial) => continue,
                Ok(httparse::Status::Complete(n)) => {
                    let status = response.code.unwrap_or_default();
                    if status != 101 {
                        return Err(HandshakeError::Refused(status));
                    }
                    check_upgrade(response.headers, &key)?;
                    break n;
                }
                Err(e) => {
                    return Err(HandshakeError::Failed(format!(
                        "the upgrade response is not HTTP: {e}"
                    )));
                }
            }
        };
        // Anything after the headers is already the server's first frames.
        Ok(ws::frames(
            io,
            Role::Client,
            &buf[head..],
            MAX_AGENT_MESSAGE,
        ))
    }
}

/// A 101 must agree to a WebSocket and prove it read our key (RFC 6455 §4.1, the client's
/// checks 2-4).
fn check_upgrade(headers: &[httparse::Header<'_>], key: &str) -> Result<(), HandshakeError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let invalid = |what: &str| HandshakeError::Failed(format!("the upgrade response {what}"));
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(invalid("does not upgrade to websocket"));
    }
    let connection = header("connection").unwrap_or_default();
    if !connection
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err(invalid("lacks Connection: upgrade"));
    }
    if header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(invalid("has the wrong Sec-WebSocket-Accept"));
    }
    Ok(())
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

    /// A `ws://` server on loopback that answers one upgrade with `reply(key)`: the bytes of
    /// its response (and whatever follows), given the request's `Sec-WebSocket-Key`.
    async fn raw_agent(reply: fn(&str) -> Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0];
                if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap_or_default()
                .to_string();
            let _ = tcp.write_all(&reply(&key)).await;
            // Held open until the client is done with it.
            let _ = tcp.read(&mut [0; 64]).await;
        });
        format!("ws://127.0.0.1:{port}/v1/ws?sample_rate=8000")
    }

    fn switching(key: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn frames_sent_with_the_101_are_read_first() {
        let url = raw_agent(|key| {
            let mut out = switching(key);
            // An unmasked text frame, in the same write as the headers.
            out.extend_from_slice(b"\x81\x05ready");
            out
        })
        .await;
        let key = Secret::new("k".to_string());
        let (mut stream, _sink) = connect(&url, &key).await.unwrap();
        assert_eq!(
            stream.next().await,
            Some(Frame::Text(bytes::Bytes::from_static(b"ready")))
        );
    }

    #[tokio::test]
    async fn a_status_other_than_101_is_a_refusal_with_that_status() {
        let url =
            raw_agent(|_| b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
        let key = Secret::new("agent-key".to_string());
        let Err(err) = connect(&url, &key).await else {
            panic!("a 401 was taken for an upgrade");
        };
        assert_eq!(err, ConnectError::Refused(401));
    }

    #[tokio::test]
    async fn a_101_with_the_wrong_accept_key_is_not_a_websocket() {
        let url = raw_agent(|_| switching("not the key we sent")).await;
        let key = Secret::new("agent-key".to_string());
        let Err(err) = connect(&url, &key).await else {
            panic!("a wrong Sec-WebSocket-Accept was accepted");
        };
        assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
        assert!(!err.to_string().contains("agent-key"), "{err}");
    }

    #[tokio::test]
    async fn endless_response_headers_are_cut_off() {
        let url = raw_agent(|_| {
            let mut out = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
            // One header that never ends.
            out.extend_from_slice(format!("X-Padding: {}", "p".repeat(40_000)).as_bytes());
            out
        })
        .await;
        let key = Secret::new("k".to_string());
        let Err(err) = connect(&url, &key).await else {
            panic!("endless headers were accepted");
        };
        assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn ws_carries_frames_both_ways_with_a_tungstenite_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
            // Echo each text back until the close.
            while let Some(Ok(Message::Text(text))) = socket.next().await {
                let _ = socket.send(Message::Text(text)).await;
            }
        });
        let key = Secret::new("k".to_string());
        let url = format!("ws://localhost:{port}/v1/ws");
        let (mut stream, mut sink) = connect(&url, &key).await.unwrap();
        sink.send(Frame::text("hello".into())).await.unwrap();
        assert_eq!(
            stream.next().await,
            Some(Frame::Text(bytes::Bytes::from_static(b"hello")))
        );
        sink.send(Frame::Close(Some((1000, "done".into()))))
            .await
            .unwrap();
        assert!(matches!(stream.next().await, Some(Frame::Close(_)) | None));
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

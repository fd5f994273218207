//! The Media Streams wire format as Twilio speaks it on a bidirectional `<Connect><Stream>`:
//! the messages Twilio sends (`connected`, `start`, `media`, `mark`, `stop`, counters as JSON
//! strings), strict validation of what the server may send back (`media`, `mark`, `clear`
//! only; anything else is warning 31950/31951), the outbound playback buffer with marks, the
//! stream URL rules and the signed WebSocket handshake.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(super) fn connected() -> Value {
    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
}

pub(super) fn start(
    seq: u64,
    stream_sid: &str,
    account_sid: &str,
    call_sid: &str,
    params: &[(String, String)],
) -> Value {
    let custom: Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "event": "start",
        "sequenceNumber": seq.to_string(),
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": stream_sid,
    })
}

/// An inbound frame. `chunk` counts from 1; `timestamp` is the frame's presentation time in
/// milliseconds since the stream started.
pub(super) fn media(seq: u64, stream_sid: &str, chunk: u64, timestamp: u64, audio: &[u8]) -> Value {
    json!({
        "event": "media",
        "sequenceNumber": seq.to_string(),
        "media": {
            "track": "inbound",
            "chunk": chunk.to_string(),
            "timestamp": timestamp.to_string(),
            "payload": STANDARD.encode(audio),
        },
        "streamSid": stream_sid,
    })
}

pub(super) fn mark(seq: u64, stream_sid: &str, name: &str) -> Value {
    json!({
        "event": "mark",
        "sequenceNumber": seq.to_string(),
        "streamSid": stream_sid,
        "mark": {"name": name},
    })
}

/// A key the callee pressed (bidirectional streams only, inbound track).
pub(super) fn dtmf(seq: u64, stream_sid: &str, digit: char) -> Value {
    json!({
        "event": "dtmf",
        "streamSid": stream_sid,
        "sequenceNumber": seq.to_string(),
        "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
    })
}

pub(super) fn stop(seq: u64, stream_sid: &str, account_sid: &str, call_sid: &str) -> Value {
    json!({
        "event": "stop",
        "sequenceNumber": seq.to_string(),
        "stop": {"accountSid": account_sid, "callSid": call_sid},
        "streamSid": stream_sid,
    })
}

/// A message from the server that Twilio accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ServerMessage {
    Media(Vec<u8>),
    Mark(String),
    Clear,
}

/// Validate a text frame from the server. `Err` describes why Twilio would reject it (31951).
pub(super) fn parse_server_text(text: &str, stream_sid: &str) -> Result<ServerMessage, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    let event = match obj.get("event") {
        Some(Value::String(e)) => e.as_str(),
        Some(_) => return Err("event is not a string".into()),
        None => return Err("no event".into()),
    };
    let expected: &[&str] = match event {
        "media" => &["event", "streamSid", "media"],
        "mark" => &["event", "streamSid", "mark"],
        "clear" => &["event", "streamSid"],
        other => return Err(format!("unknown event {:?}", clip(other))),
    };
    exact_keys(&obj, expected, event)?;
    match obj.get("streamSid") {
        Some(Value::String(s)) if s == stream_sid => {}
        Some(Value::String(s)) => return Err(format!("{event}: wrong streamSid {:?}", clip(s))),
        _ => return Err(format!("{event}: streamSid is not a string")),
    }
    match event {
        "media" => {
            let Some(Value::Object(m)) = obj.get("media") else {
                return Err("media: media is not an object".into());
            };
            exact_keys(m, &["payload"], "media.media")?;
            let Some(Value::String(payload)) = m.get("payload") else {
                return Err("media: payload is not a string".into());
            };
            STANDARD
                .decode(payload)
                .map(ServerMessage::Media)
                .map_err(|e| format!("media: payload is not base64 ({e})"))
        }
        "mark" => {
            let Some(Value::Object(m)) = obj.get("mark") else {
                return Err("mark: mark is not an object".into());
            };
            exact_keys(m, &["name"], "mark.mark")?;
            match m.get("name") {
                Some(Value::String(n)) => Ok(ServerMessage::Mark(n.clone())),
                _ => Err("mark: name is not a string".into()),
            }
        }
        _ => Ok(ServerMessage::Clear),
    }
}

fn exact_keys(obj: &Map<String, Value>, expected: &[&str], what: &str) -> Result<(), String> {
    if let Some(missing) = expected.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("{what}: missing {missing}"));
    }
    if let Some(extra) = obj.keys().find(|k| !expected.contains(&k.as_str())) {
        return Err(format!("{what}: unexpected field {:?}", clip(extra)));
    }
    Ok(())
}

pub(super) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Audio the server sent, waiting to be played, with its marks in place.
#[derive(Debug, Default)]
pub(super) struct Playback {
    queue: VecDeque<Item>,
    /// Audio bytes in `queue` not yet played.
    buffered: usize,
}

#[derive(Debug)]
enum Item {
    Audio { bytes: Vec<u8>, played: usize },
    Mark(String),
}

impl Playback {
    pub(super) fn push_audio(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.buffered += bytes.len();
            self.queue.push_back(Item::Audio { bytes, played: 0 });
        }
    }

    /// Queue a mark. When no audio is buffered ahead of it, it is reached at once: returns it,
    /// after any earlier marks also waiting with no audio ahead, to keep echoes in order.
    pub(super) fn push_mark(&mut self, name: String) -> Vec<String> {
        self.queue.push_back(Item::Mark(name));
        if self.buffered == 0 {
            self.clear()
        } else {
            Vec::new()
        }
    }

    /// Play up to `max` bytes. Returns the bytes played and the marks reached, in order.
    pub(super) fn play(&mut self, max: usize) -> (Vec<u8>, Vec<String>) {
        let mut out = Vec::new();
        let mut marks = Vec::new();
        // A full frame ends the turn before any mark behind it: that mark is reached when the
        // frame has played, at the start of the next one.
        while out.len() < max
            && let Some(item) = self.queue.front_mut()
        {
            match item {
                Item::Mark(_) => {
                    if let Some(Item::Mark(name)) = self.queue.pop_front() {
                        marks.push(name);
                    }
                }
                Item::Audio { bytes, played } => {
                    let take = (bytes.len() - *played).min(max - out.len());
                    out.extend_from_slice(&bytes[*played..*played + take]);
                    *played += take;
                    self.buffered -= take;
                    if *played == bytes.len() {
                        self.queue.pop_front();
                    }
                }
            }
        }
        (out, marks)
    }

    /// Drop all buffered audio; returns every pending mark, in order.
    pub(super) fn clear(&mut self) -> Vec<String> {
        self.buffered = 0;
        self.queue
            .drain(..)
            .filter_map(|i| match i {
                Item::Mark(n) => Some(n),
                Item::Audio { .. } => None,
            })
            .collect()
    }
}

/// A stream URL Twilio would refuse, with the error it would report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UrlRefused {
    pub code: u32,
    pub message: String,
}

/// Check a `<Stream url>` and resolve it (relative URLs against the document's URL). Returns
/// the URL to sign — as written when absolute — and the URL to connect to.
pub(super) fn stream_url(raw: &str, base: Option<&Url>) -> Result<(String, String), UrlRefused> {
    let refuse = |code, message: String| UrlRefused { code, message };
    let (signed, url) = match Url::parse(raw) {
        Ok(u) => (raw.to_string(), u),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let Some(base) = base else {
                return Err(refuse(
                    31920,
                    format!("relative stream url {raw:?} in inline TwiML"),
                ));
            };
            let mut u = base.join(raw).map_err(|e| {
                refuse(
                    31920,
                    format!("stream url {:?} is not a URL ({e})", clip(raw)),
                )
            })?;
            let scheme = if base.scheme() == "https" {
                "wss"
            } else {
                "ws"
            };
            if u.set_scheme(scheme).is_err() {
                return Err(refuse(
                    31920,
                    format!("stream url {raw:?} cannot be resolved"),
                ));
            }
            (u.to_string(), u)
        }
        Err(e) => {
            return Err(refuse(
                31920,
                format!("stream url {:?} is not a URL ({e})", clip(raw)),
            ));
        }
    };
    if url.query().is_some() || raw.contains('?') {
        return Err(refuse(
            31920,
            format!(
                "stream url {:?} has a query string; use <Parameter>",
                clip(raw)
            ),
        ));
    }
    match url.scheme() {
        "ws" if is_loopback(&url) => Ok((signed.clone(), signed)),
        // Deviation: real Twilio only connects to wss://. ws:// is allowed for loopback hosts
        // because there is no TLS locally.
        "ws" => Err(refuse(
            31920,
            format!(
                "stream url {:?} must use wss (ws:// only for loopback in the simulator)",
                clip(raw)
            ),
        )),
        "wss" => Err(refuse(
            31910,
            format!(
                "cannot open {:?}: the simulator has no TLS; use ws:// on a loopback host",
                clip(raw)
            ),
        )),
        other => Err(refuse(
            31920,
            format!("stream url scheme {other:?} is not wss"),
        )),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Why the handshake failed.
#[derive(Debug)]
pub(super) struct HandshakeFailed {
    pub status: Option<u16>,
    pub code: u32,
    pub message: String,
}

/// Open the stream's WebSocket, signed as Twilio signs it: the URL with no parameters.
pub(super) async fn connect(
    url: &str,
    signature: &str,
    timeout: Duration,
) -> Result<Ws, HandshakeFailed> {
    let failed = |status, code, message: String| HandshakeFailed {
        status,
        code,
        message,
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| failed(None, 31920, format!("bad stream url: {e}")))?;
    let headers = request.headers_mut();
    if let Ok(v) = HeaderValue::from_str(signature) {
        headers.insert("X-Twilio-Signature", v);
    }
    headers.insert("User-Agent", HeaderValue::from_static("Twilio.TmeWs/1.0"));
    match tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request)).await {
        Err(_) => Err(failed(None, 31901, "WebSocket connection timed out".into())),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(failed(
            Some(resp.status().as_u16()),
            31920,
            format!("handshake answered HTTP {}", resp.status().as_u16()),
        )),
        Ok(Err(e)) => Err(failed(None, 31920, format!("handshake failed: {e}"))),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "MZ0123456789abcdef0123456789abcdef";

    #[test]
    fn twilio_messages_use_strings_for_counters() {
        let m = media(4, SID, 2, 20, &[0xFF; 160]);
        assert_eq!(m["sequenceNumber"], "4");
        assert_eq!(m["media"]["chunk"], "2");
        assert_eq!(m["media"]["timestamp"], "20");
        assert_eq!(m["media"]["track"], "inbound");
        assert_eq!(m["media"]["payload"].as_str().unwrap().len(), 216);
        let s = start(1, SID, "AC1", "CA1", &[("k".into(), "v".into())]);
        assert_eq!(s["sequenceNumber"], "1");
        assert_eq!(s["start"]["mediaFormat"]["sampleRate"], 8000);
        assert_eq!(s["start"]["mediaFormat"]["channels"], 1);
        assert_eq!(s["start"]["customParameters"]["k"], "v");
        assert_eq!(s["streamSid"], SID);
    }

    #[test]
    fn server_messages_are_validated_strictly() {
        let ok = |t: &str| parse_server_text(t, SID);
        assert_eq!(
            ok(&format!(
                r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"//8="}}}}"#
            )),
            Ok(ServerMessage::Media(vec![0xFF, 0xFF]))
        );
        assert_eq!(
            ok(&format!(
                r#"{{"event":"mark","streamSid":"{SID}","mark":{{"name":"m1"}}}}"#
            )),
            Ok(ServerMessage::Mark("m1".into()))
        );
        assert_eq!(
            ok(&format!(r#"{{"event":"clear","streamSid":"{SID}"}}"#)),
            Ok(ServerMessage::Clear)
        );
        for bad in [
            "not json".to_string(),
            "[]".into(),
            format!(r#"{{"event":"stop","streamSid":"{SID}"}}"#),
            r#"{"event":"clear","streamSid":"MZother"}"#.to_string(),
            r#"{"event":"clear"}"#.into(),
            format!(r#"{{"event":"clear","streamSid":"{SID}","extra":1}}"#),
            format!(r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"@@@"}}}}"#),
            format!(
                r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"//8=","track":"outbound"}}}}"#
            ),
            format!(r#"{{"event":"mark","streamSid":"{SID}","mark":{{}}}}"#),
            format!(r#"{{"event":"mark","streamSid":"{SID}","mark":{{"name":7}}}}"#),
        ] {
            assert!(ok(&bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn playback_reaches_marks_in_order_and_clear_flushes_them() {
        let mut p = Playback::default();
        assert_eq!(p.push_mark("early".into()), vec!["early".to_string()]);
        p.push_audio(vec![1; 200]);
        assert_eq!(p.push_mark("a".into()), Vec::<String>::new());
        p.push_audio(vec![2; 100]);
        assert_eq!(p.push_mark("b".into()), Vec::<String>::new());
        let (played, marks) = p.play(160);
        assert_eq!((played.len(), marks.len()), (160, 0));
        let (played, marks) = p.play(160);
        assert_eq!(played.len(), 140);
        assert_eq!(played[..40], [1; 40]);
        assert_eq!(marks, vec!["a".to_string(), "b".to_string()]);
        p.push_audio(vec![3; 500]);
        assert_eq!(p.push_mark("c".into()), Vec::<String>::new());
        p.push_audio(vec![3; 10]);
        assert_eq!(p.push_mark("d".into()), Vec::<String>::new());
        assert_eq!(p.clear(), vec!["c".to_string(), "d".to_string()]);
        assert_eq!(p.play(160), (Vec::new(), Vec::new()));
        assert_eq!(p.push_mark("e".into()), vec!["e".to_string()]);
        // Audio ending exactly on a frame: its mark comes with the next frame.
        p.push_audio(vec![4; 160]);
        assert_eq!(p.push_mark("f".into()), Vec::<String>::new());
        assert_eq!(p.play(160), (vec![4; 160], Vec::new()));
        // A mark arriving now is reached too, after the one already waiting.
        assert_eq!(
            p.push_mark("g".into()),
            vec!["f".to_string(), "g".to_string()]
        );
    }

    #[test]
    fn stream_url_rules() {
        assert!(stream_url("ws://127.0.0.1:9/media", None).is_ok());
        assert!(stream_url("ws://localhost:9/media", None).is_ok());
        assert_eq!(
            stream_url("ws://example.com/media", None).unwrap_err().code,
            31920
        );
        assert_eq!(
            stream_url("wss://example.com/media", None)
                .unwrap_err()
                .code,
            31910
        );
        assert_eq!(
            stream_url("ws://127.0.0.1:9/media?x=1", None)
                .unwrap_err()
                .code,
            31920
        );
        assert_eq!(
            stream_url("https://127.0.0.1/media", None)
                .unwrap_err()
                .code,
            31920
        );
        assert_eq!(stream_url("/media", None).unwrap_err().code, 31920);
        let base = Url::parse("http://127.0.0.1:8080/twiml/answer").unwrap();
        assert_eq!(
            stream_url("/media", Some(&base)).unwrap().1,
            "ws://127.0.0.1:8080/media"
        );
        // Signed exactly as written.
        assert_eq!(
            stream_url("ws://127.0.0.1:9", None).unwrap().0,
            "ws://127.0.0.1:9"
        );
    }
}

//! Twilio Media Streams messages (bidirectional `<Connect><Stream>`): parsing what Twilio sends
//! and writing what it accepts (`media`, `mark`, `clear`). Media parsing borrows the payload
//! from the frame, so audio is never copied or decoded on its way through.

use crate::phone::escape_controls;
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The `start` message's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartInfo {
    pub stream_sid: String,
    pub call_sid: String,
    #[serde(default)]
    pub account_sid: String,
    #[serde(default)]
    pub tracks: Vec<String>,
    /// The `<Parameter>`s of the TwiML `<Stream>`.
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
    pub media_format: MediaFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

impl MediaFormat {
    /// The only format Twilio documents for Media Streams, and the one we pass through as
    /// `audio/pcmu` to the agent without conversion.
    pub fn is_mulaw_8k_mono(&self) -> bool {
        self.encoding == "audio/x-mulaw" && self.sample_rate == 8000 && self.channels == 1
    }
}

/// A message from Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TwilioMessage<'a> {
    Connected,
    Start(Box<StartInfo>),
    /// Base64 μ-law from the callee, untouched.
    Media {
        payload: Cow<'a, str>,
    },
    /// A mark we sent has been played (or cleared).
    Mark {
        name: String,
    },
    Dtmf {
        digit: String,
    },
    Stop,
    /// An event this version does not know; ignored.
    Unknown(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MediaParseError {
    #[error("not a Media Streams message: {0}")]
    Json(String),
    #[error("'{event}' message without its '{field}' object")]
    Missing {
        event: &'static str,
        field: &'static str,
    },
}

// A flat struct, not a tagged enum: serde buffers tagged enums, which would copy every payload.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    media: Option<RawMedia<'a>>,
    #[serde(default)]
    start: Option<StartInfo>,
    #[serde(default)]
    mark: Option<RawMark>,
    #[serde(default)]
    dtmf: Option<RawDtmf>,
}

#[derive(Deserialize)]
struct RawMedia<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawMark {
    name: String,
}

#[derive(Deserialize)]
struct RawDtmf {
    digit: String,
}

/// Parse one text frame from Twilio.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Result<TwilioMessage<'_>, MediaParseError> {
    parse_bytes(text.as_bytes())
}

/// Parse one text frame from Twilio, as the bytes that arrived.
pub(crate) fn parse_bytes(text: &[u8]) -> Result<TwilioMessage<'_>, MediaParseError> {
    let raw: Raw<'_> =
        serde_json::from_slice(text).map_err(|e| MediaParseError::Json(json_error(&e)))?;
    Ok(match raw.event.as_ref() {
        "media" => TwilioMessage::Media {
            payload: raw
                .media
                .ok_or(MediaParseError::Missing {
                    event: "media",
                    field: "media",
                })?
                .payload,
        },
        "connected" => TwilioMessage::Connected,
        "start" => TwilioMessage::Start(Box::new(raw.start.ok_or(MediaParseError::Missing {
            event: "start",
            field: "start",
        })?)),
        "mark" => TwilioMessage::Mark {
            name: raw
                .mark
                .ok_or(MediaParseError::Missing {
                    event: "mark",
                    field: "mark",
                })?
                .name,
        },
        "dtmf" => TwilioMessage::Dtmf {
            digit: raw.dtmf.map(|d| d.digit).unwrap_or_default(),
        },
        "stop" => TwilioMessage::Stop,
        other => TwilioMessage::Unknown(other.to_string()),
    })
}

/// serde_json's message, cut short in the middle: it quotes a mistyped string whole, and a
/// frame may be 64 KiB. Its end says what was expected and where, so that end is kept.
fn json_error(e: &serde_json::Error) -> String {
    const HEAD: usize = 120;
    const TAIL: usize = 80;
    let text = escape_controls(&e.to_string());
    let chars = text.chars().count();
    if chars <= HEAD + TAIL {
        return text;
    }
    let head: String = text.chars().take(HEAD).collect();
    let tail: String = text.chars().skip(chars - TAIL).collect();
    format!("{head}…{tail}")
}

#[derive(Serialize)]
struct Out<'a> {
    event: &'static str,
    #[serde(rename = "streamSid")]
    stream_sid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mark: Option<MarkOut<'a>>,
}

#[derive(Serialize)]
struct MarkOut<'a> {
    name: &'a str,
}

fn write(out: &Out<'_>) -> String {
    serde_json::to_string(out).expect("plain strings always serialise")
}

/// Audio for Twilio to play: base64 μ-law 8 kHz, any length; Twilio buffers it in order.
/// Written at the end of `out` (the bridge reuses one buffer for every frame).
pub(crate) fn write_media(out: &mut BytesMut, stream_sid: &str, payload: &str) {
    // Room for the message at once, so the buffer is reclaimed or grown once, not per piece.
    out.reserve(stream_sid.len() + payload.len() + 64);
    // As `Out` serialises, written by hand: this is built for every frame the agent speaks.
    out.extend_from_slice(br#"{"event":"media","streamSid":"#);
    crate::json::write_str(out, stream_sid);
    out.extend_from_slice(br#","media":{"payload":"#);
    crate::json::write_str(out, payload);
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
pub(crate) fn media(stream_sid: &str, payload: &str) -> String {
    let mut out = BytesMut::new();
    write_media(&mut out, stream_sid, payload);
    String::from_utf8(out.to_vec()).expect("JSON is UTF-8")
}

/// A mark Twilio echoes back once the audio sent before it has played (or been cleared).
pub(crate) fn mark(stream_sid: &str, name: &str) -> String {
    write(&Out {
        event: "mark",
        stream_sid,
        mark: Some(MarkOut { name }),
    })
}

/// Drop all audio Twilio has buffered but not played yet (barge-in).
pub(crate) fn clear(stream_sid: &str) -> String {
    write(&Out {
        event: "clear",
        stream_sid,
        mark: None,
    })
}

#[cfg(test)]
mod tests {
    //! Examples from Twilio's "WebSocket messages" page (twilio.md §4).
    use super::*;

    #[test]
    fn documented_messages_parse() {
        assert_eq!(
            parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap(),
            TwilioMessage::Connected
        );
        let start = parse(
            r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","callSid":"CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "tracks":["inbound"],"customParameters":{"FirstName":"Jane","LastName":"Doe"},
            "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},
            "streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#,
        )
        .unwrap();
        let TwilioMessage::Start(info) = start else {
            panic!("start")
        };
        assert_eq!(info.custom_parameters["FirstName"], "Jane");
        assert!(info.media_format.is_mulaw_8k_mono());
        assert_eq!(info.call_sid, "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");

        let media = parse(
            r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"no+JhoaJjpzS"},"streamSid":"MZX"}"#,
        )
        .unwrap();
        assert!(matches!(
            &media,
            TwilioMessage::Media {
                payload: Cow::Borrowed("no+JhoaJjpzS")
            }
        ));

        assert_eq!(
            parse(r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZX","mark":{"name":"my label"}}"#).unwrap(),
            TwilioMessage::Mark { name: "my label".into() }
        );
        assert_eq!(
            parse(r#"{"event":"dtmf","streamSid":"MZ","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#).unwrap(),
            TwilioMessage::Dtmf { digit: "1".into() }
        );
        assert_eq!(
            parse(r#"{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"AC","callSid":"CA"},"streamSid":"MZ"}"#).unwrap(),
            TwilioMessage::Stop
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"event":"media"}"#).is_err());
        assert!(parse(r#"{"nope":1}"#).is_err());
        assert_eq!(
            parse(r#"{"event":"future"}"#).unwrap(),
            TwilioMessage::Unknown("future".into())
        );
    }

    #[test]
    fn outbound_messages_match_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_str(&media("MZ1", "AAEC")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event":"media","streamSid":"MZ1","media":{"payload":"AAEC"}})
        );
        let v: serde_json::Value = serde_json::from_str(&media("M\"Z", "a\nb")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event":"media","streamSid":"M\"Z","media":{"payload":"a\nb"}})
        );
        let v: serde_json::Value = serde_json::from_str(&mark("MZ1", "end")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event":"mark","streamSid":"MZ1","mark":{"name":"end"}})
        );
        let v: serde_json::Value = serde_json::from_str(&clear("MZ1")).unwrap();
        assert_eq!(v, serde_json::json!({"event":"clear","streamSid":"MZ1"}));
    }

    /// One of each message Twilio documents, as the page shows them.
    const DOCUMENTED: [&str; 6] = [
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
        r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","callSid":"CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","tracks":["inbound"],"customParameters":{"FirstName":"Jane","LastName":"Doe"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#,
        r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"no+JhoaJjpzS"},"streamSid":"MZX"}"#,
        r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZX","mark":{"name":"my label"}}"#,
        r#"{"event":"dtmf","streamSid":"MZ","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#,
        r#"{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"AC","callSid":"CA"},"streamSid":"MZ"}"#,
    ];

    /// Longest rejection message: a frame is up to 64 KiB, and its text must not come back whole.
    const MAX_MESSAGE: usize = 300;

    /// Whatever arrives in a text frame (random bytes, documented messages damaged, fields of
    /// the wrong type, huge numbers, deep nesting, invalid UTF-8), parsing ends in a message
    /// that agrees with the frame's `event`, or in one short printable line.
    #[test]
    fn any_frame_parses_or_is_refused_clearly() {
        use crate::props;
        use rand::Rng;
        const PIECES: [&str; 12] = [
            "{",
            "}",
            "\"event\":",
            "\"media\"",
            "\"start\"",
            "\"mark\"",
            "\"payload\":",
            "\"name\":",
            ":",
            ",",
            "\"",
            "null",
        ];
        let valid: Vec<serde_json::Value> = DOCUMENTED
            .iter()
            .map(|m| serde_json::from_str(m).unwrap())
            .collect();
        props::check(
            11,
            props::cases(),
            |rng| {
                let i = rng.random_range(0..DOCUMENTED.len());
                props::Lossy(match rng.random_range(0..4) {
                    0 => props::random_bytes(rng, 200),
                    1 => props::random_text(rng, &PIECES, 40).into_bytes(),
                    2 => props::mutate_bytes(rng, DOCUMENTED[i].as_bytes()),
                    _ => props::mutate_json(rng, &valid[i]),
                })
            },
            |props::Lossy(frame)| match parse_bytes(frame) {
                Err(e) => props::assert_clear(&e.to_string(), MAX_MESSAGE),
                Ok(message) => {
                    // Fields the parser skips are not checked (for UTF-8, number range or
                    // depth); where the whole frame is plain JSON, the message must agree.
                    let Ok(v) =
                        serde_json::from_str::<serde_json::Value>(&String::from_utf8_lossy(frame))
                    else {
                        return;
                    };
                    let event = v["event"].as_str().unwrap();
                    match message {
                        TwilioMessage::Connected => assert_eq!(event, "connected"),
                        TwilioMessage::Start(info) => {
                            assert_eq!(event, "start");
                            assert_eq!(v["start"]["callSid"], info.call_sid.as_str());
                        }
                        TwilioMessage::Media { payload } => {
                            assert_eq!(event, "media");
                            assert_eq!(v["media"]["payload"], payload.as_ref());
                        }
                        TwilioMessage::Mark { name } => {
                            assert_eq!(event, "mark");
                            assert_eq!(v["mark"]["name"], name.as_str());
                        }
                        TwilioMessage::Dtmf { .. } => assert_eq!(event, "dtmf"),
                        TwilioMessage::Stop => assert_eq!(event, "stop"),
                        TwilioMessage::Unknown(other) => {
                            assert_eq!(event, other);
                            assert!(
                                !["connected", "start", "media", "mark", "dtmf", "stop"]
                                    .contains(&event)
                            );
                        }
                    }
                }
            },
        );
    }

    #[test]
    fn a_long_mistyped_value_is_not_quoted_whole() {
        let frame = format!(
            r#"{{"event":"start","start":{{"streamSid":"MZ","callSid":"CA","mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":"{}","channels":1}}}}}}"#,
            "8".repeat(60_000)
        );
        let e = parse(&frame).unwrap_err().to_string();
        assert!(e.chars().count() <= MAX_MESSAGE, "{e}");
        assert!(
            e.starts_with("not a Media Streams message: invalid type: string"),
            "{e}"
        );
        assert!(
            e.contains("…") && e.contains("expected u32 at line 1 column"),
            "{e}"
        );
    }

    /// Fields Twilio may add, with any value, change nothing about a documented message.
    #[test]
    fn added_fields_are_ignored() {
        use crate::props;
        use rand::Rng;
        props::check(
            12,
            props::cases(),
            |rng| {
                let i = rng.random_range(0..DOCUMENTED.len());
                let mut v: serde_json::Value = serde_json::from_str(DOCUMENTED[i]).unwrap();
                let key = format!("new{}", props::random_text(rng, &[], 8));
                let value = match rng.random_range(0..4) {
                    0 => serde_json::json!(props::random_text(rng, &[], 30)),
                    1 => serde_json::json!(rng.random::<f64>() * 1e300),
                    2 => serde_json::json!([null, {"a": [1, 2]}, "x"]),
                    _ => serde_json::json!({"nested": {"deeper": props::random_text(rng, &[], 5)}}),
                };
                v.as_object_mut().unwrap().insert(key, value);
                (i, serde_json::to_string(&v).unwrap())
            },
            |(i, frame)| {
                assert_eq!(parse(frame).unwrap(), parse(DOCUMENTED[*i]).unwrap());
            },
        );
    }
}

//! The Voice Agent WebSocket protocol (`wss://agents.assemblyai.com/v1/ws`): the events we
//! send and the events we understand. Unknown server events are tolerated, since the API adds
//! events over time; `reply.audio` parsing borrows its payload so audio passes through uncopied.

use super::config::{AgentConfig, TurnDetection};
use crate::phone::{escape_controls, printable};
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// The encoding Twilio Media Streams carry, named as the Voice Agent API names it.
pub(crate) const PCMU: &str = "audio/pcmu";

/// A tool as declared to the Voice Agent (`session.update` → `session.tools`), in the API's
/// flat form: `{"type":"function","name":…,"description":…,"parameters":…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename = "function")]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (`{"type":"object","properties":{…},"required":[…]}`).
    pub parameters: Value,
}

/// An event we send. Serialising a tagged enum writes straight through (only reading one
/// buffers), so `input.audio` costs what a hand-written struct would.
#[derive(Serialize)]
#[serde(tag = "type")]
enum ClientMessage<'a> {
    #[serde(rename = "session.update")]
    SessionUpdate { session: Session<'a> },
    #[serde(rename = "tool.result")]
    ToolResult {
        call_id: &'a str,
        result: String,
        is_error: bool,
    },
    #[serde(rename = "session.end")]
    SessionEnd,
    #[serde(rename = "session.resume")]
    SessionResume { session_id: &'a str },
    #[serde(rename = "reply.create")]
    ReplyCreate { instructions: &'a str },
}

impl ClientMessage<'_> {
    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings, numbers and JSON values always serialise")
    }
}

#[derive(Serialize)]
struct Session<'a> {
    system_prompt: &'a str,
    /// Left out when empty: a session that continues a conversation must not greet again.
    #[serde(skip_serializing_if = "str::is_empty")]
    greeting: &'a str,
    tools: &'a [ToolSpec],
    input: Input<'a>,
    output: Output<'a>,
}

#[derive(Serialize)]
struct Input<'a> {
    format: Format,
    /// Left out when nothing is set, so the service keeps its adaptive defaults.
    #[serde(skip_serializing_if = "TurnDetection::is_empty")]
    turn_detection: &'a TurnDetection,
}

#[derive(Serialize)]
struct Output<'a> {
    voice: &'a str,
    format: Format,
}

#[derive(Serialize)]
struct Format {
    encoding: &'static str,
}

/// The first message: configure the session for μ-law in and out, so audio needs no conversion.
pub(crate) fn session_update(agent: &AgentConfig, tools: &[ToolSpec]) -> String {
    ClientMessage::SessionUpdate {
        session: Session {
            system_prompt: &agent.system_prompt,
            greeting: &agent.greeting,
            tools,
            input: Input {
                format: Format { encoding: PCMU },
                turn_detection: &agent.turn_detection,
            },
            output: Output {
                voice: &agent.voice,
                format: Format { encoding: PCMU },
            },
        },
    }
    .to_json()
}

/// Callee audio for the agent: the base64 μ-law payload exactly as Twilio sent it, written
/// at the end of `out` (the bridge reuses one buffer for every frame).
pub(crate) fn write_input_audio(out: &mut BytesMut, payload: &str) {
    // Room for the message at once, so the buffer is reclaimed or grown once, not per piece.
    out.reserve(payload.len() + 32);
    // As `ClientMessage::InputAudio` serialises, written by hand: this is built for every
    // frame the callee sends.
    out.extend_from_slice(br#"{"type":"input.audio","audio":"#);
    crate::json::write_str(out, payload);
    out.put_u8(b'}');
}

#[cfg(test)]
pub(crate) fn input_audio(payload: &str) -> String {
    let mut out = BytesMut::new();
    write_input_audio(&mut out, payload);
    String::from_utf8(out.to_vec()).expect("JSON is UTF-8")
}

/// A tool's answer. `result` travels as a JSON string, as the API requires.
pub(crate) fn tool_result(call_id: &str, result: &Value, is_error: bool) -> String {
    ClientMessage::ToolResult {
        call_id,
        result: result.to_string(),
        is_error,
    }
    .to_json()
}

/// The first message on a new connection that asks for a dropped session back (§7).
pub(crate) fn session_resume(session_id: &str) -> String {
    ClientMessage::SessionResume { session_id }.to_json()
}

/// Ask the agent to speak now, guided by `instructions` (§2.5).
pub(crate) fn reply_create(instructions: &str) -> String {
    ClientMessage::ReplyCreate { instructions }.to_json()
}

/// Ends the session cleanly: billing stops now instead of after the 30 s resume window.
pub(crate) fn session_end() -> String {
    ClientMessage::SessionEnd.to_json()
}

/// A `session.error` code (assemblyai-voice-agent.md §8). Codes the service adds later are
/// kept as `Other`, in lower case as the service writes codes today.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgentErrorCode {
    /// Missing or invalid key or token.
    Unauthorized,
    /// A valid key without permission to use the Voice Agent API.
    Forbidden,
    InternalError,
    ServerError,
    AtCapacity,
    ConcurrencyExceeded,
    SessionNotFound,
    SessionForbidden,
    /// The session reached its maximum duration.
    SessionExpired,
    AgentNotFound,
    AgentIdNotFirst,
    AgentInitFailed,
    AgentTimeout,
    InvalidFormat,
    InvalidAudio,
    /// A bad voice or field type (fatal when it is the voice of the first `session.update`).
    InvalidValue,
    InvalidConfig,
    ImmutableField,
    AudioRateViolation,
    InvalidWebhook,
    Other(String),
}

impl AgentErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::InternalError => "internal_error",
            Self::ServerError => "server_error",
            Self::AtCapacity => "at_capacity",
            Self::ConcurrencyExceeded => "concurrency_exceeded",
            Self::SessionNotFound => "session_not_found",
            Self::SessionForbidden => "session_forbidden",
            Self::SessionExpired => "session_expired",
            Self::AgentNotFound => "agent_not_found",
            Self::AgentIdNotFirst => "agent_id_not_first",
            Self::AgentInitFailed => "agent_init_failed",
            Self::AgentTimeout => "agent_timeout",
            Self::InvalidFormat => "invalid_format",
            Self::InvalidAudio => "invalid_audio",
            Self::InvalidValue => "invalid_value",
            Self::InvalidConfig => "invalid_config",
            Self::ImmutableField => "immutable_field",
            Self::AudioRateViolation => "audio_rate_violation",
            Self::InvalidWebhook => "invalid_webhook",
            Self::Other(s) => s,
        }
    }

    /// Whether the service closes the session after this error. The validation errors leave
    /// it open; anything else, including codes we do not know, is taken to end it.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Self::InvalidFormat
                | Self::InvalidAudio
                | Self::InvalidValue
                | Self::InvalidConfig
                | Self::ImmutableField
                | Self::AudioRateViolation
                | Self::AgentIdNotFirst
        )
    }

    /// Whether AssemblyAI refused the API key or its account: every session would fail alike.
    pub fn refuses_key(&self) -> bool {
        matches!(self, Self::Unauthorized | Self::Forbidden)
    }

    /// Whether the user's settings are at fault (the key, or an agent setting such as the
    /// voice), not the service: trying again without changing them cannot help.
    pub fn is_configuration(&self) -> bool {
        self.refuses_key() || *self == Self::InvalidValue
    }

    /// Words for a user about this error, with the service's own `message` when it sent one.
    pub fn describe(&self, message: &str) -> String {
        let advice = match self {
            Self::Unauthorized => "AssemblyAI rejected the API key: check ASSEMBLYAI_API_KEY",
            Self::Forbidden => "the AssemblyAI key may not use the Voice Agent API",
            Self::ConcurrencyExceeded => {
                "the AssemblyAI account's concurrent-session limit was reached"
            }
            Self::AtCapacity | Self::ServerError | Self::InternalError => {
                "the Voice Agent service had trouble; try again shortly"
            }
            Self::InvalidValue => "the agent settings were rejected (is the voice name valid?)",
            Self::SessionExpired => "the agent session reached its maximum duration",
            _ => "",
        };
        match (advice.is_empty(), message.is_empty()) {
            (true, _) => format!("Voice Agent error {self}: {message}"),
            (false, true) => format!("Voice Agent error {self}: {advice}"),
            (false, false) => {
                format!("Voice Agent error {self}: {advice} (service said: {message})")
            }
        }
    }
}

/// Case-insensitive: older servers wrote codes in upper case (`UNAUTHORIZED`).
impl From<&str> for AgentErrorCode {
    fn from(code: &str) -> Self {
        let code = code.to_ascii_lowercase();
        match code.as_str() {
            "unauthorized" => Self::Unauthorized,
            "forbidden" => Self::Forbidden,
            "internal_error" => Self::InternalError,
            "server_error" => Self::ServerError,
            "at_capacity" => Self::AtCapacity,
            "concurrency_exceeded" => Self::ConcurrencyExceeded,
            "session_not_found" => Self::SessionNotFound,
            "session_forbidden" => Self::SessionForbidden,
            "session_expired" => Self::SessionExpired,
            "agent_not_found" => Self::AgentNotFound,
            "agent_id_not_first" => Self::AgentIdNotFirst,
            "agent_init_failed" => Self::AgentInitFailed,
            "agent_timeout" => Self::AgentTimeout,
            "invalid_format" => Self::InvalidFormat,
            "invalid_audio" => Self::InvalidAudio,
            "invalid_value" => Self::InvalidValue,
            "invalid_config" => Self::InvalidConfig,
            "immutable_field" => Self::ImmutableField,
            "audio_rate_violation" => Self::AudioRateViolation,
            "invalid_webhook" => Self::InvalidWebhook,
            // Printed in every message about the error, so kept printable and short.
            _ => Self::Other(printable(&code)),
        }
    }
}

impl fmt::Display for AgentErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `session.error`: what went wrong, and the service's own words for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", code.describe(message))]
pub struct AgentError {
    pub code: AgentErrorCode,
    pub message: String,
}

/// How a reply finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyStatus {
    Completed,
    Interrupted,
    /// `cancelled`, `failed` or anything newer.
    Other,
}

/// An event from the Voice Agent service.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AgentMessage<'a> {
    SessionUpdated,
    SessionReady {
        session_id: String,
    },
    SessionEnded,
    SessionError(AgentError),
    SpeechStarted,
    SpeechStopped,
    /// The callee's utterance so far (full text, replaces the previous one).
    UserPartial {
        text: String,
    },
    UserFinal {
        text: String,
    },
    ReplyStarted,
    /// Base64 audio in the output encoding, untouched.
    ReplyAudio {
        data: Cow<'a, str>,
    },
    AgentDelta,
    AgentFinal {
        text: String,
        interrupted: bool,
    },
    ToolCall {
        call_id: String,
        name: String,
        arguments: Value,
    },
    ReplyDone {
        status: ReplyStatus,
    },
    Unknown(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a Voice Agent event: {0}")]
pub(crate) struct AgentParseError(String);

/// serde_json's message, cut short in the middle: it quotes a mistyped string whole, and a frame
/// may be megabytes of audio. Its end says what was expected and where, so that end is kept.
fn json_error(e: &serde_json::Error) -> String {
    clip_middle(&escape_controls(&e.to_string()), 120, 80)
}

/// The service's own words about an error, as they may appear in our messages: printable, on
/// one line, and not a screenful (the service writes a sentence; a broken one could send more).
fn service_words(text: &str) -> String {
    clip_middle(&escape_controls(text), 200, 40)
}

fn clip_middle(text: &str, head: usize, tail: usize) -> String {
    let chars = text.chars().count();
    if chars <= head + tail {
        return text.to_string();
    }
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(chars - tail).collect();
    format!("{start}…{end}")
}

// Flat rather than a tagged enum: serde buffers tagged enums, which would copy every audio chunk.
/// A string borrowed from the frame when it has no escapes (`Option<Cow>` alone would copy).
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<Text<'a>>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    interrupted: Option<bool>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
    /// The field's name before 2026-04-30.
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    status: Option<String>,
}

/// Parse one text frame from the service.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Result<AgentMessage<'_>, AgentParseError> {
    parse_bytes(text.as_bytes())
}

/// Parse one text frame from the service, as the bytes that arrived.
pub(crate) fn parse_bytes(text: &[u8]) -> Result<AgentMessage<'_>, AgentParseError> {
    let raw: Raw<'_> = serde_json::from_slice(text).map_err(|e| AgentParseError(json_error(&e)))?;
    Ok(match raw.kind.as_ref() {
        "reply.audio" => AgentMessage::ReplyAudio {
            data: raw.data.map_or(Cow::Borrowed(""), |t| t.0),
        },
        "session.updated" => AgentMessage::SessionUpdated,
        "session.ready" => AgentMessage::SessionReady {
            session_id: raw.session_id.unwrap_or_default(),
        },
        "session.ended" => AgentMessage::SessionEnded,
        // `error` is what pre-launch servers sent.
        "session.error" | "error" => AgentMessage::SessionError(AgentError {
            code: AgentErrorCode::from(raw.code.as_deref().unwrap_or_default()),
            message: raw
                .message
                .as_deref()
                .map(service_words)
                .unwrap_or_default(),
        }),
        "input.speech.started" => AgentMessage::SpeechStarted,
        "input.speech.stopped" => AgentMessage::SpeechStopped,
        "transcript.user.delta" => AgentMessage::UserPartial {
            text: raw.text.unwrap_or_default(),
        },
        "transcript.user" => AgentMessage::UserFinal {
            text: raw.text.unwrap_or_default(),
        },
        "reply.started" => AgentMessage::ReplyStarted,
        "transcript.agent.delta" => AgentMessage::AgentDelta,
        "transcript.agent" => AgentMessage::AgentFinal {
            text: raw.text.unwrap_or_default(),
            interrupted: raw.interrupted.unwrap_or(false),
        },
        "tool.call" => {
            let arguments = match raw.arguments.or(raw.args) {
                // Tolerate arguments sent as a JSON string.
                Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                Some(v) => v,
                None => Value::Object(Default::default()),
            };
            AgentMessage::ToolCall {
                call_id: raw.call_id.unwrap_or_default(),
                name: raw.name.unwrap_or_default(),
                arguments,
            }
        }
        "reply.done" => AgentMessage::ReplyDone {
            status: match raw.status.as_deref() {
                None | Some("completed") => ReplyStatus::Completed,
                Some("interrupted") => ReplyStatus::Interrupted,
                Some(_) => ReplyStatus::Other,
            },
        },
        other => AgentMessage::Unknown(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    //! Examples from the Voice Agent reference (assemblyai-voice-agent.md §2–§3).
    use super::*;
    use serde_json::json;

    #[test]
    fn session_update_uses_pcmu_both_ways_and_flat_tools() {
        let agent = AgentConfig {
            turn_detection: TurnDetection {
                min_silence: Some(700),
                interrupt_response: Some(true),
                ..Default::default()
            },
            ..Default::default()
        };
        let tools = vec![ToolSpec {
            name: "end_call".into(),
            description: "Hang up".into(),
            parameters: json!({"type":"object","properties":{},"required":[]}),
        }];
        let v: Value = serde_json::from_str(&session_update(&agent, &tools)).unwrap();
        assert_eq!(v["type"], "session.update");
        let s = &v["session"];
        assert_eq!(s["input"]["format"]["encoding"], "audio/pcmu");
        assert_eq!(s["output"]["format"]["encoding"], "audio/pcmu");
        assert!(s["input"]["format"].get("sample_rate").is_none());
        assert_eq!(s["output"]["voice"], "alba");
        assert_eq!(
            s["input"]["turn_detection"],
            json!({"min_silence":700,"interrupt_response":true})
        );
        assert_eq!(s["tools"][0]["type"], "function");
        assert_eq!(s["tools"][0]["name"], "end_call");
        assert!(s["tools"][0].get("function").is_none());
        let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
        for k in keys {
            assert!(
                ["system_prompt", "greeting", "tools", "input", "output"].contains(&k.as_str())
            );
        }
    }

    #[test]
    fn client_events_match_the_reference() {
        let v: Value = serde_json::from_str(&input_audio("AAEC")).unwrap();
        assert_eq!(v, json!({"type":"input.audio","audio":"AAEC"}));
        // A payload that is not base64 is still written as valid JSON.
        let v: Value = serde_json::from_str(&input_audio("a\"b\\\n")).unwrap();
        assert_eq!(v, json!({"type":"input.audio","audio":"a\"b\\\n"}));
        let v: Value =
            serde_json::from_str(&tool_result("call_1", &json!({"ok":true}), false)).unwrap();
        assert_eq!(
            v,
            json!({"type":"tool.result","call_id":"call_1","result":"{\"ok\":true}","is_error":false})
        );
        assert_eq!(session_end(), r#"{"type":"session.end"}"#);
        let v: Value = serde_json::from_str(&session_resume("sess_abc123")).unwrap();
        assert_eq!(
            v,
            json!({"type":"session.resume","session_id":"sess_abc123"})
        );
        let v: Value = serde_json::from_str(&reply_create("Say sorry")).unwrap();
        assert_eq!(v, json!({"type":"reply.create","instructions":"Say sorry"}));
    }

    #[test]
    fn a_session_without_a_greeting_leaves_the_field_out() {
        let agent = AgentConfig {
            greeting: String::new(),
            ..AgentConfig::default()
        };
        let v: Value = serde_json::from_str(&session_update(&agent, &[])).unwrap();
        assert!(v["session"].get("greeting").is_none(), "{v}");
    }

    #[test]
    fn server_events_parse() {
        assert_eq!(
            parse(r#"{"type":"session.ready","session_id":"sess_59a2","config":{},"expires_at":1790465450,"resume_token":"e","timestamp":1790461856.2}"#).unwrap(),
            AgentMessage::SessionReady { session_id: "sess_59a2".into() }
        );
        assert!(matches!(
            parse(r#"{"type":"reply.audio","reply_id":"resp_1","data":"EAAgADAA"}"#).unwrap(),
            AgentMessage::ReplyAudio {
                data: Cow::Borrowed("EAAgADAA")
            }
        ));
        assert_eq!(
            parse(r#"{"type":"transcript.user.delta","item_id":"msg_1","text":"What's the weather in","timestamp":1.0}"#).unwrap(),
            AgentMessage::UserPartial { text: "What's the weather in".into() }
        );
        assert_eq!(
            parse(r#"{"type":"transcript.agent","reply_id":"r","item_id":"m","text":"It's sunny.","interrupted":true}"#).unwrap(),
            AgentMessage::AgentFinal { text: "It's sunny.".into(), interrupted: true }
        );
        assert_eq!(
            parse(r#"{"type":"tool.call","call_id":"chatcmpl-tool-8b12","name":"get_weather","arguments":{"location":"Tokyo"}}"#).unwrap(),
            AgentMessage::ToolCall { call_id: "chatcmpl-tool-8b12".into(), name: "get_weather".into(), arguments: json!({"location":"Tokyo"}) }
        );
        assert_eq!(
            parse(r#"{"type":"tool.call","call_id":"c","name":"n","args":"{\"a\":1}"}"#).unwrap(),
            AgentMessage::ToolCall {
                call_id: "c".into(),
                name: "n".into(),
                arguments: json!({"a":1})
            }
        );
        assert_eq!(
            parse(r#"{"type":"reply.done"}"#).unwrap(),
            AgentMessage::ReplyDone {
                status: ReplyStatus::Completed
            }
        );
        assert_eq!(
            parse(r#"{"type":"reply.done","reply_id":"r","status":"interrupted"}"#).unwrap(),
            AgentMessage::ReplyDone {
                status: ReplyStatus::Interrupted
            }
        );
        assert_eq!(
            parse(r#"{"type":"session.error","code":"UNAUTHORIZED","message":"bad","session_id":null,"param":null,"timestamp":"2026-01-01T00:00:00Z"}"#).unwrap(),
            AgentMessage::SessionError(AgentError { code: AgentErrorCode::Unauthorized, message: "bad".into() })
        );
        assert_eq!(
            parse(r#"{"type":"session.error","code":"brand_new_trouble"}"#).unwrap(),
            AgentMessage::SessionError(AgentError {
                code: AgentErrorCode::Other("brand_new_trouble".into()),
                message: String::new()
            })
        );
        assert_eq!(
            parse(r#"{"timestamp":1.0,"type":"session.ended","session_duration_seconds":14.08,"audio_duration_seconds":null}"#).unwrap(),
            AgentMessage::SessionEnded
        );
        assert_eq!(
            parse(r#"{"type":"brand.new"}"#).unwrap(),
            AgentMessage::Unknown("brand.new".into())
        );
        assert!(parse("garbage").is_err());
    }

    /// Every code of the reference's table (§8), and whether the session survives it.
    const CODES: [(&str, bool); 20] = [
        ("unauthorized", true),
        ("forbidden", true),
        ("internal_error", true),
        ("server_error", true),
        ("at_capacity", true),
        ("concurrency_exceeded", true),
        ("session_not_found", true),
        ("session_forbidden", true),
        ("session_expired", true),
        ("agent_not_found", true),
        ("agent_id_not_first", false),
        ("agent_init_failed", true),
        ("agent_timeout", true),
        ("invalid_format", false),
        ("invalid_audio", false),
        ("invalid_value", false),
        ("invalid_config", false),
        ("immutable_field", false),
        ("audio_rate_violation", false),
        ("invalid_webhook", true),
    ];

    #[test]
    fn every_documented_error_code_is_known_and_keeps_its_text() {
        for (text, fatal) in CODES {
            let code = AgentErrorCode::from(text);
            assert!(!matches!(code, AgentErrorCode::Other(_)), "{text}");
            assert_eq!(code.as_str(), text);
            assert_eq!(code.to_string(), text);
            assert_eq!(
                AgentErrorCode::from(text.to_ascii_uppercase().as_str()),
                code
            );
            assert_eq!(code.is_fatal(), fatal, "{text}");
        }
    }

    #[test]
    fn an_unknown_error_code_is_kept_in_lower_case_and_ends_the_session() {
        let code = AgentErrorCode::from("Quota_Exceeded");
        assert_eq!(code, AgentErrorCode::Other("quota_exceeded".into()));
        assert_eq!(code.as_str(), "quota_exceeded");
        assert!(code.is_fatal());
        assert!(!code.refuses_key() && !code.is_configuration());
    }

    #[test]
    fn which_codes_blame_the_key_or_the_settings() {
        let refusing: Vec<&str> = CODES
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| AgentErrorCode::from(*t).refuses_key())
            .collect();
        assert_eq!(refusing, ["unauthorized", "forbidden"]);
        let configuration: Vec<&str> = CODES
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| AgentErrorCode::from(*t).is_configuration())
            .collect();
        assert_eq!(
            configuration,
            ["unauthorized", "forbidden", "invalid_value"]
        );
    }

    #[test]
    fn errors_are_described_with_advice_and_the_services_words() {
        assert_eq!(
            AgentErrorCode::Unauthorized.describe(""),
            "Voice Agent error unauthorized: AssemblyAI rejected the API key: check ASSEMBLYAI_API_KEY"
        );
        assert_eq!(
            AgentErrorCode::AtCapacity.describe("busy"),
            "Voice Agent error at_capacity: the Voice Agent service had trouble; try again shortly (service said: busy)"
        );
        assert_eq!(
            AgentErrorCode::InvalidAudio.describe("bad base64"),
            "Voice Agent error invalid_audio: bad base64"
        );
        assert_eq!(
            AgentErrorCode::from("mystery").describe(""),
            "Voice Agent error mystery: "
        );
        let error = AgentError {
            code: AgentErrorCode::InvalidValue,
            message: "unknown voice".into(),
        };
        assert_eq!(
            error.to_string(),
            "Voice Agent error invalid_value: the agent settings were rejected (is the voice name valid?) (service said: unknown voice)"
        );
    }

    /// One of each event the reference documents, as it shows them.
    const DOCUMENTED: [&str; 14] = [
        r#"{"type":"session.updated","timestamp":1.0}"#,
        r#"{"type":"session.ready","session_id":"sess_59a2","config":{},"expires_at":1790465450,"resume_token":"e","timestamp":1790461856.2}"#,
        r#"{"type":"input.speech.started","timestamp":1.0}"#,
        r#"{"type":"input.speech.stopped","timestamp":1.0}"#,
        r#"{"type":"transcript.user.delta","item_id":"msg_1","text":"What's the weather in","timestamp":1.0}"#,
        r#"{"type":"transcript.user","item_id":"msg_1","text":"What's the weather in Tokyo?","timestamp":1.0}"#,
        r#"{"type":"reply.started","reply_id":"resp_1"}"#,
        r#"{"type":"reply.audio","reply_id":"resp_1","data":"EAAgADAA"}"#,
        r#"{"type":"transcript.agent.delta","reply_id":"r","item_id":"m","text":"It's"}"#,
        r#"{"type":"transcript.agent","reply_id":"r","item_id":"m","text":"It's sunny.","interrupted":true}"#,
        r#"{"type":"tool.call","call_id":"chatcmpl-tool-8b12","name":"get_weather","arguments":{"location":"Tokyo"}}"#,
        r#"{"type":"reply.done","reply_id":"r","status":"interrupted"}"#,
        r#"{"type":"session.error","code":"UNAUTHORIZED","message":"bad","session_id":null,"param":null,"timestamp":"2026-01-01T00:00:00Z"}"#,
        r#"{"timestamp":1.0,"type":"session.ended","session_duration_seconds":14.08,"audio_duration_seconds":null}"#,
    ];

    /// Longest rejection message, and longest description of a `session.error`.
    const MAX_MESSAGE: usize = 300;
    const MAX_DESCRIPTION: usize = 400;

    /// The event type each message stands for (`error` is also read as `session.error`).
    fn kind(message: &AgentMessage<'_>) -> &'static str {
        match message {
            AgentMessage::SessionUpdated => "session.updated",
            AgentMessage::SessionReady { .. } => "session.ready",
            AgentMessage::SessionEnded => "session.ended",
            AgentMessage::SessionError(_) => "session.error",
            AgentMessage::SpeechStarted => "input.speech.started",
            AgentMessage::SpeechStopped => "input.speech.stopped",
            AgentMessage::UserPartial { .. } => "transcript.user.delta",
            AgentMessage::UserFinal { .. } => "transcript.user",
            AgentMessage::ReplyStarted => "reply.started",
            AgentMessage::ReplyAudio { .. } => "reply.audio",
            AgentMessage::AgentDelta => "transcript.agent.delta",
            AgentMessage::AgentFinal { .. } => "transcript.agent",
            AgentMessage::ToolCall { .. } => "tool.call",
            AgentMessage::ReplyDone { .. } => "reply.done",
            AgentMessage::Unknown(_) => "",
        }
    }

    /// Whatever the service sends (random bytes, documented events damaged, fields of the
    /// wrong type, huge numbers, deep nesting, invalid UTF-8), parsing ends in an event that
    /// agrees with the frame's `type`, or in one short printable line; and a `session.error`,
    /// whatever its code and message, is described in one short printable line too.
    #[test]
    fn any_event_parses_or_is_refused_clearly() {
        use crate::props;
        use rand::Rng;
        const PIECES: [&str; 12] = [
            "{",
            "}",
            "\"type\":",
            "\"session.error\"",
            "\"reply.audio\"",
            "\"tool.call\"",
            "\"data\":",
            "\"arguments\":",
            ":",
            ",",
            "\"",
            "null",
        ];
        let valid: Vec<Value> = DOCUMENTED
            .iter()
            .map(|m| serde_json::from_str(m).unwrap())
            .collect();
        props::check(
            21,
            props::cases(),
            |rng| {
                let i = rng.random_range(0..DOCUMENTED.len());
                props::Lossy(match rng.random_range(0..5) {
                    0 => props::random_bytes(rng, 200),
                    1 => props::random_text(rng, &PIECES, 40).into_bytes(),
                    2 => props::mutate_bytes(rng, DOCUMENTED[i].as_bytes()),
                    3 => props::mutate_json(rng, &valid[i]),
                    // The one event whose text reaches the user's screen, made hostile.
                    _ => {
                        let words = |rng: &mut rand::rngs::StdRng| {
                            if rng.random_bool(0.1) {
                                props::long_text(rng)
                            } else {
                                props::random_text(rng, &CODES.map(|(c, _)| c), 6)
                            }
                        };
                        let code = words(rng);
                        let message = words(rng);
                        let kind = ["session.error", "error"][rng.random_range(0..2)];
                        json!({"type": kind, "code": code, "message": message})
                            .to_string()
                            .into_bytes()
                    }
                })
            },
            |props::Lossy(frame)| match parse_bytes(frame) {
                Err(e) => props::assert_clear(&e.to_string(), MAX_MESSAGE),
                Ok(message) => {
                    if let AgentMessage::SessionError(error) = &message {
                        props::assert_clear(&error.to_string(), MAX_DESCRIPTION);
                    }
                    // Fields the parser skips are not checked (for UTF-8, number range or
                    // depth); where the whole frame is plain JSON, the event must agree.
                    let Ok(v) = serde_json::from_str::<Value>(&String::from_utf8_lossy(frame))
                    else {
                        return;
                    };
                    let kind_sent = v["type"].as_str().unwrap();
                    match &message {
                        AgentMessage::Unknown(other) => assert_eq!(other, kind_sent),
                        AgentMessage::SessionError(_) if kind_sent == "error" => {}
                        known => assert_eq!(kind(known), kind_sent),
                    }
                    match message {
                        AgentMessage::ReplyAudio { data } => {
                            assert_eq!(v["data"].as_str().unwrap_or_default(), data);
                        }
                        AgentMessage::UserFinal { text } | AgentMessage::UserPartial { text } => {
                            assert_eq!(v["text"].as_str().unwrap_or_default(), text);
                        }
                        AgentMessage::ToolCall { call_id, .. } => {
                            assert_eq!(v["call_id"].as_str().unwrap_or_default(), call_id);
                        }
                        _ => {}
                    }
                }
            },
        );
    }

    /// Fields the service may add, with any value, change nothing about a documented event.
    #[test]
    fn added_fields_are_ignored() {
        use crate::props;
        use rand::Rng;
        props::check(
            22,
            props::cases(),
            |rng| {
                let i = rng.random_range(0..DOCUMENTED.len());
                let mut v: Value = serde_json::from_str(DOCUMENTED[i]).unwrap();
                let key = format!("new{}", props::random_text(rng, &[], 8));
                let value = match rng.random_range(0..4) {
                    0 => json!(props::random_text(rng, &[], 30)),
                    1 => json!(rng.random::<f64>() * 1e300),
                    2 => json!([null, {"a": [1, 2]}, "x"]),
                    _ => json!({"nested": {"deeper": props::random_text(rng, &[], 5)}}),
                };
                v.as_object_mut().unwrap().insert(key, value);
                (i, serde_json::to_string(&v).unwrap())
            },
            |(i, frame)| {
                assert_eq!(parse(frame).unwrap(), parse(DOCUMENTED[*i]).unwrap());
            },
        );
    }

    #[test]
    fn an_error_from_the_service_is_described_on_one_short_line() {
        let frame = json!({
            "type": "session.error",
            "code": "\u{1b}[2Jnew_code",
            "message": format!("line one\nline two\u{202e}{}", "x".repeat(100_000)),
        })
        .to_string();
        let AgentMessage::SessionError(error) = parse(&frame).unwrap() else {
            panic!("{frame}")
        };
        let shown = error.to_string();
        assert!(shown.chars().count() <= MAX_DESCRIPTION, "{shown}");
        assert!(
            shown.starts_with(
                "Voice Agent error \\u{1b}[2jnew_code: line one\\nline two\\u{202e}xxx"
            ),
            "{shown}"
        );
        let e = parse(&format!(
            r#"{{"type":"transcript.agent","interrupted":"{}"}}"#,
            "x".repeat(100_000)
        ))
        .unwrap_err()
        .to_string();
        assert!(e.chars().count() <= MAX_MESSAGE, "{e}");
        assert!(
            e.contains("…") && e.contains("expected a boolean at line 1"),
            "{e}"
        );
    }

    #[test]
    fn session_update_is_the_whole_documented_shape() {
        let tools = [ToolSpec {
            name: "end_call".into(),
            description: "Hang up".into(),
            parameters: json!({"type":"object"}),
        }];
        let v: Value =
            serde_json::from_str(&session_update(&AgentConfig::default(), &tools)).unwrap();
        let agent = AgentConfig::default();
        assert_eq!(
            v,
            json!({
                "type": "session.update",
                "session": {
                    "system_prompt": agent.system_prompt,
                    "greeting": agent.greeting,
                    "tools": [{"type":"function","name":"end_call","description":"Hang up","parameters":{"type":"object"}}],
                    "input": {"format": {"encoding": "audio/pcmu"}},
                    "output": {"voice": "alba", "format": {"encoding": "audio/pcmu"}},
                }
            })
        );
        let agent = AgentConfig {
            turn_detection: TurnDetection {
                vad_threshold: Some(0.5),
                min_silence: Some(400),
                max_silence: Some(2000),
                interrupt_response: Some(false),
            },
            ..AgentConfig::default()
        };
        let v: Value = serde_json::from_str(&session_update(&agent, &[])).unwrap();
        assert_eq!(
            v["session"]["input"]["turn_detection"],
            json!({"vad_threshold":0.5,"min_silence":400,"max_silence":2000,"interrupt_response":false})
        );
        assert_eq!(v["session"]["tools"], json!([]));
    }
}

//! What the AI agent is told to be: prompt, greeting, voice and turn detection. Read from flags,
//! an agent file (TOML, `[agent]` table) or a campaign file, and sent in `session.update`.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The default greeting says plainly that the call is automated: several jurisdictions require
/// it, and callees deserve it.
pub const DEFAULT_GREETING: &str = "Hello! This is an automated assistant calling on behalf of our office. Is now a good time to talk for a moment?";

/// The default greeting of a recorded call: it also says the call is recorded.
pub const DEFAULT_RECORDED_GREETING: &str = "Hello! This is an automated assistant calling on behalf of our office, and this call is recorded. Is now a good time to talk for a moment?";

pub const DEFAULT_PROMPT: &str = "You are a polite, concise phone assistant placing an outbound call. \
Speak in short sentences. If the person asks to stop being called, apologise and end the call. \
When the conversation is finished, say goodbye and call the end_call tool.";

pub const DEFAULT_VOICE: &str = "alba";

/// `session.input.turn_detection`; unset fields keep the service's adaptive defaults, so they
/// are not sent at all.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TurnDetection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vad_threshold: Option<f64>,
    /// Milliseconds of silence before a confident end-of-turn check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_silence: Option<u32>,
    /// Milliseconds of silence that force the end of a turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_silence: Option<u32>,
    /// `false` turns barge-in off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupt_response: Option<bool>,
}

impl TurnDetection {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Whether a recorded call's greeting must say that the call is recorded. The law differs by
/// place (some require every party's consent, some one party's), so it can be turned off where
/// it is not needed; it is required unless it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingDisclosure {
    #[default]
    Required,
    Off,
}

/// The agent's configuration. Serialized as it is read, so that the call API carries it whole.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub system_prompt: String,
    pub greeting: String,
    pub voice: String,
    pub turn_detection: TurnDetection,
    /// Record the calls (`--record`): not sent to the agent, it changes how the call is placed.
    pub record: bool,
    /// Whether the greeting of a recorded call must say it is recorded.
    pub recording_disclosure: RecordingDisclosure,
    /// Left on an answering machine after its beep, in the agent's voice; without it a call
    /// that reaches a machine is hung up at once.
    pub voicemail_message: Option<String>,
    /// Where `transfer_call` hands the callee over: E.164 or a SIP URI. Without it the agent
    /// has no `transfer_call` tool.
    pub transfer_to: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            system_prompt: DEFAULT_PROMPT.to_string(),
            greeting: DEFAULT_GREETING.to_string(),
            voice: DEFAULT_VOICE.to_string(),
            turn_detection: TurnDetection::default(),
            record: false,
            recording_disclosure: RecordingDisclosure::Required,
            voicemail_message: None,
            transfer_to: None,
        }
    }
}

/// Whole words that tell a callee the call is being recorded.
const RECORDING_WORDS: [&str; 3] = ["recorded", "recording", "record"];

/// Whether a greeting tells the callee the call is recorded: a whole word like "recorded" or
/// "recording", in any case.
pub fn discloses_recording(greeting: &str) -> bool {
    greeting
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| RECORDING_WORDS.iter().any(|r| w.eq_ignore_ascii_case(r)))
}

/// Why an agent configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("cannot read agent file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("agent file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("agent setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Deserialize)]
struct AgentFile {
    agent: AgentConfig,
}

impl AgentConfig {
    /// Load the `[agent]` table of a TOML file. Other tables are ignored here, so a campaign file
    /// also works as an agent file.
    pub fn from_file(path: &Path) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        #[derive(Deserialize)]
        struct Loose {
            agent: Option<toml::Value>,
        }
        let loose: Loose = toml::from_str(&text).map_err(|e| AgentConfigError::Parse {
            path: path.display().to_string(),
            message: e.message().to_string(),
        })?;
        let Some(table) = loose.agent else {
            return Err(AgentConfigError::Parse {
                path: path.display().to_string(),
                message: "no [agent] table".into(),
            });
        };
        let file: AgentFile =
            toml::Value::Table(toml::map::Map::from_iter([("agent".to_string(), table)]))
                .try_into()
                .map_err(|e: toml::de::Error| AgentConfigError::Parse {
                    path: path.display().to_string(),
                    message: format!("[agent] {}", e.message()),
                })?;
        let mut agent = file.agent;
        agent.prepare_recording();
        agent.validate()?;
        Ok(agent)
    }

    /// A recorded call keeping the default greeting gets the default that says so.
    pub fn prepare_recording(&mut self) {
        if self.record && self.greeting == DEFAULT_GREETING {
            self.greeting = DEFAULT_RECORDED_GREETING.to_string();
        }
    }

    /// Check ranges the Voice Agent API documents, so a mistake is reported before dialing;
    /// and that a recorded call's greeting says it is recorded, unless that check is off.
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        if self.record
            && self.recording_disclosure == RecordingDisclosure::Required
            && !discloses_recording(&self.greeting)
        {
            return Err(AgentConfigError::Invalid {
                key: "greeting",
                message: "does not say the call is recorded: with recording on, callees must be \
                          told (in many places every party must consent). Add words like \
                          \"this call is recorded\", or set recording_disclosure = \"off\" where \
                          the law does not require it"
                    .into(),
            });
        }
        if self.greeting.trim().is_empty() {
            return Err(AgentConfigError::Invalid {
                key: "greeting",
                message: "must not be empty (the callee would hear silence)".into(),
            });
        }
        if self.voice.trim().is_empty() {
            return Err(AgentConfigError::Invalid {
                key: "voice",
                message: "must name a voice, e.g. alba".into(),
            });
        }
        if let Some(message) = &self.voicemail_message
            && message.trim().is_empty()
        {
            return Err(AgentConfigError::Invalid {
                key: "voicemail_message",
                message: "must not be empty (leave it out to hang up on machines)".into(),
            });
        }
        if let Some(message) = &self.voicemail_message
            && message.chars().count() > MAX_VOICEMAIL_CHARS
        {
            return Err(AgentConfigError::Invalid {
                key: "voicemail_message",
                message: format!(
                    "is longer than {MAX_VOICEMAIL_CHARS} characters (a voicemail box records a minute or two)"
                ),
            });
        }
        if let Some(target) = &self.transfer_to {
            crate::call::transfer::Target::parse(target).map_err(|message| {
                AgentConfigError::Invalid {
                    key: "transfer_to",
                    message,
                }
            })?;
        }
        if let Some(v) = self.turn_detection.vad_threshold
            && !(0.0..=1.0).contains(&v)
        {
            return Err(AgentConfigError::Invalid {
                key: "turn_detection.vad_threshold",
                message: format!("{v} is outside 0.0–1.0"),
            });
        }
        for (key, value) in [
            (
                "turn_detection.min_silence",
                self.turn_detection.min_silence,
            ),
            (
                "turn_detection.max_silence",
                self.turn_detection.max_silence,
            ),
        ] {
            if let Some(ms) = value
                && ms > MAX_SILENCE_MS
            {
                return Err(AgentConfigError::Invalid {
                    key,
                    message: format!(
                        "{ms} ms is more than {MAX_SILENCE_MS} ms (the callee would wait in silence for the agent to answer)"
                    ),
                });
            }
        }
        if let (Some(min), Some(max)) = (
            self.turn_detection.min_silence,
            self.turn_detection.max_silence,
        ) && min > max
        {
            return Err(AgentConfigError::Invalid {
                key: "turn_detection.min_silence",
                message: format!("{min} ms is more than max_silence ({max} ms)"),
            });
        }
        Ok(())
    }
}

/// The longest voicemail message: about a minute and a half of speech.
const MAX_VOICEMAIL_CHARS: usize = 1_000;

/// The longest silence a turn may end on: past it a caller hangs up on a quiet line.
const MAX_SILENCE_MS: u32 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_call_must_say_so_unless_the_check_is_off() {
        let mut agent = AgentConfig {
            record: true,
            ..AgentConfig::default()
        };
        let e = agent.validate().unwrap_err().to_string();
        assert!(e.contains("greeting") && e.contains("recorded"), "{e}");
        // The default greeting becomes the default that says so.
        agent.prepare_recording();
        assert_eq!(agent.greeting, DEFAULT_RECORDED_GREETING);
        assert!(agent.validate().is_ok());
        // A greeting of one's own is not rewritten: it must say so itself.
        agent.greeting = "Hi, this is the automated assistant of Dr. Lee.".into();
        agent.prepare_recording();
        assert!(agent.validate().is_err());
        agent.greeting = "Hi, this AI call is being Recorded for quality.".into();
        assert!(agent.validate().is_ok());
        agent.greeting = "Hi, this is an automated call (a recording-free one).".into();
        assert!(agent.validate().is_ok(), "whole words, hyphens split");
        agent.greeting = "Hi, this is an automated call about your medical records".into();
        assert!(agent.validate().is_err(), "records are not a recording");
        agent.greeting = "Hi, this is an automated call; we record calls for training".into();
        assert!(agent.validate().is_ok());
        agent.greeting = "Hi, this is an automated call, recorder ready".into();
        assert!(agent.validate().is_err(), "not a whole word");
        agent.recording_disclosure = RecordingDisclosure::Off;
        assert!(agent.validate().is_ok());
        // Without recording, nothing is asked.
        let plain = AgentConfig::default();
        assert!(!discloses_recording(&plain.greeting));
        assert!(plain.validate().is_ok());
    }

    #[test]
    fn record_keys_are_read_from_the_agent_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "[agent]\nrecord = true\nrecording_disclosure = \"off\"\ngreeting = \"Hi, automated call\"\n",
        )
        .unwrap();
        let agent = AgentConfig::from_file(&path).unwrap();
        assert!(agent.record);
        assert_eq!(agent.recording_disclosure, RecordingDisclosure::Off);
        std::fs::write(
            &path,
            "[agent]\nrecord = true\ngreeting = \"Hi, automated call\"\n",
        )
        .unwrap();
        let e = AgentConfig::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("recorded"), "{e}");
        // With the default greeting, the recorded default is used.
        std::fs::write(&path, "[agent]\nrecord = true\n").unwrap();
        let agent = AgentConfig::from_file(&path).unwrap();
        assert_eq!(agent.greeting, DEFAULT_RECORDED_GREETING);
        std::fs::write(&path, "[agent]\nrecording_disclosure = \"sometimes\"\n").unwrap();
        assert!(AgentConfig::from_file(&path).is_err());
    }

    #[test]
    fn silences_are_bounded() {
        let mut agent = AgentConfig::default();
        agent.turn_detection.max_silence = Some(4_294_967_295);
        let e = agent.validate().unwrap_err().to_string();
        assert!(e.contains("max_silence") && e.contains("10000 ms"), "{e}");
        agent.turn_detection.max_silence = Some(3_000);
        agent.turn_detection.min_silence = Some(10_001);
        assert!(agent.validate().is_err());
        agent.turn_detection.min_silence = Some(800);
        assert!(agent.validate().is_ok());
    }

    #[test]
    fn default_greeting_discloses_automation() {
        assert!(AgentConfig::default().greeting.contains("automated"));
    }

    #[test]
    fn loads_agent_table_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.toml");
        std::fs::write(
            &good,
            "[agent]\ngreeting = \"Hi, automated call\"\nvoice = \"jane\"\n[agent.turn_detection]\nmin_silence = 500\n[other]\nx = 1\n",
        )
        .unwrap();
        let cfg = AgentConfig::from_file(&good).unwrap();
        assert_eq!(cfg.voice, "jane");
        assert_eq!(cfg.turn_detection.min_silence, Some(500));
        assert_eq!(cfg.system_prompt, DEFAULT_PROMPT);

        let bad = dir.path().join("b.toml");
        std::fs::write(&bad, "[agent]\nvoise = \"jane\"\n").unwrap();
        let err = AgentConfig::from_file(&bad).unwrap_err().to_string();
        assert!(err.contains("voise"), "{err}");
    }

    #[test]
    fn rejects_out_of_range_turn_detection() {
        let mut cfg = AgentConfig::default();
        cfg.turn_detection.vad_threshold = Some(1.5);
        assert!(cfg.validate().is_err());
    }
}

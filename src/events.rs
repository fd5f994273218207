//! What happens during a call, as plain data. The call path emits these; the terminal view,
//! the JSON printer and the campaign runner consume them. Nothing here knows how it is shown.

pub use crate::call::transfer::TransferOutcome;
pub use crate::call::voicemail::MachineEnd;
use crate::twilio::{AnsweredBy, CallStatus};
use serde::{Deserialize, Serialize};
use std::time::Duration;

// Every outcome carries one, so code that reads outcomes finds it here.
pub use crate::twilio::FinalStatus;

/// Who said a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    Agent,
    Callee,
}

/// One line of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptLine {
    pub speaker: Speaker,
    pub text: String,
    /// Milliseconds since the callee answered.
    pub at_ms: u64,
    /// The agent was cut off while saying this (barge-in); `text` is what was heard.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// For an agent line that answered the callee: milliseconds from the end of the callee's
    /// turn to the reply's first audio leaving for Twilio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u32>,
}

/// Which way a call goes: placed by us, or brought to the server by Twilio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// Who ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndedBy {
    /// The callee hung up (or the call never connected: busy, no answer, failed).
    Callee,
    /// The agent ended the conversation (`end_call`).
    Agent,
    /// The call reached its time limit.
    TimeLimit,
    /// The person running dialer (Ctrl-C, campaign shutdown).
    Operator,
    /// Something failed: the agent service, the stream, or the Twilio API.
    Error,
    /// The network never connected the call (busy, no answer, carrier failure).
    Network,
}

/// A campaign disposition the agent recorded with `record_outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposition {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// An error attached to an outcome: Twilio or Voice Agent code when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The other party: the number called, or for an inbound call the caller.
    pub to: String,
    pub direction: Direction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    pub status: FinalStatus,
    /// Seconds the call was connected (Twilio's `CallDuration`), when it was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
    pub ended_by: EndedBy,
    /// Why it ended, in words (`"agent said goodbye"`, `"busy"`, `"time limit of 600 s"`).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OutcomeError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Disposition>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub opted_out: bool,
    pub transcript: Vec<TranscriptLine>,
    /// Each time the agent's connection was lost mid-call and came back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reconnects: Vec<AgentReconnect>,
    /// A machine answered: `voicemail-left` (the message was spoken after the beep),
    /// `voicemail` (no message left) or `fax`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineEnd>,
    /// The agent handed the call to a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferOutcome>,
    /// How long the callee waited for the agent.
    #[serde(default, skip_serializing_if = "CallLatency::is_empty")]
    pub latency: CallLatency,
    /// Twilio's recording of the call (`--record`), as its status callbacks described it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<TwilioRecording>,
    /// The stereo WAV written on this machine (`--record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_recording: Option<LocalRecording>,
}

/// How long the callee waited for the agent on one call, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallLatency {
    /// The agent's setup: connection open → `session.ready` (the call's first session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_setup_ms: Option<u32>,
    /// Each reply that answered the callee: end of the callee's turn → the reply's first
    /// audio frame leaving for Twilio, in order.
    pub replies_ms: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_p50_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_p95_ms: Option<u32>,
}

/// The `p`-th percentile (0 < p ≤ 100) of `values` by the nearest-rank method: a figure that
/// was actually measured, never an interpolation between two.
pub fn percentile(values: &[u32], p: u32) -> Option<u32> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let rank = (n * p as usize).div_ceil(100).clamp(1, n);
    Some(sorted[rank - 1])
}

impl CallLatency {
    /// The figures of one call, with its percentiles.
    pub fn new(agent_setup_ms: Option<u32>, replies_ms: Vec<u32>) -> Self {
        Self {
            agent_setup_ms,
            reply_p50_ms: percentile(&replies_ms, 50),
            reply_p95_ms: percentile(&replies_ms, 95),
            replies_ms,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.agent_setup_ms.is_none() && self.replies_ms.is_empty()
    }
}

/// Twilio's recording of a call (`Record=true`), from its `RecordingStatusCallback`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwilioRecording {
    /// `RE…`.
    pub sid: String,
    /// `in-progress`, `completed` or `absent` (Twilio made no recording).
    pub status: String,
    /// Where Twilio keeps the file (append `.wav` or `.mp3` to download it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// 2 for a dual-channel recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
}

impl TwilioRecording {
    /// Twilio will say no more about this recording.
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "absent")
    }
}

/// The recording written on this machine: callee left, agent right, 8 kHz.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRecording {
    pub path: String,
    /// Audio frames the writer could not keep up with (dropped, never waited for).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frames_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The agent's connection was lost mid-call and the conversation went on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReconnect {
    /// The same session came back (`session.resume`); otherwise a new one carried the
    /// conversation so far in its prompt.
    pub resumed: bool,
    /// How long the callee heard nothing from the agent, in milliseconds.
    pub gap_ms: u64,
    /// What went wrong, in words.
    pub cause: String,
}

impl Outcome {
    /// A call placed by us that failed with `message` (and the service's `code`) before
    /// anyone was connected; `call_sid` when Twilio had created it.
    pub fn failed(
        to: &str,
        call_sid: Option<String>,
        code: Option<String>,
        message: String,
    ) -> Outcome {
        Outcome {
            to: to.to_string(),
            direction: Direction::Outbound,
            call_sid,
            status: FinalStatus::Failed,
            duration_secs: None,
            answered_by: None,
            ended_by: EndedBy::Error,
            reason: message.clone(),
            error: Some(OutcomeError { code, message }),
            disposition: None,
            opted_out: false,
            transcript: Vec::new(),
            reconnects: Vec::new(),
            machine: None,
            transfer: None,
            latency: CallLatency::default(),
            recording: None,
            local_recording: None,
        }
    }

    /// Whether a conversation took place and ended normally.
    pub fn is_success(&self) -> bool {
        self.status == FinalStatus::Completed && self.error.is_none()
    }

    pub fn duration(&self) -> Option<Duration> {
        self.duration_secs.map(Duration::from_secs)
    }
}

#[cfg(test)]
impl Outcome {
    /// A call to `to` that ended as told, with nothing else known: unit tests set the fields
    /// they care about.
    pub(crate) fn sample(to: &str, status: FinalStatus, ended_by: EndedBy) -> Outcome {
        Outcome {
            to: to.into(),
            direction: Direction::Outbound,
            call_sid: Some("CA00000000000000000000000000000001".into()),
            status,
            duration_secs: None,
            answered_by: None,
            ended_by,
            reason: String::new(),
            error: None,
            disposition: None,
            opted_out: false,
            transcript: vec![],
            reconnects: Vec::new(),
            latency: CallLatency::default(),
            recording: None,
            local_recording: None,
            machine: None,
            transfer: None,
        }
    }
}

/// Something that happened on one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CallEvent {
    /// The create request is about to be sent.
    Dialing { to: String },
    /// Twilio accepted the call we placed, or brought us one (`to` is then the caller).
    Created {
        to: String,
        call_sid: String,
        direction: Direction,
    },
    /// A progress status from Twilio: initiated, ringing, in-progress.
    Status { to: String, status: CallStatus },
    /// Answering machine detection's verdict.
    AnsweredBy { to: String, answered_by: AnsweredBy },
    /// The media stream and the agent session are both up; the agent took `setup_ms` from
    /// its connection opening to `session.ready`.
    Connected {
        to: String,
        session_id: String,
        setup_ms: u32,
    },
    /// The callee's words so far in the current utterance (replaces the previous partial).
    Partial { to: String, text: String },
    /// A finished line of the conversation.
    Line { to: String, line: TranscriptLine },
    /// The agent called a tool.
    Tool {
        to: String,
        name: String,
        arguments: serde_json::Value,
        ok: bool,
    },
    /// The agent recorded a disposition.
    Disposition {
        to: String,
        disposition: Disposition,
    },
    /// The callee pressed keys (an entry: keys within a short pause, or up to `#`).
    Keypad { to: String, keys: String },
    /// The call was handed to a person (`answered` is not known yet).
    Transferring {
        to: String,
        target: String,
        reason: String,
    },
    /// The agent's connection was lost and came back.
    Reconnected {
        to: String,
        reconnect: AgentReconnect,
    },
    /// Twilio reported on the call's recording.
    Recording {
        to: String,
        recording: TwilioRecording,
    },
    /// The call is over.
    Ended { outcome: Box<Outcome> },
}

impl CallEvent {
    /// The number the event is about.
    pub fn to(&self) -> &str {
        match self {
            Self::Dialing { to }
            | Self::Created { to, .. }
            | Self::Status { to, .. }
            | Self::AnsweredBy { to, .. }
            | Self::Connected { to, .. }
            | Self::Partial { to, .. }
            | Self::Line { to, .. }
            | Self::Tool { to, .. }
            | Self::Disposition { to, .. }
            | Self::Keypad { to, .. }
            | Self::Transferring { to, .. }
            | Self::Reconnected { to, .. }
            | Self::Recording { to, .. } => to,
            Self::Ended { outcome } => &outcome.to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn twilios_words_reach_the_json_events_unchanged() {
        let status = CallEvent::Status {
            to: "+12025550100".into(),
            status: CallStatus::InProgress,
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({"event":"status","to":"+12025550100","status":"in-progress"})
        );
        let unknown = CallEvent::Status {
            to: "+12025550100".into(),
            status: CallStatus::from("held"),
        };
        assert_eq!(serde_json::to_value(&unknown).unwrap()["status"], "held");
        let verdict = CallEvent::AnsweredBy {
            to: "+12025550100".into(),
            answered_by: AnsweredBy::MachineEndBeep,
        };
        assert_eq!(
            serde_json::to_value(&verdict).unwrap(),
            json!({"event":"answered_by","to":"+12025550100","answered_by":"machine_end_beep"})
        );
        let mut outcome = Outcome::sample("+12025550100", FinalStatus::NoAnswer, EndedBy::Network);
        outcome.answered_by = Some(AnsweredBy::Fax);
        let v = serde_json::to_value(&outcome).unwrap();
        assert_eq!(
            (&v["status"], &v["answered_by"]),
            (&json!("no-answer"), &json!("fax"))
        );
    }

    /// The remote dialer reads back exactly what the server wrote: every kind of event, with
    /// every optional part present and absent.
    #[test]
    fn every_event_reads_back_as_it_was_written() {
        let to = "+12025550100".to_string();
        let line = TranscriptLine {
            speaker: Speaker::Agent,
            text: "Hi \"Ana\"\n…".into(),
            at_ms: 1500,
            interrupted: true,
            latency_ms: Some(640),
        };
        let recording = TwilioRecording {
            sid: "RE1".into(),
            status: "completed".into(),
            url: Some("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1".into()),
            duration_secs: Some(41),
            channels: Some(2),
        };
        let mut full = Outcome::sample(&to, FinalStatus::Completed, EndedBy::TimeLimit);
        full.duration_secs = Some(42);
        full.answered_by = Some(AnsweredBy::from("machine_end_other"));
        full.reason = "time limit".into();
        full.error = Some(OutcomeError {
            code: Some("3005".into()),
            message: "agent lost".into(),
        });
        full.disposition = Some(Disposition {
            name: "confirmed".into(),
            notes: "Tuesday".into(),
        });
        full.opted_out = true;
        full.transcript = vec![line.clone()];
        full.reconnects = vec![AgentReconnect {
            resumed: false,
            gap_ms: 900,
            cause: "reset".into(),
        }];
        full.machine = Some(MachineEnd::VoicemailLeft);
        full.transfer = Some(TransferOutcome {
            to: "+12025550150".into(),
            reason: "wants a person".into(),
            answered: Some(true),
            dial_status: Some("completed".into()),
            dial_duration_secs: Some(30),
        });
        full.latency = CallLatency::new(Some(180), vec![640, 700, 910]);
        full.recording = Some(recording.clone());
        full.local_recording = Some(LocalRecording {
            path: "recordings/CA1.wav".into(),
            frames_dropped: 2,
        });
        let mut fax = Outcome::sample(&to, FinalStatus::Completed, EndedBy::Callee);
        fax.machine = Some(MachineEnd::Fax);
        let mut unanswered = fax.clone();
        unanswered.machine = Some(MachineEnd::Voicemail);
        unanswered.transfer = Some(TransferOutcome {
            to: "sip:desk@pbx.example.com".into(),
            reason: String::new(),
            answered: None,
            dial_status: None,
            dial_duration_secs: None,
        });
        let mut bare = Outcome::sample(&to, FinalStatus::NoAnswer, EndedBy::Network);
        bare.call_sid = None;
        let events = vec![
            CallEvent::Dialing { to: to.clone() },
            CallEvent::Created {
                to: to.clone(),
                call_sid: "CA1".into(),
                direction: crate::events::Direction::Outbound,
            },
            CallEvent::Status {
                to: to.clone(),
                status: CallStatus::from("held"),
            },
            CallEvent::AnsweredBy {
                to: to.clone(),
                answered_by: AnsweredBy::Human,
            },
            CallEvent::Connected {
                to: to.clone(),
                session_id: "s".into(),
                setup_ms: 180,
            },
            CallEvent::Recording {
                to: to.clone(),
                recording,
            },
            CallEvent::Partial {
                to: to.clone(),
                text: "Sorry wh".into(),
            },
            CallEvent::Line {
                to: to.clone(),
                line,
            },
            CallEvent::Tool {
                to: to.clone(),
                name: "record_outcome".into(),
                arguments: json!({"disposition": "confirmed", "n": [1, 2.5, null]}),
                ok: false,
            },
            CallEvent::Disposition {
                to: to.clone(),
                disposition: Disposition {
                    name: "voicemail".into(),
                    notes: String::new(),
                },
            },
            CallEvent::Keypad {
                to: to.clone(),
                keys: "1#".into(),
            },
            CallEvent::Transferring {
                to: to.clone(),
                target: "+12025550150".into(),
                reason: "asked for a person".into(),
            },
            CallEvent::Ended {
                outcome: Box::new(fax),
            },
            CallEvent::Ended {
                outcome: Box::new(unanswered),
            },
            CallEvent::Reconnected {
                to: to.clone(),
                reconnect: AgentReconnect {
                    resumed: true,
                    gap_ms: 3,
                    cause: "1011".into(),
                },
            },
            CallEvent::Ended {
                outcome: Box::new(full),
            },
            CallEvent::Ended {
                outcome: Box::new(bare),
            },
        ];
        for event in events {
            let text = serde_json::to_string(&event).unwrap();
            let back: CallEvent = serde_json::from_str(&text).unwrap();
            assert_eq!(back, event, "{text}");
        }
    }
}

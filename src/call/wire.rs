//! The call API's JSON bodies, as the server writes them and the remote dialer reads them:
//! one definition, so the two cannot drift apart.

use crate::agent::config::{AgentConfig, TurnDetection};
use crate::events::{Outcome, TranscriptLine};
use crate::twilio::{AnsweredBy, CallStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /api/calls`. Every field but `to` is optional; unknown fields are ignored so that
/// older servers accept newer clients.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewCallBody {
    pub to: String,
    /// The whole agent, as an agent file's `[agent]` table; the fields below override it.
    /// Unknown keys are refused here, so that a server never drops part of an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Template variables for `{{name}}` in the greeting and the prompt, as in a campaign's
    /// lead columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, serde_json::Value>>,
    /// Record the call: Twilio's dual-channel recording, and a stereo WAV in the server's
    /// `RECORDINGS_DIR`. The greeting must then say the call is recorded (422 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_detection: Option<TurnDetection>,
    /// Seconds to ring (15–600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_timeout: Option<u64>,
    /// Longest call, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<u64>,
    /// Answering-machine detection (default on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_detection: Option<bool>,
    /// The callee's IANA time zone, for the server's calling window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Give the agent `record_outcome`, limited to these dispositions (a campaign's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispositions: Option<Vec<String>>,
    /// Give the agent `opt_out`, which puts the number on the server's do-not-call list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub opt_out: bool,
    /// Keys the callee may press (an entry such as `1` or `#`) and the disposition each
    /// records, as a campaign's `[dtmf]` table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keypad: BTreeMap<String, String>,
    /// Dispositions that hand the call to a person (`transfer_to`), as `[transfer] on`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfer_on: Vec<String>,
}

/// Whether a call is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Live,
    Ended,
}

/// A call as `GET /api/calls[/{sid}]` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallView {
    pub sid: String,
    pub to: String,
    pub state: CallState,
    /// Twilio's latest status for the call (its final one once ended).
    pub status: CallStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// How many events the call has had; `GET …/events` replays them all.
    #[serde(default)]
    pub events: usize,
    /// The conversation so far (left out of the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Vec<TranscriptLine>>,
    /// How it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Box<Outcome>>,
}

/// `GET /api/calls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallList {
    pub calls: Vec<CallView>,
}

/// `{"error": {"code", "message"}}`, with what a client needs to act on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Twilio's error code, when Twilio refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio_code: Option<u32>,
    /// Whether the same request may work later.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
    /// For a number that could not be called: the outcome a local call would have had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Box<Outcome>>,
}

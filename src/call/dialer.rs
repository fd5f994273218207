//! The seam between "place one call" and whoever places many: a campaign asks a [`Dialer`] to
//! dial, watches the call's events, and gets an [`Outcome`] back. The real implementation is
//! `call::CallService`; tests of campaign logic can substitute a scripted one.

use crate::agent::config::AgentConfig;
use crate::call::tools::ToolHandler;
use crate::events::{CallEvent, FinalStatus, Outcome};
use crate::phone::E164;
use crate::recording::callbacks::LateRecording;
use crate::twilio::{AnsweredBy, CallStatus};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a call may ring (Twilio's `Timeout`), in seconds: Twilio allows up to 600, and
/// less than 15 hangs up on people reaching for the phone.
pub const RING_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 15..=600;

/// One call to place.
#[derive(Clone)]
pub struct CallRequest {
    pub to: E164,
    /// The agent, with any per-lead variables already filled in.
    pub agent: AgentConfig,
    /// Tools beyond the built-in `end_call`.
    pub tools: Arc<dyn ToolHandler>,
    /// How long to let it ring (Twilio `Timeout`).
    pub ring_timeout: Duration,
    /// Longest the call may last once created (Twilio `TimeLimit`).
    pub time_limit: Duration,
    /// Ask Twilio for answering-machine detection (`answered_by`).
    pub machine_detection: bool,
    /// Record the call (`--record`): Twilio's dual-channel recording, and a stereo WAV here.
    pub record: bool,
    /// Where the WAV goes; `None`: the service's folder (`RECORDINGS_DIR`).
    pub recordings_dir: Option<PathBuf>,
    /// Told about the recording when Twilio reports on it after the outcome (a campaign
    /// updates the stored attempt).
    pub late_recording: Option<LateRecording>,
}

impl std::fmt::Debug for CallRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRequest")
            .field("to", &self.to)
            .field("ring_timeout", &self.ring_timeout)
            .field("time_limit", &self.time_limit)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// What Twilio says about a call, for reconciling calls a crashed run left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSnapshot {
    pub sid: String,
    pub to: String,
    pub status: CallStatus,
    pub duration_secs: Option<u64>,
    pub answered_by: Option<AnsweredBy>,
    pub start_time: Option<DateTime<Utc>>,
}

impl CallSnapshot {
    /// The final status, or `None` while the call is still live.
    pub fn final_status(&self) -> Option<FinalStatus> {
        self.status.final_status()
    }
}

/// A failure that concerns every call, not one: bad credentials, an unverified caller ID, an
/// unreachable Twilio. A campaign stops dialing when it sees one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DialError {
    /// Twilio error code when there is one (`20003`, `21210`, …).
    pub code: Option<u32>,
    pub message: String,
    /// Whether trying again later may work (network trouble, Twilio 5xx after retries).
    pub transient: bool,
}

/// Places calls.
pub trait Dialer: Send + Sync + 'static {
    /// Place a call and follow it to its end. Per-number failures (invalid number, busy,
    /// blocked) are outcomes, not errors. Cancelling `cancel` hangs the call up through the
    /// Twilio API; the outcome then says the operator ended it.
    fn dial(
        &self,
        request: CallRequest,
        events: mpsc::UnboundedSender<CallEvent>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<Outcome, DialError>> + Send;

    /// Fetch a call by SID; `Ok(None)` when Twilio does not know it.
    fn lookup(
        &self,
        call_sid: &str,
    ) -> impl Future<Output = Result<Option<CallSnapshot>, DialError>> + Send;

    /// Hang up a call by SID (one a crashed run left ringing or talking with nobody bridging
    /// it). A call that already ended is not an error.
    fn hang_up(&self, call_sid: &str) -> impl Future<Output = Result<(), DialError>> + Send;

    /// Calls to `to` created at or after `since` (finds a call whose create response was lost
    /// when the process died).
    fn find_calls_to(
        &self,
        to: &E164,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<CallSnapshot>, DialError>> + Send;
}

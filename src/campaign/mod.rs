//! Campaigns: many calls from a CSV of leads, paced, retried, inside each callee's calling
//! window, honouring do-not-call lists, persisted so that a run killed at any moment resumes
//! without losing an outcome or dialing anyone twice.
//!
//! - [`leads`]: the leads CSV: phone column, time zone, variables, bad rows, duplicates.
//! - [`template`]: `{{variable}}` filling of the greeting and the prompt.
//! - [`dnc`]: do-not-call list files, read at dial time, appended to on opt-out.
//! - [`config`]: the campaign file (agent, dispositions, pacing, retries, window, DNC).
//! - [`window`]: calling windows in the callee's own time zone.

pub mod config;
pub mod dnc;
pub mod leads;
pub mod template;
pub mod window;

use crate::events::CallEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where a lead stands. The first four are not final; every other state is, and a lead in a
/// final state is never dialed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeadStatus {
    /// Not called yet.
    Pending,
    /// Called before; the next attempt waits for its time (retry delay, calling window).
    Retry,
    /// An attempt is in flight (or was, when a run died: reconciled on the next start).
    Live,
    /// Answered, a conversation took place.
    Completed,
    /// Answered by a machine, and no more voicemail retries are left.
    Voicemail,
    Busy,
    NoAnswer,
    /// The call could not be placed or connected (invalid, blocked, carrier failure, error).
    Failed,
    /// The callee asked not to be called again.
    OptedOut,
    /// On a do-not-call list when its turn came.
    DoNotCall,
    /// No time zone from its row nor the campaign, so its calling window is unknown.
    NoTimezone,
}

impl LeadStatus {
    pub const ALL: [LeadStatus; 11] = [
        Self::Pending,
        Self::Retry,
        Self::Live,
        Self::Completed,
        Self::Voicemail,
        Self::Busy,
        Self::NoAnswer,
        Self::Failed,
        Self::OptedOut,
        Self::DoNotCall,
        Self::NoTimezone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retry => "retry",
            Self::Live => "live",
            Self::Completed => "completed",
            Self::Voicemail => "voicemail",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::OptedOut => "opted-out",
            Self::DoNotCall => "do-not-call",
            Self::NoTimezone => "no-timezone",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Retry | Self::Live)
    }
}

impl std::fmt::Display for LeadStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The campaign's totals, for the closing table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub leads: u64,
    /// Leads per status (every status with at least one lead), in [`LeadStatus::ALL`] order.
    pub statuses: Vec<(LeadStatus, u64)>,
    /// Leads per recorded disposition, most frequent first.
    pub dispositions: Vec<(String, u64)>,
    /// Calls placed (attempts that reached Twilio).
    pub attempts: u64,
    /// Attempts answered (by a person or a machine).
    pub answered: u64,
    /// Seconds connected, over every attempt.
    pub talk_secs: u64,
    /// Estimated cost in US dollars (Twilio per started minute plus the Voice Agent per minute).
    pub estimated_cost_usd: f64,
}

/// Something that happened in a campaign. The runner emits these; views show them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CampaignEvent {
    /// Leads are loaded and reconciled: the work ahead.
    Plan {
        campaign: String,
        /// Leads in the campaign (valid, distinct numbers).
        leads: u64,
        /// Already in a final state from earlier runs.
        finished: u64,
    },
    /// A CSV row that was not imported.
    BadRow { line: u64, reason: String },
    /// A number already seen on an earlier row: dialed once.
    Duplicate { line: u64, to: String, first_line: u64 },
    /// A lead that will not be dialed (do-not-call, no time zone).
    Skipped {
        lead: i64,
        to: String,
        status: LeadStatus,
        reason: String,
    },
    /// A call a crashed run left in flight, settled from Twilio's records.
    Reconciled {
        lead: i64,
        to: String,
        call_sid: Option<String>,
        status: LeadStatus,
    },
    /// An attempt starts.
    Dialing { lead: i64, to: String, attempt: u32 },
    /// An event of a live call.
    Call { lead: i64, call: CallEvent },
    /// An attempt is over: what it means for the lead.
    Finished {
        lead: i64,
        to: String,
        attempt: u32,
        status: LeadStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        disposition: Option<String>,
        /// When the lead will be tried again (only with `status: retry`).
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_at: Option<DateTime<Utc>>,
    },
    /// Nothing can be dialed before `until` (calling windows closed, retries waiting).
    Waiting { until: DateTime<Utc>, leads: u64 },
    /// The first Ctrl-C: no new dials, live calls finish.
    Draining { live: usize },
    /// The campaign stopped; `complete` is false when leads are left for a later run.
    Done { summary: Summary, complete: bool },
}

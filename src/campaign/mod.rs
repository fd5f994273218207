//! Campaigns: many calls from a CSV of leads, paced, retried, inside each callee's calling
//! window, honouring do-not-call lists, persisted so that a run killed at any moment resumes
//! without losing an outcome or dialing anyone twice.
//!
//! - [`leads`]: the leads CSV: phone column, time zone, variables, bad rows, duplicates.
//! - [`template`]: `{{variable}}` filling of the greeting and the prompt.
//! - [`dnc`]: do-not-call list files, read at dial time, appended to on opt-out.
//! - [`config`]: the campaign file (agent, dispositions, pacing, retries, window, DNC).
//! - [`window`]: calling windows in the callee's own time zone.
//! - [`store`]: the SQLite database of leads and attempts.
//! - [`runner`]: the loop that checks, paces, dials and records.
//! - [`pacing`], [`clock`], [`tools`], [`export`]: calls per second, the campaign's wall
//!   clock, the agent's campaign tools, the results folder.

pub mod clock;
pub mod config;
pub mod dnc;
pub mod export;
pub mod leads;
pub(crate) mod pacing;
pub mod runner;
pub mod store;
pub(crate) mod template;
pub(crate) mod tools;
pub mod window;

use crate::events::CallEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where a campaign's files are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub csv: PathBuf,
    pub campaign: PathBuf,
    pub db: PathBuf,
    pub out: PathBuf,
}

impl Paths {
    /// Defaults beside the CSV: `leads.toml`, `leads.db`, `leads-results/`. Simulated runs keep
    /// their own database and results (`leads.sim.db`, `leads-sim-results/`), so trying a
    /// campaign with `--simulate` never marks a real lead as called.
    pub fn beside(
        csv: &Path,
        campaign: Option<PathBuf>,
        db: Option<PathBuf>,
        out: Option<PathBuf>,
        simulated: bool,
    ) -> Self {
        let stem = csv
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "campaign".into());
        let dir = csv.parent().unwrap_or(Path::new(""));
        let (db_name, out_name) = if simulated {
            (format!("{stem}.sim.db"), format!("{stem}-sim-results"))
        } else {
            (format!("{stem}.db"), format!("{stem}-results"))
        };
        Paths {
            csv: csv.to_path_buf(),
            campaign: campaign.unwrap_or_else(|| csv.with_extension("toml")),
            db: db.unwrap_or_else(|| dir.join(db_name)),
            out: out.unwrap_or_else(|| dir.join(out_name)),
        }
    }
}

/// Why a campaign cannot start: every one is a problem with its files, reported before anything
/// is dialed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "campaign file {0} does not exist: write one (campaigns/demo.toml shows every key); it is the CSV's name with .toml unless --campaign names another"
    )]
    NoCampaignFile(PathBuf),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Leads(#[from] leads::LeadsError),
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    #[error(transparent)]
    Dnc(#[from] dnc::DncError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// A campaign ready to run: its file read, its leads imported, its list loaded.
pub struct Loaded {
    pub config: config::CampaignConfig,
    pub store: store::Store,
    pub dnc: dnc::DncList,
    /// Rows of the CSV that were not imported, and repeated numbers.
    pub bad_rows: Vec<leads::BadRow>,
    pub duplicates: Vec<leads::Duplicate>,
}

/// Read the campaign file and the CSV, check the templates against the CSV's columns, open the
/// database (taking its lock) and import the leads.
pub fn load(
    paths: &Paths,
    default_region: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Loaded, LoadError> {
    // The CSV first: a mistyped CSV name should be reported as that, not as a missing
    // campaign file named after it.
    let csv = leads::read(&paths.csv)?;
    if !paths.campaign.exists() {
        return Err(LoadError::NoCampaignFile(paths.campaign.clone()));
    }
    let config = config::CampaignConfig::load(&paths.campaign)?;
    let lead_file = leads::parse_with(
        &csv[..],
        &paths.csv.display().to_string(),
        default_region,
        &config.allow_prefixes,
    )?;
    drop(csv);
    template::check(&config.agent.greeting, &lead_file.columns, "agent.greeting")?;
    template::check(
        &config.agent.system_prompt,
        &lead_file.columns,
        "agent.system_prompt",
    )?;
    let dnc = dnc::DncList::load_in(&config.dnc, default_region, calls_north_america(&lead_file))?;
    let mut store = store::Store::open(&paths.db)?;
    store.import(&lead_file.leads, now)?;
    Ok(Loaded {
        config,
        store,
        dnc,
        bad_rows: lead_file.bad_rows,
        duplicates: lead_file.duplicates,
        // Bad lines stop the load now; the field stays for the command that prints them.
    })
}

/// Whether national-format do-not-call lines are also read as North American numbers: when the
/// campaign calls +1 numbers, since US lists are kept as `2025550113` or `(202) 555-0118`. A
/// line valid in `DEFAULT_REGION` as well is listed both ways: a number listed too many is the
/// safe mistake.
fn calls_north_america(lead_file: &leads::LeadFile) -> bool {
    lead_file
        .leads
        .iter()
        .any(|lead| lead.phone.as_str().starts_with("+1"))
}

/// The text of a file a campaign reads (leads, do-not-call list), or why it is not text: a
/// spreadsheet saved as UTF-16, a binary file or a legacy encoding would otherwise be read as
/// garbage, one warning per line, with its control bytes echoed to the terminal. A UTF-8 BOM
/// is dropped.
pub(crate) fn decode(bytes: &[u8]) -> Result<&str, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err("is UTF-16 text; save it as UTF-8 (in a spreadsheet: CSV UTF-8)".into());
    }
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(format!(
            "is not a text file (line {} has a NUL byte); save it as UTF-8 text",
            LineCounter::new(bytes).line_at(at)
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (line {} is in another encoding); save it as UTF-8",
            LineCounter::new(bytes).line_at(e.valid_up_to())
        )
    })
}

/// 1-based line numbers of byte offsets, asked in increasing order; `\r\n`, `\n` and a lone
/// `\r` (old Mac files) each end a line, as they end a CSV record.
pub(crate) struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            offset: 0,
            line: 1,
        }
    }

    pub(crate) fn line_at(&mut self, offset: usize) -> u64 {
        let offset = offset.min(self.bytes.len());
        for i in self.offset..offset {
            match self.bytes[i] {
                b'\n' => self.line += 1,
                b'\r' if self.bytes.get(i + 1) != Some(&b'\n') => self.line += 1,
                _ => {}
            }
        }
        self.offset = self.offset.max(offset);
        self.line
    }
}

/// The lines of a text with their 1-based numbers, ended as [`LineCounter`] ends them.
pub(crate) fn numbered_lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            Some(end) => {
                let skip = if text[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&text[end + skip..]);
                Some(&text[..end])
            }
            None => {
                rest = None;
                (!text.is_empty()).then_some(text)
            }
        }
    })
    .zip(1..)
    .map(|(line, n)| (n, line))
}

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
    /// Answered by a machine, no message left, and no more voicemail retries are left.
    Voicemail,
    /// Answered by a machine, and the voicemail message was left.
    VoicemailLeft,
    /// Handed to a person (`transfer_call`, or a disposition in `[transfer] on`).
    Transferred,
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
    pub const ALL: [LeadStatus; 13] = [
        Self::Pending,
        Self::Retry,
        Self::Live,
        Self::Completed,
        Self::Transferred,
        Self::VoicemailLeft,
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
            Self::VoicemailLeft => "voicemail-left",
            Self::Transferred => "transferred",
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
    Duplicate {
        line: u64,
        to: String,
        first_line: u64,
    },
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
    /// A do-not-call list that existed cannot be read (deleted, renamed, unreadable, a bad
    /// line): nothing is dialed until it can, and the leads wait.
    DialingPaused { file: String, reason: String },
    /// The list that paused dialing can be read again.
    DialingResumed { file: String },
    /// Twilio is in trouble (unreachable, 5xx): dialing pauses and tries again in this long.
    TwilioTrouble { reason: String, retry_in_secs: u64 },
    /// Twilio answers again: dialing goes on.
    TwilioBack,
    /// Nothing can be dialed before `until` (calling windows closed, retries waiting).
    Waiting { until: DateTime<Utc>, leads: u64 },
    /// The first Ctrl-C: no new dials, live calls finish.
    Draining { live: usize },
    /// The campaign stopped; `complete` is false when leads are left for a later run.
    Done { summary: Summary, complete: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_line_end_ends_one_line() {
        let text = "a\r\nb\rc\n\nd\r\re";
        let lines: Vec<(u64, &str)> = numbered_lines(text).collect();
        assert_eq!(
            lines,
            [
                (1, "a"),
                (2, "b"),
                (3, "c"),
                (4, ""),
                (5, "d"),
                (6, ""),
                (7, "e")
            ]
        );
        let mut counter = LineCounter::new(text.as_bytes());
        let starts: Vec<u64> = [0, 3, 5, 7, 8, 10, 11]
            .iter()
            .map(|&offset| counter.line_at(offset))
            .collect();
        assert_eq!(starts, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(numbered_lines("").count(), 0);
        assert_eq!(numbered_lines("x\n").count(), 1);
    }

    #[test]
    fn decode_accepts_utf8_only() {
        assert_eq!(decode(b"\xEF\xBB\xBFphone\n"), Ok("phone\n"));
        assert_eq!(decode(b""), Ok(""));
        assert!(decode(b"\xFF\xFEp\x00").unwrap_err().contains("UTF-16"));
        assert!(
            decode(b"a\rb\r\x00")
                .unwrap_err()
                .contains("line 3 has a NUL byte")
        );
        assert!(
            decode(b"a\r\nb\xE9")
                .unwrap_err()
                .contains("line 2 is in another encoding")
        );
    }
}

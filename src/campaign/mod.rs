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
pub mod pacing;
pub mod runner;
pub mod store;
pub mod template;
pub mod tools;
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
    pub dnc_warnings: Vec<dnc::DncWarning>,
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
    let lead_file = leads::load(&paths.csv, default_region)?;
    if !paths.campaign.exists() {
        return Err(LoadError::NoCampaignFile(paths.campaign.clone()));
    }
    let config = config::CampaignConfig::load(&paths.campaign)?;
    template::check(&config.agent.greeting, &lead_file.columns, "agent.greeting")?;
    template::check(
        &config.agent.system_prompt,
        &lead_file.columns,
        "agent.system_prompt",
    )?;
    let (dnc, dnc_warnings) = dnc::DncList::load(&config.dnc, default_region)?;
    let mut store = store::Store::open(&paths.db)?;
    store.import(&lead_file.leads, now)?;
    Ok(Loaded {
        config,
        store,
        dnc,
        bad_rows: lead_file.bad_rows,
        duplicates: lead_file.duplicates,
        dnc_warnings,
    })
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
    /// Nothing can be dialed before `until` (calling windows closed, retries waiting).
    Waiting { until: DateTime<Utc>, leads: u64 },
    /// The first Ctrl-C: no new dials, live calls finish.
    Draining { live: usize },
    /// The campaign stopped; `complete` is false when leads are left for a later run.
    Done { summary: Summary, complete: bool },
}

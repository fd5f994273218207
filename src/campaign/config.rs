//! The campaign file: TOML beside the leads CSV (`leads.csv` → `leads.toml`) holding the agent,
//! dispositions, pacing, retries, calling window, do-not-call lists, cost rates and the simulated
//! clock. Every key is optional; an unknown key or a bad value is an error naming the full key
//! and, when the file has it, its line.

use super::LeadStatus;
use super::window::{self, CallingWindow};
use crate::agent::config::{AgentConfig, AgentConfigError};
use crate::phone::{AllowList, escape_controls, printable};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Visitor};
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::{DeTable, DeValue};

pub const DEFAULT_DISPOSITIONS: [&str; 5] = [
    "confirmed",
    "reschedule",
    "not_interested",
    "wrong_number",
    "voicemail",
];

const DEFAULT_DNC: &str = "do-not-call.txt";
/// Most calls live at once: what one small machine was measured to carry with every frame on
/// time (BENCHMARKS.md, "Live calls on one machine"). More calls need more machines.
pub const MAX_CONCURRENCY: i64 = 1000;
/// Most call creations per second. Twilio accepts creations beyond an account's calls per
/// second (1 by default, up to 30 in the Console with an approved Business Profile) and queues
/// them, so a rate above the account's only fills Twilio's queue.
pub const MAX_CALLS_PER_SECOND: f64 = 1000.0;

/// Longest wait before a retry: a month is already past any sensible campaign, and a bound
/// keeps `now + delay` from overflowing the calendar.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 86400);

/// Whole words that tell a callee the voice is not a person's; "virtual assistant" counts too.
const DISCLOSURE_WORDS: [&str; 6] = [
    "automated",
    "automatic",
    "ai",
    "artificial",
    "recorded",
    "bot",
];

/// How often an attempt that ended one way is tried, and how long to wait before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in total, the first included: 1 means never retried.
    pub attempts: u32,
    pub delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub busy: Retry,
    pub no_answer: Retry,
    pub failed: Retry,
    /// A machine answered and no message was left.
    pub voicemail: Retry,
    /// A machine answered and the voicemail message was left.
    pub voicemail_left: Retry,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let retry = |attempts, minutes: u64| Retry {
            attempts,
            delay: Duration::from_secs(minutes * 60),
        };
        Self {
            busy: retry(3, 10),
            no_answer: retry(3, 60),
            failed: retry(2, 30),
            voicemail: retry(2, 4 * 60),
            // The message is the point of the call: leave it once.
            voicemail_left: retry(1, 24 * 60),
        }
    }
}

impl RetryPolicy {
    /// The rule for an attempt that ended in this status; None for statuses never retried.
    pub fn for_status(&self, status: LeadStatus) -> Option<&Retry> {
        match status {
            LeadStatus::Busy => Some(&self.busy),
            LeadStatus::NoAnswer => Some(&self.no_answer),
            LeadStatus::Failed => Some(&self.failed),
            LeadStatus::Voicemail => Some(&self.voicemail),
            LeadStatus::VoicemailLeft => Some(&self.voicemail_left),
            _ => None,
        }
    }
}

/// Prices for the summary's estimated cost, in US dollars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostRates {
    /// Twilio bills outbound calls per started minute.
    pub twilio_per_minute: f64,
    /// The Voice Agent API bills by the second ($4.50/hour).
    pub agent_per_minute: f64,
}

impl Default for CostRates {
    fn default() -> Self {
        Self {
            twilio_per_minute: 0.014,
            agent_per_minute: 0.075,
        }
    }
}

impl CostRates {
    /// Cost of one call that was connected for `secs` seconds.
    pub fn cost_of(&self, secs: u64) -> f64 {
        let started_minutes = secs.div_ceil(60) as f64;
        started_minutes * self.twilio_per_minute + secs as f64 / 60.0 * self.agent_per_minute
    }
}

/// A campaign's settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignConfig {
    pub name: String,
    pub agent: AgentConfig,
    pub dispositions: Vec<String>,
    pub concurrency: usize,
    pub calls_per_second: f64,
    pub ring_timeout: Duration,
    pub time_limit: Duration,
    /// Answering-machine detection.
    pub machine_detection: bool,
    /// For leads whose row names none; None means such leads are not dialed.
    pub timezone: Option<chrono_tz::Tz>,
    /// Do-not-call files, resolved against the campaign file's folder.
    pub dnc: Vec<PathBuf>,
    /// Prefixes of premium-rate, satellite and N11 numbers that may be dialed all the same.
    pub allow_prefixes: AllowList,
    pub allow_greeting_without_disclosure: bool,
    pub window: CallingWindow,
    pub retry: RetryPolicy,
    pub cost: CostRates,
    /// Where the simulated campaign clock starts (`--simulate` only).
    pub sim_clock_start: Option<DateTime<Utc>>,
    /// `[dtmf]`: keys the callee presses (an entry, like `1` or `#`) and the disposition each
    /// records.
    pub dtmf: Vec<(String, String)>,
    /// `[transfer] on`: dispositions that hand the call to a person (`agent.transfer_to`).
    pub transfer_on: Vec<String>,
}

/// Why a campaign file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read campaign file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("campaign file {} {reason}", .path.display())]
    NotText { path: PathBuf, reason: String },
    #[error("campaign file {}: {message}", location(.path, .line))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("campaign file {}: {key} {message}", location(.path, .line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        /// The full key, e.g. `campaign.concurrency`.
        key: String,
        message: String,
    },
}

/// A message on one line, with nothing taken from the file that a terminal would act on.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    escape_controls(&lines.join("; "))
}

fn location(path: &Path, line: &Option<usize>) -> String {
    match line {
        Some(line) => format!("{}, line {line}", path.display()),
        None => path.display().to_string(),
    }
}

impl CampaignConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = super::decode(&bytes).map_err(|reason| ConfigError::NotText {
            path: path.to_path_buf(),
            reason,
        })?;
        Self::parse(text, path)
    }

    /// Parse a campaign file's text; `path` names it in messages and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let line_at = |offset: usize| {
            text.as_bytes()[..offset.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        };
        let doc = DeTable::parse(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.span().map(|s| line_at(s.start)),
            message: one_line(e.message()),
        })?;
        let raw = RawFile::deserialize(toml::de::Deserializer::from(doc.clone())).map_err(|e| {
            let span = e.span();
            let key = span.as_ref().and_then(|s| key_at(doc.get_ref(), s.start));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line: span.map(|s| line_at(s.start)),
                message: one_line(&match key {
                    Some(key) => format!("{key}: {}", e.message()),
                    None => e.message().to_string(),
                }),
            }
        })?;
        raw.build(path)
            .map_err(|Invalid { key, message }| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: span_of(doc.get_ref(), &key).map(line_at),
                key: one_line(&key),
                message: one_line(&message),
            })
    }

    /// The settings of a campaign without a campaign file; do-not-call files resolve in
    /// `base_dir`.
    pub fn defaults(name: &str, agent: AgentConfig, base_dir: &Path) -> Self {
        Self {
            name: name.to_string(),
            agent,
            dispositions: DEFAULT_DISPOSITIONS.map(String::from).to_vec(),
            concurrency: 5,
            calls_per_second: 1.0,
            ring_timeout: Duration::from_secs(30),
            time_limit: Duration::from_secs(600),
            machine_detection: true,
            timezone: None,
            dnc: vec![base_dir.join(DEFAULT_DNC)],
            allow_prefixes: AllowList::default(),
            allow_greeting_without_disclosure: false,
            window: CallingWindow::default(),
            retry: RetryPolicy::default(),
            cost: CostRates::default(),
            sim_clock_start: None,
            dtmf: Vec::new(),
            transfer_on: Vec::new(),
        }
    }
}

/// A bad value, before it is placed in the file.
struct Invalid {
    key: String,
    message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The dotted key whose key or value covers byte `offset`, innermost first.
fn key_at(table: &DeTable<'_>, offset: usize) -> Option<String> {
    table.iter().find_map(|(k, v)| {
        if let DeValue::Table(inner) = v.get_ref()
            && let Some(sub) = key_at(inner, offset)
        {
            return Some(format!("{}.{sub}", k.get_ref()));
        }
        (k.span().contains(&offset) || v.span().contains(&offset)).then(|| k.get_ref().to_string())
    })
}

/// Where the dotted `key` is written in the file, if it is.
fn span_of(table: &DeTable<'_>, key: &str) -> Option<usize> {
    let (first, rest) = match key.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (key, None),
    };
    let (k, v) = table.get_key_value(first)?;
    match (rest, v.get_ref()) {
        (None, _) => Some(k.span().start),
        (Some(rest), DeValue::Table(inner)) => span_of(inner, rest),
        (Some(_), _) => None,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFile {
    agent: Option<AgentConfig>,
    campaign: RawCampaign,
    window: RawWindow,
    retry: RawRetryPolicy,
    cost: RawCost,
    simulation: RawSimulation,
    /// Keys (`"1"`) to dispositions.
    dtmf: std::collections::BTreeMap<String, String>,
    transfer: RawTransfer,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [transfer] table")]
struct RawTransfer {
    on: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [campaign] table")]
struct RawCampaign {
    name: Option<String>,
    concurrency: Option<i64>,
    calls_per_second: Option<f64>,
    ring_timeout: Option<Secs>,
    time_limit: Option<Secs>,
    amd: Option<bool>,
    timezone: Option<String>,
    dnc: Option<Vec<String>>,
    allow_prefixes: Option<Vec<String>>,
    dispositions: Option<Vec<String>>,
    allow_greeting_without_disclosure: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [window] table")]
struct RawWindow {
    hours: Option<String>,
    days: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [retry] table")]
struct RawRetryPolicy {
    busy: RawRetry,
    no_answer: RawRetry,
    failed: RawRetry,
    voicemail: RawRetry,
    voicemail_left: RawRetry,
}

#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a table like { attempts = 3, delay = \"10m\" }"
)]
struct RawRetry {
    attempts: Option<i64>,
    delay: Option<Secs>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [cost] table")]
struct RawCost {
    twilio_per_minute: Option<f64>,
    agent_per_minute: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [simulation] table")]
struct RawSimulation {
    /// A string, or a TOML date-time written bare.
    clock_start: Option<toml::Value>,
}

impl RawFile {
    /// Validate every key, over the defaults.
    fn build(self, path: &Path) -> Result<CampaignConfig, Invalid> {
        let c = self.campaign;
        let name = match c.name {
            Some(name) if name.trim().is_empty() => {
                return Err(invalid("campaign.name", "must not be empty"));
            }
            Some(name) => name,
            None => path.file_stem().map_or_else(
                || "campaign".to_string(),
                |s| s.to_string_lossy().into_owned(),
            ),
        };
        let agent = self.agent.unwrap_or_default();
        agent.validate().map_err(|e| match e {
            AgentConfigError::Invalid { key, message } => invalid(&format!("agent.{key}"), message),
            other => invalid("agent", other.to_string()),
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        let mut config = CampaignConfig::defaults(&name, agent, base_dir);

        if let Some(n) = c.concurrency {
            config.concurrency = within("campaign.concurrency", n, 1..=MAX_CONCURRENCY, "")
                .map_err(|e| {
                    if n > MAX_CONCURRENCY {
                        Invalid {
                            message: format!(
                                "{} (one machine carries about {MAX_CONCURRENCY} live calls; \
                                 split the leads between machines for more)",
                                e.message
                            ),
                            ..e
                        }
                    } else {
                        e
                    }
                })? as usize;
        }
        if let Some(rate) = c.calls_per_second {
            // Written so that NaN fails too.
            if !(rate > 0.0 && rate <= MAX_CALLS_PER_SECOND) {
                return Err(invalid(
                    "campaign.calls_per_second",
                    format!(
                        "must be more than 0 and at most {MAX_CALLS_PER_SECOND}, got {rate} \
                         (Twilio's account default is 1 call per second; above the account's \
                         rate Twilio queues the calls)"
                    ),
                ));
            }
            config.calls_per_second = rate;
        }
        if let Some(Secs(d)) = c.ring_timeout {
            within("campaign.ring_timeout", d.as_secs(), 15..=600, " seconds").map_err(|e| {
                Invalid {
                    message: format!(
                        "{} (shorter hangs up on people reaching for the phone)",
                        e.message
                    ),
                    ..e
                }
            })?;
            config.ring_timeout = d;
        }
        if let Some(Secs(d)) = c.time_limit {
            within("campaign.time_limit", d.as_secs(), 10..=14400, " seconds")?;
            config.time_limit = d;
        }
        if let Some(amd) = c.amd {
            config.machine_detection = amd;
        }
        if let Some(tz) = c.timezone {
            config.timezone = Some(tz.parse().map_err(|_| {
                invalid(
                    "campaign.timezone",
                    format!(
                        "must be an IANA time zone like \"America/New_York\", got \"{}\"",
                        printable(&tz)
                    ),
                )
            })?);
        }
        if let Some(files) = c.dnc {
            if files.is_empty() {
                return Err(invalid(
                    "campaign.dnc",
                    "must list at least one file (opt-outs are recorded in the first)",
                ));
            }
            if files.iter().any(|f| f.trim().is_empty()) {
                return Err(invalid("campaign.dnc", "has an empty path"));
            }
            config.dnc = files.iter().map(|f| base_dir.join(f)).collect();
        }
        if let Some(prefixes) = c.allow_prefixes {
            config.allow_prefixes =
                AllowList::new(&prefixes).map_err(|m| invalid("campaign.allow_prefixes", m))?;
        }
        if let Some(names) = c.dispositions {
            config.dispositions = check_dispositions(names)?;
        }
        if let Some(allow) = c.allow_greeting_without_disclosure {
            config.allow_greeting_without_disclosure = allow;
        }
        if !config.allow_greeting_without_disclosure
            && !discloses_automation(&config.agent.greeting)
        {
            return Err(invalid(
                "agent.greeting",
                "does not say the call is automated: callees must be told, and several \
                 jurisdictions require it. Add a word like \"automated\", \"AI\" or \"virtual \
                 assistant\", or set campaign.allow_greeting_without_disclosure = true",
            ));
        }

        if let Some(hours) = self.window.hours {
            (config.window.start, config.window.end) =
                window::parse_hours(&hours).map_err(|m| invalid("window.hours", m))?;
        }
        if let Some(days) = self.window.days {
            config.window.days =
                window::parse_days(&days).map_err(|m| invalid("window.days", m))?;
        }

        let r = self.retry;
        for (name, raw, rule) in [
            ("busy", r.busy, &mut config.retry.busy),
            ("no_answer", r.no_answer, &mut config.retry.no_answer),
            ("failed", r.failed, &mut config.retry.failed),
            ("voicemail", r.voicemail, &mut config.retry.voicemail),
            (
                "voicemail_left",
                r.voicemail_left,
                &mut config.retry.voicemail_left,
            ),
        ] {
            if let Some(n) = raw.attempts {
                rule.attempts = within(&format!("retry.{name}.attempts"), n, 1..=10, "")? as u32;
            }
            if let Some(Secs(delay)) = raw.delay {
                let key = format!("retry.{name}.delay");
                rule.delay = within_duration(&key, delay, Duration::ZERO..=MAX_RETRY_DELAY)?;
            }
        }

        for (key, raw, rate) in [
            (
                "cost.twilio_per_minute",
                self.cost.twilio_per_minute,
                &mut config.cost.twilio_per_minute,
            ),
            (
                "cost.agent_per_minute",
                self.cost.agent_per_minute,
                &mut config.cost.agent_per_minute,
            ),
        ] {
            if let Some(v) = raw {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(invalid(
                        key,
                        format!("must be a price in US dollars, 0 or more, got {v}"),
                    ));
                }
                *rate = v;
            }
        }

        for (keys, disposition) in self.dtmf {
            let key = format!("dtmf.\"{}\"", printable(&keys));
            let valid = !keys.is_empty()
                && keys.len() <= 32
                && keys
                    .chars()
                    .all(|c| matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'));
            if !valid {
                return Err(invalid(
                    &key,
                    "must be keys of a phone keypad (0-9, *, #, A-D), like \"1\"",
                ));
            }
            if !config.dispositions.contains(&disposition) {
                return Err(invalid(
                    &key,
                    format!(
                        "is \"{}\", which is not one of campaign.dispositions",
                        printable(&disposition)
                    ),
                ));
            }
            config.dtmf.push((keys, disposition));
        }
        if let Some(on) = self.transfer.on {
            if config.agent.transfer_to.is_none() && !on.is_empty() {
                return Err(invalid(
                    "transfer.on",
                    "needs agent.transfer_to: the number or sip: URI to transfer to",
                ));
            }
            for name in &on {
                if !config.dispositions.contains(name) {
                    return Err(invalid(
                        "transfer.on",
                        format!(
                            "has \"{}\", which is not one of campaign.dispositions",
                            printable(name)
                        ),
                    ));
                }
            }
            config.transfer_on = on;
        }

        if let Some(value) = self.simulation.clock_start {
            let text = match &value {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let start = DateTime::parse_from_rfc3339(&text).map_err(|_| {
                invalid(
                    "simulation.clock_start",
                    format!(
                        "must be an RFC 3339 time with an offset, like \"2026-12-01T19:55:00-05:00\", got {}",
                        printable(&value.to_string())
                    ),
                )
            })?;
            config.sim_clock_start = Some(start.with_timezone(&Utc));
        }
        Ok(config)
    }
}

/// `value` if inside `range`, else an error saying the range (`unit` follows the numbers).
fn within<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    range: RangeInclusive<T>,
    unit: &str,
) -> Result<T, Invalid> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            key,
            format!(
                "must be {}–{}{unit}, got {value}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// `value` if inside `range`, else an error giving the range and the value as durations.
fn within_duration(
    key: &str,
    value: Duration,
    range: RangeInclusive<Duration>,
) -> Result<Duration, Invalid> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            key,
            format!(
                "must be {} to {}, got {}",
                show_duration(*range.start()),
                show_duration(*range.end()),
                show_duration(value)
            ),
        ))
    }
}

/// A duration as the campaign file writes it: "0s", "90s", "1h30m", "30d".
fn show_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out += &format!("{}{unit}", secs / size);
            secs %= size;
        }
    }
    out
}

fn check_dispositions(names: Vec<String>) -> Result<Vec<String>, Invalid> {
    const KEY: &str = "campaign.dispositions";
    within(KEY, names.len(), 1..=30, " names")?;
    for (i, name) in names.iter().enumerate() {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(invalid(
                KEY,
                format!(
                    "has \"{}\": names are lowercase letters, digits and _, starting with a letter",
                    printable(name)
                ),
            ));
        }
        if names[..i].contains(name) {
            return Err(invalid(KEY, format!("has \"{}\" twice", printable(name))));
        }
    }
    Ok(names)
}

/// Whether a greeting tells the callee that the call is automated: a whole word like
/// "automated", "AI" or "bot", or "virtual assistant", in any case.
fn discloses_automation(greeting: &str) -> bool {
    let words: Vec<String> = greeting
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.iter().any(|w| DISCLOSURE_WORDS.contains(&w.as_str()))
        || words
            .windows(2)
            .any(|pair| pair == ["virtual", "assistant"])
}

/// A duration written as "90s", "10m", "2h", "1d", "1h30m", or a whole number of seconds.
struct Secs(Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecsVisitor;
        impl Visitor<'_> for SecsVisitor {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"90s\", \"10m\", \"1h30m\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                u64::try_from(v)
                    .map(|s| Secs(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("a duration cannot be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                Ok(Secs(Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secs, E> {
                parse_duration(v).map(Secs).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SecsVisitor)
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let shown = printable(text);
    let bad = || {
        format!(
            "\"{shown}\" is not a duration: write a whole number with a unit s, m, h or d, \
             like \"90s\", \"10m\" or \"1h30m\""
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut secs: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = match rest[digits..].chars().next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86400,
            _ => return Err(bad()),
        };
        secs = n
            .checked_mul(unit)
            .and_then(|s| secs.checked_add(s))
            .ok_or_else(|| format!("\"{shown}\" is too long a duration"))?;
        rest = rest[digits + 1..].trim_start();
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

    fn parse(text: &str) -> Result<CampaignConfig, ConfigError> {
        CampaignConfig::parse(text, Path::new("camp/leads.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// The error for a file that sets just `key = value` in `[table]`, checked to name the key.
    fn bad_value(table: &str, key: &str, value: &str) -> String {
        let e = err(&format!("[{table}]\n{key} = {value}\n"));
        assert!(e.contains(&format!("{table}.{key}")), "{e}");
        assert!(e.contains("line 2"), "{e}");
        e
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let cfg = parse("").unwrap();
        let defaults = CampaignConfig::defaults("leads", AgentConfig::default(), Path::new("camp"));
        assert_eq!(cfg, defaults);
        assert_eq!(cfg.name, "leads");
        assert_eq!(cfg.dnc, [PathBuf::from("camp/do-not-call.txt")]);
        assert_eq!(cfg.dispositions, DEFAULT_DISPOSITIONS);
        assert_eq!(cfg.concurrency, 5);
        assert_eq!(cfg.calls_per_second, 1.0);
        assert_eq!(cfg.ring_timeout, Duration::from_secs(30));
        assert_eq!(cfg.time_limit, Duration::from_secs(600));
        assert!(cfg.machine_detection);
        assert_eq!(cfg.timezone, None);
        assert!(!cfg.allow_greeting_without_disclosure);
        assert_eq!(cfg.window, CallingWindow::default());
        assert_eq!(
            cfg.retry.busy,
            Retry {
                attempts: 3,
                delay: Duration::from_secs(600)
            }
        );
        assert_eq!(
            cfg.retry.no_answer,
            Retry {
                attempts: 3,
                delay: Duration::from_secs(3600)
            }
        );
        assert_eq!(
            cfg.retry.failed,
            Retry {
                attempts: 2,
                delay: Duration::from_secs(1800)
            }
        );
        assert_eq!(
            cfg.retry.voicemail,
            Retry {
                attempts: 2,
                delay: Duration::from_secs(4 * 3600)
            }
        );
        assert_eq!(
            cfg.cost,
            CostRates {
                twilio_per_minute: 0.014,
                agent_per_minute: 0.075
            }
        );
        assert_eq!(cfg.sim_clock_start, None);
    }

    #[test]
    fn reads_every_key() {
        let cfg = parse(
            r#"
[agent]
greeting = "Hi {{first_name}}, this is an AI assistant from Dr. Lee's office."
voice = "jane"
[agent.turn_detection]
min_silence = 400
[campaign]
name = "Spring reminders"
concurrency = 20
calls_per_second = 2.5
ring_timeout = "45s"
time_limit = "1h"
amd = false
timezone = "America/Chicago"
dnc = ["lists/dnc.txt", "/srv/global-dnc.txt"]
dispositions = ["booked", "call_back_2"]
allow_greeting_without_disclosure = false
[window]
hours = "8:30 – 19:00"
days = ["mon-fri", "Saturday"]
[retry]
busy = { attempts = 5, delay = "5m" }
no_answer = { attempts = 1 }
failed = { delay = 0 }
voicemail = { attempts = 3, delay = "1d" }
[cost]
twilio_per_minute = 0.02
agent_per_minute = 0
[simulation]
clock_start = "2026-12-01T19:55:00-05:00"
"#,
        )
        .unwrap();
        assert_eq!(cfg.name, "Spring reminders");
        assert_eq!(cfg.agent.voice, "jane");
        assert_eq!(cfg.agent.turn_detection.min_silence, Some(400));
        assert_eq!(cfg.concurrency, 20);
        assert_eq!(cfg.calls_per_second, 2.5);
        assert_eq!(cfg.ring_timeout, Duration::from_secs(45));
        assert_eq!(cfg.time_limit, Duration::from_secs(3600));
        assert!(!cfg.machine_detection);
        assert_eq!(cfg.timezone, Some(chrono_tz::America::Chicago));
        assert_eq!(
            cfg.dnc,
            [
                PathBuf::from("camp/lists/dnc.txt"),
                PathBuf::from("/srv/global-dnc.txt")
            ]
        );
        assert_eq!(cfg.dispositions, ["booked", "call_back_2"]);
        assert_eq!(cfg.window.start, NaiveTime::from_hms_opt(8, 30, 0).unwrap());
        assert_eq!(cfg.window.end, NaiveTime::from_hms_opt(19, 0, 0).unwrap());
        assert_eq!(
            cfg.window.days,
            [true; 6].into_iter().chain([false]).collect::<Vec<_>>()[..]
        );
        assert_eq!(
            cfg.retry.busy,
            Retry {
                attempts: 5,
                delay: Duration::from_secs(300)
            }
        );
        // Keys left out keep their own defaults.
        assert_eq!(
            cfg.retry.no_answer,
            Retry {
                attempts: 1,
                delay: Duration::from_secs(3600)
            }
        );
        assert_eq!(
            cfg.retry.failed,
            Retry {
                attempts: 2,
                delay: Duration::ZERO
            }
        );
        assert_eq!(
            cfg.retry.voicemail,
            Retry {
                attempts: 3,
                delay: Duration::from_secs(86400)
            }
        );
        assert_eq!(
            cfg.cost,
            CostRates {
                twilio_per_minute: 0.02,
                agent_per_minute: 0.0
            }
        );
        assert_eq!(
            cfg.sim_clock_start,
            Some(
                DateTime::parse_from_rfc3339("2026-12-02T00:55:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
    }

    #[test]
    fn window_keys_alone_keep_the_other_default() {
        let cfg = parse("[window]\nhours = \"10:00-12:00\"\n").unwrap();
        assert_eq!(cfg.window.days, CallingWindow::default().days);
        let cfg = parse("[window]\ndays = [\"sun\"]\n").unwrap();
        assert_eq!(cfg.window.start, CallingWindow::default().start);
        assert_eq!(
            cfg.window.days,
            [false, false, false, false, false, false, true]
        );
    }

    #[test]
    fn campaign_keys_are_range_checked() {
        let e = bad_value("campaign", "concurrency", "0");
        assert_eq!(
            e,
            "campaign file camp/leads.toml, line 2: campaign.concurrency must be 1–1000, got 0"
        );
        let e = bad_value("campaign", "concurrency", "1001");
        assert_eq!(
            e,
            "campaign file camp/leads.toml, line 2: campaign.concurrency must be 1–1000, got 1001 \
             (one machine carries about 1000 live calls; split the leads between machines for more)"
        );
        bad_value("campaign", "concurrency", "-1");
        assert_eq!(
            parse("[campaign]\nconcurrency = 1000").unwrap().concurrency,
            1000
        );
        assert!(bad_value("campaign", "concurrency", "\"five\"").contains("invalid type"));

        for rate in ["0", "0.0", "-1", "1000.5", "nan", "inf"] {
            let e = bad_value("campaign", "calls_per_second", rate);
            assert!(e.contains("at most 1000"), "{e}");
        }
        assert_eq!(
            parse("[campaign]\ncalls_per_second = 1000")
                .unwrap()
                .calls_per_second,
            1000.0
        );
        assert_eq!(
            parse("[campaign]\ncalls_per_second = 0.2")
                .unwrap()
                .calls_per_second,
            0.2
        );

        let e = bad_value("campaign", "ring_timeout", "14");
        assert!(
            e.contains("15–600 seconds, got 14") && e.contains("reaching for the phone"),
            "{e}"
        );
        bad_value("campaign", "ring_timeout", "\"11m\"");
        assert!(parse("[campaign]\nring_timeout = \"10m\"").is_ok());
        assert!(parse("[campaign]\nring_timeout = 15").is_ok());

        bad_value("campaign", "time_limit", "9");
        bad_value("campaign", "time_limit", "\"4h1s\"");
        assert!(parse("[campaign]\ntime_limit = \"4h\"").is_ok());
        assert!(parse("[campaign]\ntime_limit = 10").is_ok());

        assert!(bad_value("campaign", "amd", "\"yes\"").contains("invalid type"));
        bad_value("campaign", "allow_greeting_without_disclosure", "1");

        let e = bad_value("campaign", "timezone", "\"America/NewYork\"");
        assert!(e.contains("America/New_York"), "{e}");
        bad_value("campaign", "timezone", "\"EST5\"");

        bad_value("campaign", "name", "\"  \"");
    }

    #[test]
    fn dnc_paths_resolve_beside_the_campaign_file() {
        let cfg = CampaignConfig::parse(
            "[campaign]\ndnc = [\"a.txt\", \"../shared/b.txt\", \"/abs/c.txt\"]\n",
            Path::new("/data/spring/leads.toml"),
        )
        .unwrap();
        assert_eq!(
            cfg.dnc,
            [
                PathBuf::from("/data/spring/a.txt"),
                PathBuf::from("/data/spring/../shared/b.txt"),
                PathBuf::from("/abs/c.txt"),
            ]
        );
        // A bare file name resolves in the current folder.
        let cfg = CampaignConfig::parse("", Path::new("leads.toml")).unwrap();
        assert_eq!(cfg.dnc, [PathBuf::from("do-not-call.txt")]);
        assert!(bad_value("campaign", "dnc", "[]").contains("at least one"));
        bad_value("campaign", "dnc", "[\"\"]");
        bad_value("campaign", "dnc", "\"dnc.txt\"");
    }

    #[test]
    fn dispositions_are_checked() {
        assert!(bad_value("campaign", "dispositions", "[]").contains("1–30 names, got 0"));
        let many: Vec<String> = (0..31).map(|i| format!("\"d{i}\"")).collect();
        bad_value("campaign", "dispositions", &format!("[{}]", many.join(",")));
        let thirty = format!("[campaign]\ndispositions = [{}]", many[..30].join(","));
        assert_eq!(parse(&thirty).unwrap().dispositions.len(), 30);
        for name in ["Confirmed", "2nd_try", "call-back", "", "_x", "café"] {
            let e = bad_value("campaign", "dispositions", &format!("[\"ok\", \"{name}\"]"));
            assert!(e.contains(&format!("\"{name}\"")), "{e}");
        }
        assert!(bad_value("campaign", "dispositions", "[\"a\", \"b\", \"a\"]").contains("twice"));
    }

    #[test]
    fn window_keys_are_checked() {
        assert!(bad_value("window", "hours", "\"20:00-09:00\"").contains("overnight"));
        bad_value("window", "hours", "\"9am-5pm\"");
        bad_value("window", "hours", "9");
        assert!(bad_value("window", "days", "[]").contains("at least one day"));
        assert!(bad_value("window", "days", "[\"mon\", \"funday\"]").contains("funday"));
    }

    #[test]
    fn retry_keys_are_checked() {
        for kind in ["busy", "no_answer", "failed", "voicemail"] {
            let e = err(&format!("[retry]\n{kind} = {{ attempts = 0 }}\n"));
            assert_eq!(
                e,
                format!(
                    "campaign file camp/leads.toml, line 2: retry.{kind}.attempts must be 1–10, got 0"
                )
            );
            let e = err(&format!("[retry.{kind}]\nattempts = 11\n"));
            assert!(e.contains(&format!("line 2: retry.{kind}.attempts")), "{e}");
            let e = err(&format!("[retry]\n{kind} = {{ delay = \"10x\" }}\n"));
            assert!(
                e.contains(&format!("line 2: retry.{kind}.delay")) && e.contains("\"10x\""),
                "{e}"
            );
        }
        assert!(err("[retry]\nbusy = { delay = -5 }").contains("negative"));
        assert!(err("[retry]\nbusy = { delay = 1.5 }").contains("a duration like"));
        let e = err("[retry]\nbusy = 3");
        assert!(
            e.contains("line 2: retry.busy: invalid type: integer `3`, expected a table like"),
            "{e}"
        );
        let e = err("campaign = 3");
        assert!(
            e.contains("line 1: campaign: invalid type: integer `3`, expected a [campaign] table"),
            "{e}"
        );
    }

    /// Once `999999999999h` passed and the first retry panicked adding it to the clock.
    #[test]
    fn every_duration_is_bounded() {
        for kind in ["busy", "no_answer", "failed", "voicemail"] {
            let e = err(&format!(
                "[retry]\n\n{kind} = {{ attempts = 2, delay = \"999999999999h\" }}\n"
            ));
            assert_eq!(
                e,
                format!(
                    "campaign file camp/leads.toml, line 3: retry.{kind}.delay must be 0s to 30d, got 41666666666d15h"
                )
            );
            let e = err(&format!("[retry.{kind}]\ndelay = 2592001\n"));
            assert!(
                e.contains(&format!(
                    "line 2: retry.{kind}.delay must be 0s to 30d, got 30d1s"
                )),
                "{e}"
            );
            let cfg = parse(&format!("[retry]\n{kind} = {{ delay = \"30d\" }}\n")).unwrap();
            let rule = cfg.retry.for_status(match kind {
                "busy" => LeadStatus::Busy,
                "no_answer" => LeadStatus::NoAnswer,
                "failed" => LeadStatus::Failed,
                _ => LeadStatus::Voicemail,
            });
            assert_eq!(rule.unwrap().delay, MAX_RETRY_DELAY);
        }
        // The longest delay still fits the calendar from any date a campaign may run.
        let far = DateTime::parse_from_rfc3339("9999-01-01T00:00:00Z").unwrap();
        assert!(
            far.checked_add_signed(chrono::Duration::from_std(MAX_RETRY_DELAY).unwrap())
                .is_some()
        );
        // The others were bounded already; huge values are refused as out of range, not taken.
        let e = bad_value("campaign", "ring_timeout", "\"999999999999h\"");
        assert!(e.contains("15–600 seconds"), "{e}");
        let e = bad_value("campaign", "time_limit", "18446744073709551615");
        assert!(
            e.contains("10–14400 seconds") || e.contains("invalid"),
            "{e}"
        );
        let e = bad_value("campaign", "time_limit", "\"99999999999999999999d\"");
        assert!(
            e.contains("is not a duration") || e.contains("too long"),
            "{e}"
        );
    }

    #[test]
    fn allow_prefixes_are_checked() {
        let cfg = parse("[campaign]\nallow_prefixes = [\"+1 900\", \"+44\"]\n").unwrap();
        assert_eq!(cfg.allow_prefixes.prefixes(), ["+1900", "+44"]);
        assert_eq!(parse("").unwrap().allow_prefixes, AllowList::default());
        let e = bad_value("campaign", "allow_prefixes", "[\"1900\"]");
        assert!(e.contains("'1900' is not a number prefix"), "{e}");
        bad_value("campaign", "allow_prefixes", "\"+1900\"");
    }

    #[test]
    fn messages_are_one_line_without_control_characters() {
        for text in [
            "[campaign]\ntimezone = \"\\u001b[2JAmerica/Nowhere\"\n",
            "[campaign]\ndispositions = [\"ok\", \"\\u0007bell\"]\n",
            "[retry]\nbusy = { delay = \"\\u001b[31m10m\" }\n",
            "[campaign]\nname = \"a\nb\"\n",
            "[campaign]\n\"\\u001b[2J\" = 1\n",
            "[campaign\u{1b}]\n",
            "[campaign]\nname = \"\u{0}\"\n",
            "[campaign]\ntimezone = \"\u{202e}kroY_weN/aciremA\"\n",
        ] {
            let e = err(text);
            assert!(!e.contains('\n'), "{e:?}");
            assert!(
                !e.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{e:?}"
            );
        }
        let e = err(&format!(
            "[campaign]\ntimezone = \"{}\"\n",
            "x".repeat(100_000)
        ));
        assert!(e.len() < 300, "{}", e.len());
    }

    #[test]
    fn a_file_that_is_not_utf8_text_is_one_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leads.toml");
        let utf16: Vec<u8> = "\u{feff}[campaign]\nconcurrency = 2\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        std::fs::write(&path, utf16).unwrap();
        let e = CampaignConfig::load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "campaign file {} is UTF-16 text; save it as UTF-8 (in a spreadsheet: CSV UTF-8)",
                path.display()
            )
        );
        std::fs::write(&path, b"[campaign]\nname = \"caf\xE9\"\n").unwrap();
        let e = CampaignConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("is not UTF-8 text (line 2"), "{e}");
        std::fs::write(&path, b"\xEF\xBB\xBF[campaign]\nconcurrency = 2\n").unwrap();
        assert_eq!(CampaignConfig::load(&path).unwrap().concurrency, 2);
    }

    /// Whatever the text, parsing ends in settings or a one-line printable error naming the
    /// file; nothing panics.
    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        const PIECES: [&str; 34] = [
            "[campaign]\n",
            "[retry]\n",
            "[window]\n",
            "[agent]\n",
            "[cost]\n",
            "[simulation]\n",
            "[retry.busy]\n",
            "concurrency = ",
            "delay = ",
            "attempts = ",
            "hours = ",
            "ring_timeout = ",
            "time_limit = ",
            "timezone = ",
            "dnc = ",
            "allow_prefixes = ",
            "clock_start = ",
            "calls_per_second = ",
            "busy = { delay = ",
            "}",
            "\"",
            "[",
            "]",
            "\n",
            "=",
            "99999999999999999999",
            "-1",
            "1e308",
            "nan",
            "\"999999999999h\"",
            "\"10m\"",
            "\u{1b}",
            "\"\\u0000\"",
            "2026-12-01T19:55:00Z",
        ];
        for _ in 0..3000 {
            let text: String = (0..rng.random_range(0..25))
                .map(|_| {
                    if rng.random_bool(0.1) {
                        char::from_u32(rng.random_range(0..0x3000))
                            .unwrap_or('?')
                            .to_string()
                    } else {
                        PIECES[rng.random_range(0..PIECES.len())].to_string()
                    }
                })
                .collect();
            match parse(&text) {
                Ok(cfg) => {
                    for retry in [
                        cfg.retry.busy,
                        cfg.retry.no_answer,
                        cfg.retry.failed,
                        cfg.retry.voicemail,
                    ] {
                        assert!(retry.delay <= MAX_RETRY_DELAY);
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.starts_with("campaign file camp/leads.toml"), "{e:?}");
                    assert!(!e.chars().any(char::is_control), "{e:?}");
                }
            }
        }
    }

    #[test]
    fn durations() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("10m"), Ok(600));
        assert_eq!(secs("2h"), Ok(7200));
        assert_eq!(secs("1d"), Ok(86400));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs(" 1h 30m 5s "), Ok(5405));
        assert_eq!(secs("0s"), Ok(0));
        for bad in ["", "10", "10x", "h", "1.5h", "-5m", "1h30", "10M", "1 h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(
            parse_duration("999999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
        let cfg = parse("[retry]\nbusy = { delay = 45 }").unwrap();
        assert_eq!(cfg.retry.busy.delay, Duration::from_secs(45));
    }

    #[test]
    fn cost_keys_and_cost_of_a_call() {
        bad_value("cost", "twilio_per_minute", "-0.01");
        bad_value("cost", "agent_per_minute", "nan");
        bad_value("cost", "agent_per_minute", "\"cheap\"");
        let rates = CostRates {
            twilio_per_minute: 0.014,
            agent_per_minute: 0.075,
        };
        assert_eq!(rates.cost_of(0), 0.0);
        // One second: a whole Twilio minute, a sixtieth of an agent minute.
        assert!((rates.cost_of(1) - (0.014 + 0.075 / 60.0)).abs() < 1e-12);
        assert!((rates.cost_of(60) - (0.014 + 0.075)).abs() < 1e-12);
        assert!((rates.cost_of(61) - (2.0 * 0.014 + 0.075 * 61.0 / 60.0)).abs() < 1e-12);
        assert!((rates.cost_of(3600) - (60.0 * 0.014 + 4.5)).abs() < 1e-9);
    }

    #[test]
    fn simulation_clock_start() {
        let bare = parse("[simulation]\nclock_start = 2026-12-01T19:55:00-05:00\n").unwrap();
        let quoted = parse("[simulation]\nclock_start = \"2026-12-01T19:55:00-05:00\"\n").unwrap();
        assert_eq!(bare.sim_clock_start, quoted.sim_clock_start);
        assert!(bare.sim_clock_start.is_some());
        assert!(
            bad_value("simulation", "clock_start", "\"2026-12-01 19:55\"").contains("RFC 3339")
        );
        bad_value("simulation", "clock_start", "2026-12-01T19:55:00");
        bad_value("simulation", "clock_start", "5");
    }

    #[test]
    fn unknown_keys_are_named_in_every_table() {
        for (text, key, line) in [
            ("title = \"x\"\n", "title", 1),
            ("[agent]\nvoise = \"jane\"\n", "agent.voise", 2),
            (
                "[agent.turn_detection]\nmin_silense = 1\n",
                "agent.turn_detection.min_silense",
                2,
            ),
            (
                "[campaign]\nname = \"x\"\nconcurency = 5\n",
                "campaign.concurency",
                3,
            ),
            ("[window]\nhour = \"09:00-17:00\"\n", "window.hour", 2),
            ("[retry]\nbusyy = { attempts = 2 }\n", "retry.busyy", 2),
            ("[retry]\nbusy = { attempt = 2 }\n", "retry.busy.attempt", 2),
            ("[cost]\ntwilio = 0.01\n", "cost.twilio", 2),
            ("[simulation]\nclock = 1\n", "simulation.clock", 2),
        ] {
            let e = err(text);
            assert!(
                e.contains(&format!("line {line}: {key}: unknown field")),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = parse("[campaign]\nname = \"x\"\n\nconcurrency = = 5\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { line: Some(4), .. }), "{e}");
        let e = parse("[campaign]\nname = \"x\"\n[campaign]\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { line: Some(3), .. }), "{e}");
    }

    #[test]
    fn agent_checks_still_apply() {
        let e = err("[agent]\n\n[agent.turn_detection]\nvad_threshold = 1.5\n");
        assert!(
            e.contains("line 4: agent.turn_detection.vad_threshold"),
            "{e}"
        );
        let e = err("[agent]\nvoice = \" \"\n");
        assert!(e.contains("line 2: agent.voice must name a voice"), "{e}");
        let e = err("[agent]\ngreeting = \"\"\n");
        assert!(e.contains("agent.greeting must not be empty"), "{e}");
    }

    #[test]
    fn greeting_must_disclose_automation() {
        let e = err("[agent]\ngreeting = \"Hi, this is Sam from Dr. Lee's office.\"\n");
        assert!(
            e.starts_with("campaign file camp/leads.toml, line 2: agent.greeting does not say")
                && e.contains("jurisdictions")
                && e.contains("allow_greeting_without_disclosure = true"),
            "{e}"
        );
        let allowed = "[agent]\ngreeting = \"Hi, this is Sam.\"\n[campaign]\nallow_greeting_without_disclosure = true\n";
        assert!(parse(allowed).is_ok());
        for good in [
            "This is an AUTOMATED call",
            "Automatic reminder: hello",
            "I'm an AI assistant",
            "an artificial voice",
            "Hi, your virtual  assistant here",
            "This is a recorded message",
            "I am a bot.",
        ] {
            assert!(discloses_automation(good), "{good}");
        }
        for bad in [
            "Hi, I maintain your account",
            "a bottle of wine",
            "virtual tour",
            "robotic",
            "",
        ] {
            assert!(!discloses_automation(bad), "{bad}");
        }
    }

    #[test]
    fn retry_rules_by_status() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.for_status(LeadStatus::Busy), Some(&policy.busy));
        assert_eq!(
            policy.for_status(LeadStatus::NoAnswer),
            Some(&policy.no_answer)
        );
        assert_eq!(policy.for_status(LeadStatus::Failed), Some(&policy.failed));
        assert_eq!(
            policy.for_status(LeadStatus::Voicemail),
            Some(&policy.voicemail)
        );
        for status in [
            LeadStatus::Completed,
            LeadStatus::OptedOut,
            LeadStatus::Pending,
        ] {
            assert_eq!(policy.for_status(status), None);
        }
    }

    #[test]
    fn load_reads_the_file_and_names_it_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spring.toml");
        std::fs::write(&path, "[campaign]\nconcurrency = 7\n").unwrap();
        let cfg = CampaignConfig::load(&path).unwrap();
        assert_eq!((cfg.name.as_str(), cfg.concurrency), ("spring", 7));
        assert_eq!(cfg.dnc, [dir.path().join("do-not-call.txt")]);
        let missing = dir.path().join("nope.toml");
        let e = CampaignConfig::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("nope.toml"), "{e}");
    }
}

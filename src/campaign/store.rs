//! The campaign's durable state, in an embedded SQLite database: every lead and every attempt.
//!
//! What makes a campaign safe to kill at any moment lives here. An attempt is written (and the
//! lead marked live) in one committed transaction *before* the call is created, so a run that
//! dies mid-call leaves a record that the next run reconciles with Twilio instead of dialing
//! again; an outcome is committed the moment it is known. WAL with `synchronous=FULL` makes
//! each commit survive a crash, and an exclusive lock keeps a second process off the same
//! campaign, so no lead is ever dialed by two runs at once. A call's lines are saved as they
//! are spoken, so a call settled after a crash keeps what was said.
//!
//! [`Store`] is the connection and its queries; each write is atomic (a savepoint) and, on its
//! own, its own transaction. A running campaign reaches it only through [`StoreHandle`], which
//! moves it to a thread of its own and commits its writes in groups: durable ones (an
//! attempt's start, call SID, end) before their caller goes on, lazy ones (deferrals, skips,
//! transcript lines) within [`LAZY_COMMIT`]. See [`thread`] for exactly what each batch holds.

use super::LeadStatus;
use super::leads::Lead;
use crate::events::{Outcome, TranscriptLine, TwilioRecording};
use crate::twilio::AnsweredBy;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

pub mod thread;
pub use thread::{LAZY_COMMIT, StoreHandle};

/// Raised only for a change an older dialer would misread. The `lines` table and the
/// `leads_waiting` index are not one: an older dialer ignores the first (a crashed call it
/// settles just has no transcript) and recreates its own index beside the second. Nor are
/// [`ADDED_ATTEMPT_COLUMNS`]: an older dialer names the columns it reads and writes, and
/// leaves these empty.
const SCHEMA_VERSION: i64 = 1;

/// Columns added to `attempts` after its first version, for recordings and latency; a
/// database made before them gets them when opened.
const ADDED_ATTEMPT_COLUMNS: [(&str, &str); 7] = [
    ("recording_sid", "TEXT"),
    ("recording_status", "TEXT"),
    ("recording_url", "TEXT"),
    ("recording_duration_secs", "INTEGER"),
    ("local_recording", "TEXT"),
    ("agent_setup_ms", "INTEGER"),
    // A JSON array of milliseconds, one per reply.
    ("reply_latencies", "TEXT"),
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leads (
    id INTEGER PRIMARY KEY,
    phone TEXT NOT NULL UNIQUE,
    line INTEGER NOT NULL,
    timezone TEXT,
    vars TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER,
    disposition TEXT,
    notes TEXT,
    reason TEXT,
    talk_secs INTEGER NOT NULL DEFAULT 0,
    last_call_sid TEXT,
    updated_at INTEGER NOT NULL
);
-- The due query's order, over waiting leads only: it reads the first rows of this index and
-- stops (a lead never deferred has no next_at and comes first, as it sorts first in SQLite).
-- Partial, so that settling a lead takes it out and the index stays as small as the work left.
DROP INDEX IF EXISTS leads_due;
CREATE INDEX IF NOT EXISTS leads_waiting ON leads (ifnull(next_at, 0), id)
    WHERE status IN ('pending', 'retry');
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    lead_id INTEGER NOT NULL REFERENCES leads (id),
    number INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    call_sid TEXT,
    in_flight INTEGER NOT NULL DEFAULT 1,
    status TEXT,
    answered_by TEXT,
    duration_secs INTEGER,
    ended_by TEXT,
    reason TEXT,
    error_code TEXT,
    error_message TEXT,
    disposition TEXT,
    notes TEXT,
    opted_out INTEGER NOT NULL DEFAULT 0,
    transcript TEXT,
    ended_at INTEGER,
    UNIQUE (lead_id, number)
);
CREATE INDEX IF NOT EXISTS attempts_in_flight ON attempts (in_flight) WHERE in_flight = 1;
-- A call's transcript as it is spoken, one row a line, until the attempt is finished and its
-- transcript is in `attempts.transcript`.
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY,
    attempt_id INTEGER NOT NULL REFERENCES attempts (id),
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_attempt ON lines (attempt_id, id);
";

/// What went wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "campaign database {path} is in use by another dialer process; wait for it to finish or stop it first"
    )]
    Locked { path: PathBuf },
    #[error(
        "campaign database {path} was written by a newer dialer (schema {found}); upgrade dialer"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("campaign database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("campaign database: {0}")]
    Data(String),
    /// A batch of writes could not be committed: none of them is saved.
    #[error("campaign database: cannot save: {0}")]
    Commit(String),
    /// The database's thread is gone (it panicked): nothing more can be read or saved.
    #[error("campaign database: its thread stopped")]
    Stopped,
}

/// A lead as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadRow {
    pub id: i64,
    pub phone: String,
    pub line: u64,
    pub timezone: Option<String>,
    pub vars: Vec<(String, String)>,
    pub status: LeadStatus,
    pub attempts: u32,
    pub next_at: Option<DateTime<Utc>>,
    pub disposition: Option<String>,
    pub notes: Option<String>,
    pub reason: Option<String>,
    pub talk_secs: u64,
    pub last_call_sid: Option<String>,
}

/// An attempt a run started and did not see end.
#[derive(Debug, Clone, PartialEq)]
pub struct InFlight {
    pub attempt_id: i64,
    pub lead_id: i64,
    pub phone: String,
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub call_sid: Option<String>,
}

/// One finished attempt, for the transcript files.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub lead_id: i64,
    pub phone: String,
    pub number: u32,
    pub call_sid: Option<String>,
    pub transcript: Vec<TranscriptLine>,
}

/// What an attempt's end means for its lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub status: LeadStatus,
    /// When to try again (with `LeadStatus::Retry`).
    pub next_at: Option<DateTime<Utc>>,
    pub reason: String,
}

/// Counts over the whole campaign, for the summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub statuses: Vec<(LeadStatus, u64)>,
    pub dispositions: Vec<(String, u64)>,
    pub attempts: u64,
    pub answered: u64,
    /// Connected seconds of each attempt that has a duration.
    pub durations: Vec<u64>,
    /// Every reply's latency over every attempt, ms.
    pub reply_latencies: Vec<u32>,
    /// Every attempt's agent setup time, ms.
    pub agent_setups: Vec<u32>,
}

pub struct Store {
    conn: Connection,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

fn status_of(s: &str) -> rusqlite::Result<LeadStatus> {
    LeadStatus::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown lead status '{s}'").into(),
        )
    })
}

const LEAD_COLUMNS: &str = "id, phone, line, timezone, vars, status, attempts, next_at, disposition, notes, reason, talk_secs, last_call_sid";

fn lead_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeadRow> {
    let vars: String = r.get(4)?;
    Ok(LeadRow {
        id: r.get(0)?,
        phone: r.get(1)?,
        line: r.get::<_, i64>(2)? as u64,
        timezone: r.get(3)?,
        vars: serde_json::from_str(&vars).unwrap_or_default(),
        status: status_of(&r.get::<_, String>(5)?)?,
        attempts: r.get::<_, i64>(6)? as u32,
        next_at: r.get::<_, Option<i64>>(7)?.map(from_ms),
        disposition: r.get(8)?,
        notes: r.get(9)?,
        reason: r.get(10)?,
        talk_secs: r.get::<_, i64>(11)? as u64,
        last_call_sid: r.get(12)?,
    })
}

/// Give `attempts` the columns added since the database was made.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('attempts')")?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for (name, kind) in ADDED_ATTEMPT_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE attempts ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

/// What `results.csv` says about a call's recordings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingRow {
    pub sid: Option<String>,
    pub status: Option<String>,
    pub url: Option<String>,
    pub duration_secs: Option<u64>,
    pub local: Option<String>,
}

/// Waiting leads due by `?1`, earliest first, at most `?2`.
fn due_query() -> String {
    format!(
        "SELECT {LEAD_COLUMNS} FROM leads WHERE status IN ('pending', 'retry')
         AND ifnull(next_at, 0) <= ?1 ORDER BY ifnull(next_at, 0), id LIMIT ?2"
    )
}

impl Store {
    /// Open (or create) the database and take the campaign's lock for as long as this lives.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Data(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)?;
        // Exclusive locking mode holds the lock from the first write until the connection
        // closes: a second dialer on the same campaign fails here instead of double-dialing.
        conn.busy_timeout(std::time::Duration::from_millis(200))?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        let locked = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            }
            _ => StoreError::Sql(e),
        };
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(locked)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
            .map_err(locked)?;
        conn.execute_batch(SCHEMA)?;
        add_missing_columns(&conn)?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version.and_then(|v| v.parse::<i64>().ok()) {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::TooNew {
                    path: path.to_path_buf(),
                    found: v,
                });
            }
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
        }
        Ok(Store { conn })
    }

    /// Add leads not seen before; refresh the row data of leads that are not yet final (the
    /// CSV may have been corrected between runs). Returns how many were new.
    pub fn import(&mut self, leads: &[Lead], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let tx = self.conn.savepoint()?;
        let mut added = 0;
        {
            let mut insert = tx.prepare(
                "INSERT INTO leads (phone, line, timezone, vars, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (phone) DO UPDATE SET line = excluded.line, timezone = excluded.timezone,
                   vars = excluded.vars
                 WHERE leads.status IN ('pending', 'retry')",
            )?;
            let mut known = tx.prepare("SELECT 1 FROM leads WHERE phone = ?1")?;
            for lead in leads {
                let existed = known.exists([lead.phone.as_str()])?;
                let vars = serde_json::to_string(&lead.vars)
                    .map_err(|e| StoreError::Data(e.to_string()))?;
                let tz = lead.timezone.map(|t| t.name().to_string());
                insert.execute(params![
                    lead.phone.as_str(),
                    lead.line as i64,
                    tz,
                    vars,
                    ms(now)
                ])?;
                if !existed {
                    added += 1;
                }
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// Every lead's count, and how many are final.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let total: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM leads", [], |r| r.get(0))?;
        let open: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM leads WHERE status IN ('pending', 'retry', 'live')",
            [],
            |r| r.get(0),
        )?;
        Ok((total as u64, (total - open) as u64))
    }

    /// Attempts started and never seen to end (a run died during them).
    pub fn in_flight(&self) -> Result<Vec<InFlight>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT a.id, a.lead_id, l.phone, a.number, a.started_at, a.call_sid
             FROM attempts a JOIN leads l ON l.id = a.lead_id WHERE a.in_flight = 1 ORDER BY a.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(InFlight {
                attempt_id: r.get(0)?,
                lead_id: r.get(1)?,
                phone: r.get(2)?,
                number: r.get::<_, i64>(3)? as u32,
                started_at: from_ms(r.get(4)?),
                call_sid: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` leads that may be dialed at `now`, earliest first, skipping `exclude`.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        exclude: &[i64],
    ) -> Result<Vec<LeadRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&due_query())?;
        let rows = stmt.query_map(params![ms(now), (limit + exclude.len()) as i64], lead_row)?;
        let mut out = Vec::with_capacity(limit);
        for row in rows {
            let row = row?;
            if !exclude.contains(&row.id) {
                out.push(row);
            }
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// The earliest time a waiting lead may be dialed, and how many wait.
    pub fn next_due(&self) -> Result<Option<(DateTime<Utc>, u64)>, StoreError> {
        let (at, n): (Option<i64>, i64) = self.conn.query_row(
            "SELECT MIN(ifnull(next_at, 0)), COUNT(*) FROM leads WHERE status IN ('pending', 'retry')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(at.map(|at| (from_ms(at), n as u64)))
    }

    pub fn lead(&self, id: i64) -> Result<LeadRow, StoreError> {
        Ok(self.conn.query_row(
            &format!("SELECT {LEAD_COLUMNS} FROM leads WHERE id = ?1"),
            [id],
            lead_row,
        )?)
    }

    /// Every lead, in file order.
    pub fn leads(&self) -> Result<Vec<LeadRow>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {LEAD_COLUMNS} FROM leads ORDER BY line, id"
        ))?;
        let rows = stmt.query_map([], lead_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Not before `until` (its calling window is closed now).
    pub fn defer(&mut self, lead: i64, until: DateTime<Utc>) -> Result<(), StoreError> {
        // Cached: a closed window defers every lead in turn.
        self.conn
            .prepare_cached(
                "UPDATE leads SET next_at = ?2 WHERE id = ?1 AND status IN ('pending', 'retry')",
            )?
            .execute(params![lead, ms(until)])?;
        Ok(())
    }

    /// Settle a lead without a call (do-not-call, no time zone).
    pub fn skip(
        &mut self,
        lead: i64,
        status: LeadStatus,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        debug_assert!(status.is_final());
        self.conn
            .prepare_cached(
                "UPDATE leads SET status = ?2, reason = ?3, next_at = NULL, updated_at = ?4
                 WHERE id = ?1 AND status IN ('pending', 'retry')",
            )?
            .execute(params![lead, status.as_str(), reason, ms(now)])?;
        Ok(())
    }

    /// Record, durably, that a call to this lead is about to be placed. Fails if the lead is
    /// not waiting to be dialed (already live or final), so it cannot be dialed twice.
    pub fn begin_attempt(
        &mut self,
        lead: i64,
        now: DateTime<Utc>,
    ) -> Result<(i64, u32), StoreError> {
        let tx = self.conn.savepoint()?;
        let changed = tx.execute(
            "UPDATE leads SET status = 'live', attempts = attempts + 1, updated_at = ?2
             WHERE id = ?1 AND status IN ('pending', 'retry')",
            params![lead, ms(now)],
        )?;
        if changed != 1 {
            return Err(StoreError::Data(format!(
                "lead {lead} is not waiting to be dialed"
            )));
        }
        let number: i64 =
            tx.query_row("SELECT attempts FROM leads WHERE id = ?1", [lead], |r| {
                r.get(0)
            })?;
        tx.execute(
            "INSERT INTO attempts (lead_id, number, started_at) VALUES (?1, ?2, ?3)",
            params![lead, number, ms(now)],
        )?;
        let attempt = tx.last_insert_rowid();
        tx.commit()?;
        Ok((attempt, number as u32))
    }

    /// The call exists at Twilio: remember its SID at once, for reconciliation.
    pub fn set_call_sid(&mut self, attempt: i64, sid: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE attempts SET call_sid = ?2 WHERE id = ?1",
            params![attempt, sid],
        )?;
        Ok(())
    }

    /// The attempt never reached Twilio (the create request was refused for a reason that
    /// concerns the whole campaign, or Twilio has no record of it): forget it, and put the
    /// lead back as it was.
    pub fn void_attempt(&mut self, attempt: i64) -> Result<(), StoreError> {
        let tx = self.conn.savepoint()?;
        let lead: i64 = tx.query_row(
            "SELECT lead_id FROM attempts WHERE id = ?1 AND in_flight = 1",
            [attempt],
            |r| r.get(0),
        )?;
        tx.execute("DELETE FROM lines WHERE attempt_id = ?1", [attempt])?;
        tx.execute("DELETE FROM attempts WHERE id = ?1", [attempt])?;
        tx.execute(
            "UPDATE leads SET attempts = attempts - 1,
               status = CASE WHEN attempts - 1 = 0 THEN 'pending' ELSE 'retry' END
             WHERE id = ?1 AND status = 'live'",
            [lead],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A line of an attempt's conversation, as it is spoken: kept if the run dies before the
    /// call ends.
    pub fn add_line(&mut self, attempt: i64, line: &TranscriptLine) -> Result<(), StoreError> {
        let text = serde_json::to_string(line).map_err(|e| StoreError::Data(e.to_string()))?;
        self.conn
            .prepare_cached("INSERT INTO lines (attempt_id, line) VALUES (?1, ?2)")?
            .execute(params![attempt, text])?;
        Ok(())
    }

    /// The lines saved so far of an attempt not yet finished, in the order they were spoken.
    pub fn lines(&self, attempt: i64) -> Result<Vec<TranscriptLine>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT line FROM lines WHERE attempt_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([attempt], |r| r.get::<_, String>(0))?;
        rows.map(|text| {
            serde_json::from_str(&text?).map_err(|e| StoreError::Data(format!("a saved line: {e}")))
        })
        .collect()
    }

    /// Record how an attempt ended and what that means for its lead, in one transaction. The
    /// transcript is the outcome's; an outcome without one (a call settled from Twilio's
    /// records after a crash) keeps the lines saved as they were spoken.
    pub fn finish_attempt(
        &mut self,
        attempt: i64,
        outcome: &Outcome,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let saved = if outcome.transcript.is_empty() {
            self.lines(attempt)?
        } else {
            Vec::new()
        };
        let spoken = if outcome.transcript.is_empty() {
            &saved
        } else {
            &outcome.transcript
        };
        let transcript =
            serde_json::to_string(spoken).map_err(|e| StoreError::Data(e.to_string()))?;
        let ended_by = serde_json::to_value(outcome.ended_by)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        let (disposition, notes) = match &outcome.disposition {
            Some(d) => (Some(d.name.as_str()), Some(d.notes.as_str())),
            None => (None, None),
        };
        let replies = (!outcome.latency.replies_ms.is_empty())
            .then(|| serde_json::to_string(&outcome.latency.replies_ms))
            .transpose()
            .map_err(|e| StoreError::Data(e.to_string()))?;
        let recording = outcome.recording.as_ref();
        let tx = self.conn.savepoint()?;
        let lead: i64 = tx.query_row(
            "SELECT lead_id FROM attempts WHERE id = ?1 AND in_flight = 1",
            [attempt],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE attempts SET in_flight = 0, call_sid = COALESCE(?2, call_sid), status = ?3,
               answered_by = ?4, duration_secs = ?5, ended_by = ?6, reason = ?7, error_code = ?8,
               error_message = ?9, disposition = ?10, notes = ?11, opted_out = ?12,
               transcript = ?13, ended_at = ?14, recording_sid = ?15, recording_status = ?16,
               recording_url = ?17, recording_duration_secs = ?18, local_recording = ?19,
               agent_setup_ms = ?20, reply_latencies = ?21
             WHERE id = ?1",
            params![
                attempt,
                outcome.call_sid,
                outcome.status.as_str(),
                outcome.answered_by.as_ref().map(AnsweredBy::as_str),
                outcome.duration_secs.map(|d| d as i64),
                ended_by,
                outcome.reason,
                outcome.error.as_ref().and_then(|e| e.code.clone()),
                outcome.error.as_ref().map(|e| e.message.clone()),
                disposition,
                notes,
                outcome.opted_out,
                transcript,
                ms(now),
                recording.map(|r| r.sid.as_str()),
                recording.map(|r| r.status.as_str()),
                recording.and_then(|r| r.url.as_deref()),
                recording.and_then(|r| r.duration_secs).map(|d| d as i64),
                outcome.local_recording.as_ref().map(|l| l.path.as_str()),
                outcome.latency.agent_setup_ms,
                replies,
            ],
        )?;
        // The full transcript is in the attempt now.
        tx.execute("DELETE FROM lines WHERE attempt_id = ?1", [attempt])?;
        tx.execute(
            "UPDATE leads SET status = ?2, next_at = ?3, reason = ?4,
               disposition = COALESCE(?5, disposition), notes = COALESCE(?6, notes),
               talk_secs = talk_secs + ?7, last_call_sid = COALESCE(?8, last_call_sid),
               updated_at = ?9
             WHERE id = ?1",
            params![
                lead,
                verdict.status.as_str(),
                verdict.next_at.map(ms),
                verdict.reason,
                disposition,
                notes,
                outcome.duration_secs.unwrap_or(0) as i64,
                outcome.call_sid,
                ms(now),
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Twilio's word on a call's recording, arriving after the attempt was finished. A final
    /// status is never replaced by an earlier one that arrived late.
    pub fn set_recording(
        &mut self,
        call_sid: &str,
        recording: &TwilioRecording,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE attempts SET recording_sid = ?2, recording_status = ?3,
               recording_url = COALESCE(?4, recording_url),
               recording_duration_secs = COALESCE(?5, recording_duration_secs)
             WHERE call_sid = ?1 AND (?6 OR recording_status IS NULL
               OR recording_status NOT IN ('completed', 'absent'))",
            params![
                call_sid,
                recording.sid,
                recording.status,
                recording.url,
                recording.duration_secs.map(|d| d as i64),
                recording.is_final(),
            ],
        )?;
        Ok(())
    }

    /// Each call's recordings, by call SID.
    pub fn recordings(
        &self,
    ) -> Result<std::collections::HashMap<String, RecordingRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT call_sid, recording_sid, recording_status, recording_url,
               recording_duration_secs, local_recording FROM attempts
             WHERE call_sid IS NOT NULL AND (recording_sid IS NOT NULL OR local_recording IS NOT NULL)",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                RecordingRow {
                    sid: r.get(1)?,
                    status: r.get(2)?,
                    url: r.get(3)?,
                    duration_secs: r.get::<_, Option<i64>>(4)?.map(|d| d as u64),
                    local: r.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// SIDs of every call recorded for a lead.
    pub fn call_sids(&self, lead: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT call_sid FROM attempts WHERE lead_id = ?1 AND call_sid IS NOT NULL")?;
        let rows = stmt.query_map([lead], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Finished attempts, with their transcripts, in order.
    pub fn transcripts(&self) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT a.lead_id, l.phone, a.number, a.call_sid, a.transcript FROM attempts a
             JOIN leads l ON l.id = a.lead_id WHERE a.in_flight = 0 ORDER BY a.id",
        )?;
        let rows = stmt.query_map([], |r| {
            let text: Option<String> = r.get(4)?;
            Ok(AttemptRecord {
                lead_id: r.get(0)?,
                phone: r.get(1)?,
                number: r.get::<_, i64>(2)? as u32,
                call_sid: r.get(3)?,
                transcript: text
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Totals for the summary table.
    pub fn totals(&self) -> Result<Totals, StoreError> {
        let mut totals = Totals::default();
        let mut stmt = self
            .conn
            .prepare("SELECT status, COUNT(*) FROM leads GROUP BY status")?;
        let mut by_status: Vec<(LeadStatus, u64)> = stmt
            .query_map([], |r| {
                Ok((
                    status_of(&r.get::<_, String>(0)?)?,
                    r.get::<_, i64>(1)? as u64,
                ))
            })?
            .collect::<Result<_, _>>()?;
        by_status.sort();
        totals.statuses = by_status;
        let mut stmt = self.conn.prepare(
            "SELECT disposition, COUNT(*) AS n FROM leads WHERE disposition IS NOT NULL
             GROUP BY disposition ORDER BY n DESC, disposition",
        )?;
        totals.dispositions = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<_, _>>()?;
        let (attempts, answered): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(answered_by IS NOT NULL OR duration_secs > 0), 0)
             FROM attempts WHERE in_flight = 0 AND call_sid IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        totals.attempts = attempts as u64;
        totals.answered = answered as u64;
        let mut stmt = self.conn.prepare(
            "SELECT duration_secs FROM attempts WHERE duration_secs IS NOT NULL AND duration_secs > 0",
        )?;
        totals.durations = stmt
            .query_map([], |r| Ok(r.get::<_, i64>(0)? as u64))?
            .collect::<Result<_, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT agent_setup_ms, reply_latencies FROM attempts
             WHERE agent_setup_ms IS NOT NULL OR reply_latencies IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        for row in rows {
            let (setup, replies) = row?;
            if let Some(ms) = setup.and_then(|ms| u32::try_from(ms).ok()) {
                totals.agent_setups.push(ms);
            }
            if let Some(list) = replies.and_then(|t| serde_json::from_str::<Vec<u32>>(&t).ok()) {
                totals.reply_latencies.extend(list);
            }
        }
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Disposition, EndedBy, FinalStatus};
    use crate::phone::E164;

    fn lead(line: u64, phone: &str) -> Lead {
        Lead {
            line,
            phone: E164::parse(phone).unwrap(),
            timezone: Some(chrono_tz::America::New_York),
            vars: vec![("first_name".into(), format!("n{line}"))],
        }
    }

    fn outcome(status: FinalStatus, secs: Option<u64>) -> Outcome {
        Outcome {
            duration_secs: secs,
            answered_by: secs.map(|_| "human".into()),
            disposition: Some(Disposition {
                name: "confirmed".into(),
                notes: "yes".into(),
            }),
            ..Outcome::sample("+12025550100", status, EndedBy::Agent)
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn import_is_idempotent_and_keeps_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut s = Store::open(&path).unwrap();
        let leads = [lead(2, "+12025550100"), lead(3, "+12025550101")];
        assert_eq!(s.import(&leads, t(0)).unwrap(), 2);
        let due = s.due(t(0), 10, &[]).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].vars, leads[0].vars);
        let (attempt, n) = s.begin_attempt(due[0].id, t(1)).unwrap();
        assert_eq!(n, 1);
        let verdict = Verdict {
            status: LeadStatus::Completed,
            next_at: None,
            reason: "done".into(),
        };
        s.finish_attempt(
            attempt,
            &outcome(FinalStatus::Completed, Some(42)),
            &verdict,
            t(2),
        )
        .unwrap();
        drop(s);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.import(&leads, t(3)).unwrap(), 0);
        assert_eq!(s.counts().unwrap(), (2, 1));
        let row = s.lead(due[0].id).unwrap();
        assert_eq!(row.status, LeadStatus::Completed);
        assert_eq!(row.talk_secs, 42);
        assert_eq!(row.disposition.as_deref(), Some("confirmed"));
        assert_eq!(s.due(t(3), 10, &[]).unwrap().len(), 1);
    }

    #[test]
    fn a_live_or_final_lead_cannot_be_dialed_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("c.db")).unwrap();
        s.import(&[lead(2, "+12025550100")], t(0)).unwrap();
        let id = s.due(t(0), 1, &[]).unwrap()[0].id;
        s.begin_attempt(id, t(0)).unwrap();
        assert!(s.begin_attempt(id, t(0)).is_err());
        assert!(s.due(t(0), 10, &[]).unwrap().is_empty());
        assert_eq!(s.in_flight().unwrap().len(), 1);
    }

    #[test]
    fn in_flight_attempts_survive_a_crash_and_void_restores_the_lead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.import(&[lead(2, "+12025550100")], t(0)).unwrap();
            let id = s.due(t(0), 1, &[]).unwrap()[0].id;
            let (a, _) = s.begin_attempt(id, t(5)).unwrap();
            s.set_call_sid(a, "CAabc").unwrap();
            // Dropped without finishing: the process died.
        }
        let mut s = Store::open(&path).unwrap();
        let flying = s.in_flight().unwrap();
        assert_eq!(flying.len(), 1);
        assert_eq!(flying[0].call_sid.as_deref(), Some("CAabc"));
        assert_eq!(flying[0].started_at, t(5));
        s.void_attempt(flying[0].attempt_id).unwrap();
        let row = s.lead(flying[0].lead_id).unwrap();
        assert_eq!((row.status, row.attempts), (LeadStatus::Pending, 0));
        assert!(s.in_flight().unwrap().is_empty());
    }

    #[test]
    fn retries_wait_for_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("c.db")).unwrap();
        s.import(&[lead(2, "+12025550100"), lead(3, "+12025550101")], t(0))
            .unwrap();
        let first = s.due(t(0), 1, &[]).unwrap()[0].id;
        let (a, _) = s.begin_attempt(first, t(0)).unwrap();
        let verdict = Verdict {
            status: LeadStatus::Retry,
            next_at: Some(t(600)),
            reason: "busy".into(),
        };
        s.finish_attempt(a, &outcome(FinalStatus::Busy, None), &verdict, t(1))
            .unwrap();
        let due: Vec<i64> = s
            .due(t(10), 10, &[])
            .unwrap()
            .iter()
            .map(|l| l.id)
            .collect();
        assert!(!due.contains(&first));
        assert_eq!(s.next_due().unwrap().unwrap().1, 2);
        let second = due[0];
        s.skip(second, LeadStatus::DoNotCall, "on list", t(2))
            .unwrap();
        assert_eq!(s.next_due().unwrap(), Some((t(600), 1)));
        assert_eq!(s.due(t(600), 10, &[]).unwrap()[0].id, first);
        s.defer(first, t(900)).unwrap();
        assert!(s.due(t(600), 10, &[]).unwrap().is_empty());
    }

    #[test]
    fn the_due_query_reads_the_waiting_index_in_order_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("c.db")).unwrap();
        let leads: Vec<Lead> = (0..2_000)
            .map(|i| lead(i + 2, &format!("+1202555{:04}", 2000 + i)))
            .collect();
        s.import(&leads, t(0)).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = s
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let rows = stmt.query_map([t(0).timestamp_millis(), 10], |r| r.get::<_, String>(3));
            rows.unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
                .join("; ")
        };
        // A sort would read every waiting lead on every call: quadratic over a campaign.
        let due = plan(&due_query());
        assert!(due.contains("USING INDEX leads_waiting"), "{due}");
        assert!(!due.contains("TEMP B-TREE"), "{due}");
    }

    #[test]
    fn a_finished_attempt_without_a_transcript_keeps_the_lines_saved_as_spoken() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("c.db")).unwrap();
        s.import(&[lead(2, "+12025550100")], t(0)).unwrap();
        let id = s.due(t(0), 1, &[]).unwrap()[0].id;
        let (a, _) = s.begin_attempt(id, t(0)).unwrap();
        s.set_call_sid(a, "CAabc").unwrap();
        let said = |text: &str, at_ms| TranscriptLine {
            speaker: crate::events::Speaker::Agent,
            text: text.into(),
            at_ms,
            interrupted: false,
            latency_ms: None,
        };
        s.add_line(a, &said("Hello", 10)).unwrap();
        s.add_line(a, &said("Can you make it?", 900)).unwrap();
        assert_eq!(s.lines(a).unwrap().len(), 2);
        // Settled from Twilio's records after a crash: the outcome knows no words.
        let mut settled = outcome(FinalStatus::Completed, Some(30));
        settled.transcript.clear();
        let verdict = Verdict {
            status: LeadStatus::Completed,
            next_at: None,
            reason: String::new(),
        };
        s.finish_attempt(a, &settled, &verdict, t(40)).unwrap();
        let records = s.transcripts().unwrap();
        assert_eq!(
            records[0].transcript,
            [said("Hello", 10), said("Can you make it?", 900)]
        );
        assert!(s.lines(a).unwrap().is_empty(), "kept once, in the attempt");
    }

    #[test]
    fn recordings_and_latencies_are_kept_and_a_late_recording_updates_its_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        // A database made before recordings: the columns are added when it is opened.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        s.import(&[lead(2, "+12025550100")], t(0)).unwrap();
        let id = s.due(t(0), 1, &[]).unwrap()[0].id;
        let (a, _) = s.begin_attempt(id, t(0)).unwrap();
        s.set_call_sid(a, "CAabc").unwrap();
        let mut done = outcome(FinalStatus::Completed, Some(30));
        done.call_sid = Some("CAabc".into());
        done.latency = crate::events::CallLatency::new(Some(120), vec![600, 800, 700]);
        done.recording = Some(TwilioRecording {
            sid: "REabc".into(),
            status: "in-progress".into(),
            url: None,
            duration_secs: None,
            channels: Some(2),
        });
        done.local_recording = Some(crate::events::LocalRecording {
            path: "out/recordings/CAabc.wav".into(),
            frames_dropped: 0,
        });
        let verdict = Verdict {
            status: LeadStatus::Completed,
            next_at: None,
            reason: String::new(),
        };
        s.finish_attempt(a, &done, &verdict, t(40)).unwrap();
        let row = &s.recordings().unwrap()["CAabc"];
        assert_eq!(row.status.as_deref(), Some("in-progress"));
        assert_eq!(row.local.as_deref(), Some("out/recordings/CAabc.wav"));
        // Twilio's `completed` arrives after the attempt was saved.
        let completed = TwilioRecording {
            sid: "REabc".into(),
            status: "completed".into(),
            url: Some("https://api.twilio.com/rec/REabc".into()),
            duration_secs: Some(29),
            channels: Some(2),
        };
        s.set_recording("CAabc", &completed).unwrap();
        // A late `in-progress` does not undo it.
        s.set_recording(
            "CAabc",
            &TwilioRecording {
                status: "in-progress".into(),
                url: None,
                duration_secs: None,
                ..completed.clone()
            },
        )
        .unwrap();
        let row = &s.recordings().unwrap()["CAabc"];
        assert_eq!(row.status.as_deref(), Some("completed"));
        assert_eq!(row.url.as_deref(), Some("https://api.twilio.com/rec/REabc"));
        assert_eq!(row.duration_secs, Some(29));
        let totals = s.totals().unwrap();
        assert_eq!(totals.reply_latencies, [600, 800, 700]);
        assert_eq!(totals.agent_setups, [120]);
    }

    #[test]
    fn a_second_process_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let _first = Store::open(&path).unwrap();
        match Store::open(&path) {
            Err(StoreError::Locked { .. }) => {}
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("two stores on one campaign"),
        }
    }

    #[test]
    fn totals_count_statuses_dispositions_and_talk_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("c.db")).unwrap();
        s.import(&[lead(2, "+12025550100"), lead(3, "+12025550101")], t(0))
            .unwrap();
        let id = s.due(t(0), 1, &[]).unwrap()[0].id;
        let (a, _) = s.begin_attempt(id, t(0)).unwrap();
        let verdict = Verdict {
            status: LeadStatus::Completed,
            next_at: None,
            reason: String::new(),
        };
        s.finish_attempt(
            a,
            &outcome(FinalStatus::Completed, Some(61)),
            &verdict,
            t(1),
        )
        .unwrap();
        let totals = s.totals().unwrap();
        assert_eq!(
            totals.statuses,
            vec![(LeadStatus::Pending, 1), (LeadStatus::Completed, 1)]
        );
        assert_eq!(totals.dispositions, vec![("confirmed".to_string(), 1)]);
        assert_eq!((totals.attempts, totals.answered), (1, 1));
        assert_eq!(totals.durations, vec![61]);
    }
}

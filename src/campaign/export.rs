//! The results folder, written from the database alone so it can be regenerated at any time:
//! `results.csv` (one row per lead: number, its variables, status, disposition, notes,
//! attempts, talk time, last call SID, the last call's recordings) and `transcripts/<CallSid>.jsonl` (one line of the
//! conversation per JSON line). Files are written beside their final name and renamed, so a
//! reader never sees half a file.
//!
//! `results.csv` is made to be opened in a spreadsheet, and its cells hold text from outside:
//! the leads file, and the notes the agent writes from what a callee says. A cell a spreadsheet
//! would read as a formula (`=`, `+`, `-`, `@`, a tab or a carriage return first) gets a `'`
//! before it, as OWASP recommends; the database keeps the text as it was. The phone column is
//! the exception: it only ever holds E.164 (`+` and digits), which no spreadsheet runs as a
//! formula, and left as it is it can be read back as a leads file.

use super::store::{Store, StoreError};
use crate::phone::E164;
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub results: PathBuf,
    pub transcripts: usize,
}

/// The fixed columns after the lead's variables.
pub const RESULT_COLUMNS: [&str; 12] = [
    "status",
    "disposition",
    "notes",
    "attempts",
    "talk_secs",
    "last_call_sid",
    "reason",
    "line",
    // The last call's recordings (`record = true`): Twilio's, and the WAV written here.
    "recording_sid",
    "recording_url",
    "recording_duration_secs",
    "local_recording",
];

/// A cell a spreadsheet will show as text: with a `'` first when it would otherwise be read as
/// a formula. Leading spaces do not protect a formula in every spreadsheet, and full-width
/// signs are read as their ASCII selves by some, so both count.
pub fn defuse(cell: &str) -> Cow<'_, str> {
    let formula = cell.starts_with(['\t', '\r', '\n'])
        || cell
            .trim_start()
            .starts_with(['=', '+', '-', '@', '＝', '＋', '－', '＠']);
    if formula {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// The header names of the lead's columns in `results.csv`: as in the leads file, except that
/// one named like a column the results add (`phone`, `status`, `notes`…, in any case) gets
/// `lead_` before it, as many times as it takes to be unique.
fn result_names(columns: &[&str]) -> Vec<String> {
    let mut taken: Vec<String> = std::iter::once("phone")
        .chain(RESULT_COLUMNS)
        .chain(columns.iter().copied())
        .map(str::to_lowercase)
        .collect();
    columns
        .iter()
        .map(|&column| {
            let reserved = |name: &str| {
                let name = name.to_lowercase();
                name == "phone" || RESULT_COLUMNS.contains(&name.as_str())
            };
            if !reserved(column) {
                return column.to_string();
            }
            let mut name = format!("lead_{column}");
            while taken.contains(&name.to_lowercase()) || reserved(&name) {
                name = format!("lead_{name}");
            }
            taken.push(name.to_lowercase());
            name
        })
        .collect()
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let err = |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Write the results folder from the database.
pub fn export(store: &Store, out: &Path) -> Result<Written, ExportError> {
    let dir_err = |source| ExportError::Write {
        path: out.to_path_buf(),
        source,
    };
    let transcripts_dir = out.join("transcripts");
    std::fs::create_dir_all(&transcripts_dir).map_err(dir_err)?;
    let leads = store.leads()?;
    // Variable columns in first-seen order over every lead (rows of a corrected CSV may differ).
    let mut columns: Vec<&str> = Vec::new();
    for lead in &leads {
        for (name, _) in &lead.vars {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    let mut csv = csv::Writer::from_writer(Vec::new());
    let header = std::iter::once("phone".to_string())
        .chain(result_names(&columns))
        .chain(RESULT_COLUMNS.map(String::from))
        .map(|name| defuse(&name).into_owned());
    let write_err = |e: csv::Error| ExportError::Write {
        path: out.join("results.csv"),
        source: std::io::Error::other(e),
    };
    csv.write_record(header).map_err(write_err)?;
    let recordings = store.recordings()?;
    for lead in &leads {
        let recording = lead
            .last_call_sid
            .as_ref()
            .and_then(|sid| recordings.get(sid))
            .cloned()
            .unwrap_or_default();
        let value = |name: &str| {
            lead.vars
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let phone = match E164::parse(&lead.phone) {
            Ok(phone) if phone.as_str() == lead.phone => lead.phone.clone(),
            _ => defuse(&lead.phone).into_owned(),
        };
        let row: Vec<String> = std::iter::once(phone)
            .chain(columns.iter().map(|c| defuse(value(c)).into_owned()))
            .chain([
                lead.status.as_str().to_string(),
                defuse(lead.disposition.as_deref().unwrap_or_default()).into_owned(),
                defuse(lead.notes.as_deref().unwrap_or_default()).into_owned(),
                lead.attempts.to_string(),
                lead.talk_secs.to_string(),
                defuse(lead.last_call_sid.as_deref().unwrap_or_default()).into_owned(),
                defuse(lead.reason.as_deref().unwrap_or_default()).into_owned(),
                lead.line.to_string(),
                defuse(recording.sid.as_deref().unwrap_or_default()).into_owned(),
                defuse(recording.url.as_deref().unwrap_or_default()).into_owned(),
                recording
                    .duration_secs
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                defuse(recording.local.as_deref().unwrap_or_default()).into_owned(),
            ])
            .collect();
        csv.write_record(&row).map_err(write_err)?;
    }
    let bytes = csv
        .into_inner()
        .map_err(|e| write_err(e.into_error().into()))?;
    let results = out.join("results.csv");
    atomic_write(&results, &bytes)?;

    let mut transcripts = 0;
    for attempt in store.transcripts()? {
        let Some(sid) = attempt.call_sid.filter(|_| !attempt.transcript.is_empty()) else {
            continue;
        };
        // SIDs are Twilio's (`CA` + hex), but never trust a name that becomes a path.
        if !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        let mut body = Vec::new();
        for line in &attempt.transcript {
            let mut value = serde_json::to_value(line).map_err(|e| ExportError::Write {
                path: transcripts_dir.clone(),
                source: std::io::Error::other(e),
            })?;
            value["to"] = attempt.phone.clone().into();
            value["attempt"] = attempt.number.into();
            value["call_sid"] = sid.clone().into();
            body.extend_from_slice(value.to_string().as_bytes());
            body.push(b'\n');
        }
        atomic_write(&transcripts_dir.join(format!("{sid}.jsonl")), &body)?;
        transcripts += 1;
    }
    Ok(Written {
        results,
        transcripts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::LeadStatus;
    use crate::campaign::leads::Lead;
    use crate::campaign::store::Verdict;
    use crate::events::{Disposition, EndedBy, FinalStatus, Outcome};
    use chrono::{DateTime, Utc};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A lead's number, its variables, and the notes the agent took.
    type Called<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    /// A database of one called lead per entry, exported; the header and rows read back.
    fn export_leads(leads: &[Called]) -> (Vec<String>, Vec<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("c.db")).unwrap();
        let rows: Vec<Lead> = leads
            .iter()
            .enumerate()
            .map(|(i, (phone, vars, _))| Lead {
                line: i as u64 + 2,
                phone: E164::parse(phone).unwrap(),
                timezone: None,
                vars: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .collect();
        store.import(&rows, now()).unwrap();
        for (lead, (phone, _, notes)) in store.due(now(), 100, &[]).unwrap().iter().zip(leads) {
            let (attempt, _) = store.begin_attempt(lead.id, now()).unwrap();
            let mut outcome = Outcome::sample(phone, FinalStatus::Completed, EndedBy::Callee);
            outcome.disposition = Some(Disposition {
                name: "confirmed".into(),
                notes: notes.to_string(),
            });
            let verdict = Verdict {
                status: LeadStatus::Completed,
                next_at: None,
                reason: "-1 reason".into(),
            };
            store
                .finish_attempt(attempt, &outcome, &verdict, now())
                .unwrap();
        }
        let written = export(&store, &dir.path().join("out")).unwrap();
        let mut reader = csv::Reader::from_path(&written.results).unwrap();
        let header = reader.headers().unwrap().iter().map(String::from).collect();
        let rows = reader
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        // The database keeps what the callee said.
        let kept: Vec<Option<String>> = store
            .leads()
            .unwrap()
            .into_iter()
            .map(|l| l.notes)
            .collect();
        assert_eq!(kept[0].as_deref(), Some(leads[0].2));
        (header, rows)
    }

    #[test]
    fn cells_a_spreadsheet_would_run_are_defused() {
        for (cell, shown) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("  =1", "'  =1"),
            ("＝1+1", "'＝1+1"),
            ("Ann", "Ann"),
            ("a=b", "a=b"),
            ("", ""),
            ("'quoted", "'quoted"),
        ] {
            assert_eq!(defuse(cell), shown, "{cell:?}");
        }
    }

    /// Once written verbatim: a callee could plant a formula in the notes.
    #[test]
    fn results_csv_defuses_formulas_but_keeps_the_phone_number() {
        let (header, rows) = export_leads(&[(
            "+12025550100",
            &[
                ("first_name", "=cmd|'/C calc'!A0"),
                ("=evil", "@x"),
                ("alt", "+12025550101"),
            ],
            "=HYPERLINK(\"http://evil\",\"click\")",
        )]);
        assert_eq!(
            header,
            [
                "phone",
                "first_name",
                "'=evil",
                "alt",
                "status",
                "disposition",
                "notes",
                "attempts",
                "talk_secs",
                "last_call_sid",
                "reason",
                "line",
                "recording_sid",
                "recording_url",
                "recording_duration_secs",
                "local_recording"
            ]
        );
        let row = &rows[0];
        assert_eq!(row[0], "+12025550100");
        assert_eq!(row[1], "'=cmd|'/C calc'!A0");
        assert_eq!(row[2], "'@x");
        assert_eq!(row[3], "'+12025550101");
        assert_eq!(row[6], "'=HYPERLINK(\"http://evil\",\"click\")");
        assert_eq!(row[10], "'-1 reason");
    }

    /// Once a `notes` or `status` column of the leads file made two columns of that name.
    #[test]
    fn lead_columns_named_like_result_columns_are_renamed() {
        let (header, rows) = export_leads(&[(
            "+12025550100",
            &[
                ("notes", "lead note"),
                ("Status", "vip"),
                ("lead_notes", "taken"),
                ("phone", "home"),
                ("name", "Ann"),
            ],
            "agent note",
        )]);
        assert_eq!(
            header,
            [
                "phone",
                "lead_lead_notes",
                "lead_Status",
                "lead_notes",
                "lead_phone",
                "name",
                "status",
                "disposition",
                "notes",
                "attempts",
                "talk_secs",
                "last_call_sid",
                "reason",
                "line",
                "recording_sid",
                "recording_url",
                "recording_duration_secs",
                "local_recording"
            ]
        );
        let mut seen = std::collections::HashSet::new();
        assert!(header.iter().all(|h| seen.insert(h.to_lowercase())));
        let row = &rows[0];
        let field = |name: &str| row[header.iter().position(|h| h == name).unwrap()].as_str();
        assert_eq!(field("lead_lead_notes"), "lead note");
        assert_eq!(field("lead_Status"), "vip");
        assert_eq!(field("lead_notes"), "taken");
        assert_eq!(field("lead_phone"), "home");
        assert_eq!(field("notes"), "agent note");
        assert_eq!(field("status"), "completed");
    }
}

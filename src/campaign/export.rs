//! The results folder, written from the database alone so it can be regenerated at any time:
//! `results.csv` (one row per lead: number, its variables, status, disposition, notes,
//! attempts, talk time, last call SID) and `transcripts/<CallSid>.jsonl` (one line of the
//! conversation per JSON line). Files are written beside their final name and renamed, so a
//! reader never sees half a file.

use super::store::{Store, StoreError};
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
pub const RESULT_COLUMNS: [&str; 8] = [
    "status",
    "disposition",
    "notes",
    "attempts",
    "talk_secs",
    "last_call_sid",
    "reason",
    "line",
];

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
    let header = std::iter::once("phone")
        .chain(columns.iter().copied())
        .chain(RESULT_COLUMNS);
    let write_err = |e: csv::Error| ExportError::Write {
        path: out.join("results.csv"),
        source: std::io::Error::other(e),
    };
    csv.write_record(header).map_err(write_err)?;
    for lead in &leads {
        let value = |name: &str| {
            lead.vars
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let row: Vec<String> = std::iter::once(lead.phone.clone())
            .chain(columns.iter().map(|c| value(c).to_string()))
            .chain([
                lead.status.as_str().to_string(),
                lead.disposition.clone().unwrap_or_default(),
                lead.notes.clone().unwrap_or_default(),
                lead.attempts.to_string(),
                lead.talk_secs.to_string(),
                lead.last_call_sid.clone().unwrap_or_default(),
                lead.reason.clone().unwrap_or_default(),
                lead.line.to_string(),
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

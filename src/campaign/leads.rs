//! The leads CSV: finding the phone and time-zone columns, normalising numbers to E.164, keeping
//! every other column as template variables, and setting aside bad rows and repeated numbers
//! with the line they came from.

use crate::phone::E164;
use chrono_tz::Tz;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

/// Accepted names of the phone column, in priority order (after [`column_key`]).
const PHONE_COLUMNS: [&str; 4] = ["phone", "phone_number", "number", "to"];
/// Accepted names of the time-zone column, in priority order (after [`column_key`]).
const TIMEZONE_COLUMNS: [&str; 3] = ["timezone", "time_zone", "tz"];

/// One callable row.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    /// 1-based line number in the file (the header is line 1), for messages.
    pub line: u64,
    pub phone: E164,
    /// From the row's time-zone column, when it has a non-empty one.
    pub timezone: Option<Tz>,
    /// Every column except the phone column, in header order: (header as written, trimmed value).
    pub vars: Vec<(String, String)>,
}

/// A row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub line: u64,
    pub reason: String,
}

/// A row whose number an earlier row already has: the number is dialed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub line: u64,
    pub phone: E164,
    pub first_line: u64,
}

/// Everything read from a leads file.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadFile {
    /// The phone column's header as written.
    pub phone_column: String,
    /// The variable columns (everything but the phone column), in header order.
    pub columns: Vec<String>,
    pub leads: Vec<Lead>,
    pub bad_rows: Vec<BadRow>,
    pub duplicates: Vec<Duplicate>,
}

/// Why a leads file cannot be used at all. Problems with single rows are [`BadRow`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum LeadsError {
    #[error("cannot read leads file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "leads file {path} is empty: its first line must be a header naming the columns, e.g. phone,name"
    )]
    Empty { path: String },
    #[error(
        "leads file {path} has no phone column (columns found: {}); name one of: phone, phone_number, number, to",
        columns.join(", ")
    )]
    NoPhoneColumn { path: String, columns: Vec<String> },
}

/// Read a leads file; `default_region` reads national numbers (e.g. `US`).
pub fn load(path: &Path, default_region: Option<&str>) -> Result<LeadFile, LeadsError> {
    let file = std::fs::File::open(path).map_err(|source| LeadsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(
        std::io::BufReader::with_capacity(64 * 1024, file),
        &path.display().to_string(),
        default_region,
    )
}

/// Read leads CSV from `reader`; `source` names it in error messages.
pub fn parse(
    reader: impl std::io::Read,
    source: &str,
    default_region: Option<&str>,
) -> Result<LeadFile, LeadsError> {
    let read_error = |e: csv::Error| LeadsError::Read {
        path: source.to_string(),
        source: e.into(),
    };
    // Flexible: a row with the wrong field count is one bad row, not a failed file.
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut record = csv::ByteRecord::new();

    let headers: Vec<String> = loop {
        if !csv.read_byte_record(&mut record).map_err(read_error)? {
            return Err(LeadsError::Empty {
                path: source.to_string(),
            });
        }
        if !is_blank(&record) {
            break record
                .iter()
                .enumerate()
                .map(|(i, field)| {
                    // csv-core drops a BOM only when it arrives in one read; a slow
                    // reader (a pipe) can split it.
                    let field = if i == 0 {
                        field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
                    } else {
                        field
                    };
                    String::from_utf8_lossy(field).trim().to_string()
                })
                .collect();
        }
    };

    let keys: Vec<String> = headers.iter().map(|h| column_key(h)).collect();
    let find = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| keys.iter().position(|k| k == name))
    };
    let Some(phone_index) = find(&PHONE_COLUMNS) else {
        return Err(LeadsError::NoPhoneColumn {
            path: source.to_string(),
            columns: headers,
        });
    };
    let timezone_index = find(&TIMEZONE_COLUMNS);
    let columns: Vec<String> = headers
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != phone_index)
        .map(|(_, h)| h.clone())
        .collect();

    let mut leads = Vec::new();
    let mut bad_rows = Vec::new();
    let mut duplicates = Vec::new();
    let mut first_seen: HashMap<E164, u64> = HashMap::new();
    while csv.read_byte_record(&mut record).map_err(read_error)? {
        if is_blank(&record) {
            continue;
        }
        let line = record.position().map_or(0, |p| p.line());
        match read_row(
            &record,
            &headers,
            phone_index,
            timezone_index,
            default_region,
        ) {
            Err(reason) => bad_rows.push(BadRow { line, reason }),
            Ok((phone, timezone)) => match first_seen.entry(phone) {
                Entry::Occupied(seen) => duplicates.push(Duplicate {
                    line,
                    phone: seen.key().clone(),
                    first_line: *seen.get(),
                }),
                Entry::Vacant(slot) => {
                    let phone = slot.key().clone();
                    slot.insert(line);
                    let vars = record
                        .iter()
                        .zip(&headers)
                        .enumerate()
                        .filter(|&(i, _)| i != phone_index)
                        // Already checked to be UTF-8 by read_row.
                        .map(|(_, (field, header))| {
                            let value = std::str::from_utf8(field).unwrap_or_default();
                            (header.clone(), value.trim().to_string())
                        })
                        .collect();
                    leads.push(Lead {
                        line,
                        phone,
                        timezone,
                        vars,
                    });
                }
            },
        }
    }

    Ok(LeadFile {
        phone_column: headers[phone_index].clone(),
        columns,
        leads,
        bad_rows,
        duplicates,
    })
}

/// A header reduced for matching: lowercase, trimmed, spaces and hyphens as underscores.
fn column_key(header: &str) -> String {
    header
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whitespace-only lines (and rows of empty cells, as spreadsheets export) are not rows.
fn is_blank(record: &csv::ByteRecord) -> bool {
    record.iter().all(|field| field.trim_ascii().is_empty())
}

/// Validate a row without building its variables: its number and time zone, or why it is bad.
fn read_row(
    record: &csv::ByteRecord,
    headers: &[String],
    phone_index: usize,
    timezone_index: Option<usize>,
    default_region: Option<&str>,
) -> Result<(E164, Option<Tz>), String> {
    if record.len() != headers.len() {
        return Err(format!(
            "has {} fields but the header has {} (a value with a comma must be in double quotes)",
            record.len(),
            headers.len()
        ));
    }
    if let Some(column) = record.iter().position(|f| std::str::from_utf8(f).is_err()) {
        return Err(format!(
            "column '{}' is not valid UTF-8 (save the file as UTF-8)",
            headers[column]
        ));
    }
    let text = |i: usize| std::str::from_utf8(&record[i]).unwrap_or_default().trim();
    let phone =
        E164::parse_with_region(text(phone_index), default_region).map_err(|e| e.to_string())?;
    let timezone = match timezone_index.map(text) {
        None | Some("") => None,
        Some(name) => Some(parse_timezone(name).ok_or_else(|| {
            format!("unknown time zone '{name}' (use an IANA name such as America/New_York)")
        })?),
    };
    Ok((phone, timezone))
}

/// An IANA time-zone name; case is forgiven, since spreadsheets and people change it.
fn parse_timezone(name: &str) -> Option<Tz> {
    name.parse().ok().or_else(|| {
        chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(name))
            .copied()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> LeadFile {
        parse(text.as_bytes(), "leads.csv", Some("US")).unwrap()
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_leads_with_variables_and_time_zones() {
        let file = read(
            "Name,Phone Number,Time Zone\n\
             Ann , (415) 555-0100 ,America/Los_Angeles\n\
             Bob,+442071838750,\n",
        );
        assert_eq!(file.phone_column, "Phone Number");
        assert_eq!(file.columns, ["Name", "Time Zone"]);
        assert!(file.bad_rows.is_empty() && file.duplicates.is_empty());
        assert_eq!(
            file.leads,
            [
                Lead {
                    line: 2,
                    phone: E164::parse("+14155550100").unwrap(),
                    timezone: Some(chrono_tz::America::Los_Angeles),
                    vars: vars(&[("Name", "Ann"), ("Time Zone", "America/Los_Angeles")]),
                },
                Lead {
                    line: 3,
                    phone: E164::parse("+442071838750").unwrap(),
                    timezone: None,
                    vars: vars(&[("Name", "Bob"), ("Time Zone", "")]),
                },
            ]
        );
    }

    #[test]
    fn phone_column_names_follow_priority() {
        let file = read("to,NUMBER, phone_number ,x\n+14155550100,+14155550101,+14155550102,y\n");
        assert_eq!(file.phone_column, "phone_number");
        assert_eq!(file.columns, ["to", "NUMBER", "x"]);
        assert_eq!(file.leads[0].phone.as_str(), "+14155550102");

        let file = read("To,Number\n+14155550100,+14155550101\n");
        assert_eq!(file.phone_column, "Number");
        let file = read("name,TZ,to\nAnn,europe/london,+442071838750\n");
        assert_eq!(file.phone_column, "to");
        assert_eq!(file.leads[0].timezone, Some(chrono_tz::Europe::London));
    }

    /// Yields one byte per read, as a slow pipe may.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn bom_does_not_hide_the_first_header() {
        let text = "\u{feff}phone,name\n+14155550100,Ann\n";
        for file in [
            read(text),
            parse(Trickle(text.as_bytes()), "pipe", None).unwrap(),
        ] {
            assert_eq!(file.phone_column, "phone");
            assert_eq!(file.leads.len(), 1);
        }
    }

    #[test]
    fn bad_rows_keep_their_line_numbers() {
        let mut text = b"phone,note,tz\n".to_vec();
        text.extend_from_slice(b"+14155550100,\"two\nlines\",\n"); // lines 2-3
        text.extend_from_slice(b"\n   \n,,\n"); // blank lines 4-6
        text.extend_from_slice(b"+12,short,\n"); // 7
        text.extend_from_slice(b"+14155550101,too,many,fields\n"); // 8
        text.extend_from_slice(b"+14155550102,caf\xE9,\n"); // 9: Latin-1
        text.extend_from_slice(b"+14155550103,x,Mars/Olympus\n"); // 10
        text.extend_from_slice(b"+14155550104,last,UTC\n"); // 11
        let file = parse(&text[..], "leads.csv", None).unwrap();

        let lines: Vec<u64> = file.leads.iter().map(|l| l.line).collect();
        assert_eq!(lines, [2, 11]);
        assert_eq!(file.leads[0].vars[0].1, "two\nlines");
        assert_eq!(file.leads[1].timezone, Some(chrono_tz::UTC));
        let bad: Vec<(u64, &str)> = file
            .bad_rows
            .iter()
            .map(|b| (b.line, b.reason.as_str()))
            .collect();
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert_eq!(bad[0].0, 7);
        assert!(bad[0].1.contains("digits"), "{}", bad[0].1);
        assert_eq!(bad[1].0, 8);
        assert!(bad[1].1.contains("has 4 fields but the header has 3"));
        assert_eq!(bad[2].0, 9);
        assert!(bad[2].1.contains("UTF-8"));
        assert_eq!(
            bad[3],
            (
                10,
                "unknown time zone 'Mars/Olympus' (use an IANA name such as America/New_York)"
            )
        );
    }

    #[test]
    fn national_numbers_need_a_region() {
        let file = parse("phone\n(415) 555-0100\n".as_bytes(), "l.csv", None).unwrap();
        assert!(file.leads.is_empty());
        assert!(file.bad_rows[0].reason.contains("default region"));
    }

    #[test]
    fn repeated_numbers_are_dialed_once() {
        let file = read(
            "phone,name\n+14155550100,Ann\n415-555-0100,Ann again\n+14155550101,Bob\n(415) 555 0100,Ann thrice\n",
        );
        let names: Vec<&str> = file.leads.iter().map(|l| l.vars[0].1.as_str()).collect();
        assert_eq!(names, ["Ann", "Bob"]);
        let dups: Vec<(u64, &str, u64)> = file
            .duplicates
            .iter()
            .map(|d| (d.line, d.phone.as_str(), d.first_line))
            .collect();
        assert_eq!(dups, [(3, "+14155550100", 2), (5, "+14155550100", 2)]);
    }

    #[test]
    fn whole_file_failures_are_errors() {
        let err = parse("".as_bytes(), "empty.csv", None).unwrap_err();
        assert!(matches!(err, LeadsError::Empty { .. }));
        let err = parse("\n\n".as_bytes(), "blank.csv", None).unwrap_err();
        assert!(err.to_string().contains("blank.csv is empty"), "{err}");

        let err = parse("name, mobile\nAnn,+14155550100\n".as_bytes(), "x.csv", None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "leads file x.csv has no phone column (columns found: name, mobile); name one of: phone, phone_number, number, to"
        );

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.csv");
        let err = load(&missing, None).unwrap_err();
        assert!(matches!(err, LeadsError::Read { .. }));
        assert!(err.to_string().contains("missing.csv"), "{err}");
    }

    #[test]
    fn header_only_file_has_no_leads() {
        let file = read("phone,name\n");
        assert!(file.leads.is_empty() && file.bad_rows.is_empty());
        assert_eq!(file.columns, ["name"]);
    }

    #[test]
    fn loads_many_leads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        let mut text = String::from("phone,first_name,company,timezone\n");
        for i in 0..100_000u32 {
            text.push_str(&format!(
                "+1415{:07},Name{i},\"Acme, Inc.\",America/Chicago\n",
                2_000_000 + i
            ));
        }
        std::fs::write(&path, text).unwrap();
        let file = load(&path, None).unwrap();
        assert_eq!(file.leads.len(), 100_000);
        assert_eq!(file.leads[99_999].line, 100_001);
        assert_eq!(file.leads[5].vars[1].1, "Acme, Inc.");
    }
}

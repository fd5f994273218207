//! The leads CSV: finding the phone and time-zone columns, normalising numbers to E.164, keeping
//! every other column as template variables, and setting aside bad rows and repeated numbers
//! with the line they came from.

use crate::phone::{AllowList, E164, Restricted, printable};
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
    #[error("leads file {path} {reason}")]
    NotText { path: String, reason: String },
    #[error(
        "leads file {path} is empty: its first line must be a header naming the columns, e.g. phone,name"
    )]
    Empty { path: String },
    #[error(
        "leads file {path}: column {column} of the header has {chars} characters; a column name may have at most {MAX_VALUE_CHARS}"
    )]
    LongHeader {
        path: String,
        column: usize,
        chars: usize,
    },
    #[error(
        "leads file {path} has no phone column (columns found: {}); name one of: phone, phone_number, number, to",
        columns.join(", ")
    )]
    NoPhoneColumn { path: String, columns: Vec<String> },
}

/// Most characters in one value (or column name). Every value may be spoken in the greeting or
/// given to the agent in its prompt: a stray megabyte in a cell would become a megabyte prompt.
/// A thousand characters hold any name, address or appointment note.
pub const MAX_VALUE_CHARS: usize = 1000;

/// The reason a lead with a refused number (premium-rate, satellite, N11) is not dialed.
pub fn refused(restricted: &Restricted) -> String {
    format!(
        "{restricted}; to call it, add \"{}\" to campaign.allow_prefixes",
        restricted.prefix
    )
}

/// Read a leads file; `default_region` reads national numbers (e.g. `US`). Refused numbers
/// (premium-rate, satellite, N11) are bad rows; [`parse_with`] allows some.
pub fn load(path: &Path, default_region: Option<&str>) -> Result<LeadFile, LeadsError> {
    parse(
        &read(path)?[..],
        &path.display().to_string(),
        default_region,
    )
}

/// The bytes of a leads file.
pub fn read(path: &Path) -> Result<Vec<u8>, LeadsError> {
    std::fs::read(path).map_err(|source| LeadsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Read leads CSV from `reader`; `source` names it in error messages.
pub fn parse(
    reader: impl std::io::Read,
    source: &str,
    default_region: Option<&str>,
) -> Result<LeadFile, LeadsError> {
    parse_with(reader, source, default_region, &AllowList::default())
}

/// [`parse`], dialing the refused numbers `allow` allows.
pub fn parse_with(
    mut reader: impl std::io::Read,
    source: &str,
    default_region: Option<&str>,
    allow: &AllowList,
) -> Result<LeadFile, LeadsError> {
    // Whole, to check it is text before anything of it is shown.
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| LeadsError::Read {
            path: source.to_string(),
            source: e,
        })?;
    let text = super::decode(&bytes).map_err(|reason| LeadsError::NotText {
        path: source.to_string(),
        reason,
    })?;
    let read_error = |e: csv::Error| LeadsError::Read {
        path: source.to_string(),
        source: e.into(),
    };
    // Flexible: a row with the wrong field count is one bad row, not a failed file.
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut record = csv::ByteRecord::new();
    // The csv crate counts only \n, so a file with old Mac (\r) line ends would be all line 1;
    // lines are counted here instead.
    let mut lines = super::LineCounter::new(text.as_bytes());

    let headers: Vec<String> = loop {
        if !csv.read_byte_record(&mut record).map_err(read_error)? {
            return Err(LeadsError::Empty {
                path: source.to_string(),
            });
        }
        if !is_blank(&record) {
            let mut headers = Vec::with_capacity(record.len());
            for (i, field) in record.iter().enumerate() {
                let header = std::str::from_utf8(field).unwrap_or_default().trim();
                let chars = header.chars().count();
                if chars > MAX_VALUE_CHARS {
                    return Err(LeadsError::LongHeader {
                        path: source.to_string(),
                        column: i + 1,
                        chars,
                    });
                }
                headers.push(header.to_string());
            }
            break headers;
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
            columns: headers.iter().map(|h| printable(h)).collect(),
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
        // A record's position is where the csv crate started looking for it, before any
        // empty lines it skipped; no record starts with a line break.
        let line = record.position().map_or(0, |p| {
            let bytes = text.as_bytes();
            let mut start = p.byte() as usize;
            while matches!(bytes.get(start), Some(b'\r' | b'\n')) {
                start += 1;
            }
            lines.line_at(start)
        });
        match read_row(
            &record,
            &headers,
            phone_index,
            timezone_index,
            default_region,
            allow,
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
                        // The whole file is UTF-8, and fields split it at ASCII bytes.
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
    allow: &AllowList,
) -> Result<(E164, Option<Tz>), String> {
    if record.len() != headers.len() {
        return Err(format!(
            "has {} fields but the header has {} (a value with a comma must be in double quotes)",
            record.len(),
            headers.len()
        ));
    }
    let text = |i: usize| std::str::from_utf8(&record[i]).unwrap_or_default().trim();
    for (i, header) in headers.iter().enumerate() {
        // Bytes bound characters: most values need no count.
        if record[i].len() > MAX_VALUE_CHARS {
            let chars = text(i).chars().count();
            if chars > MAX_VALUE_CHARS {
                return Err(format!(
                    "column '{}' has {chars} characters; a value may have at most {MAX_VALUE_CHARS}",
                    printable(header)
                ));
            }
        }
    }
    let phone =
        E164::parse_with_region(text(phone_index), default_region).map_err(|e| e.to_string())?;
    allow.check(&phone).map_err(|r| refused(&r))?;
    let timezone = match timezone_index.map(text) {
        None | Some("") => None,
        Some(name) => Some(parse_timezone(name).ok_or_else(|| {
            format!(
                "unknown time zone '{}' (use an IANA name such as America/New_York)",
                printable(name)
            )
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
        text.extend_from_slice(b"+19005550102,premium,\n"); // 9
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
        assert!(
            bad[0].1.contains("1 digit after the country code"),
            "{}",
            bad[0].1
        );
        assert_eq!(bad[1].0, 8);
        assert!(bad[1].1.contains("has 4 fields but the header has 3"));
        assert_eq!(bad[2].0, 9);
        assert!(bad[2].1.contains("premium-rate"));
        assert_eq!(
            bad[3],
            (
                10,
                "unknown time zone 'Mars/Olympus' (use an IANA name such as America/New_York)"
            )
        );
    }

    /// Once every row of such a file was line 1.
    #[test]
    fn old_mac_line_ends_keep_their_line_numbers() {
        let text =
            "phone,name\r+14155550100,Ann\r+12,Short\r\r+14155550101,\"Two\rlines\"\r+1234,Bad\r";
        let file = read(text);
        let lines: Vec<u64> = file.leads.iter().map(|l| l.line).collect();
        assert_eq!(lines, [2, 5]);
        let bad: Vec<u64> = file.bad_rows.iter().map(|b| b.line).collect();
        assert_eq!(bad, [3, 7]);
        // Mixed with \r\n and \n, each counts once.
        let file = read("phone\r\n+14155550100\n+12\r+13\r\n+14\n");
        let bad: Vec<u64> = file.bad_rows.iter().map(|b| b.line).collect();
        assert_eq!(bad, [3, 4, 5]);
        // Empty lines before a row, which the csv crate counts from the wrong place.
        let file = read("phone\n+14155550100\n\n+12\n\n\n\n+13\r\n\r\n+14\n");
        let bad: Vec<u64> = file.bad_rows.iter().map(|b| b.line).collect();
        assert_eq!(bad, [4, 8, 10]);
    }

    /// Once read row by row, each echoing its control bytes in a warning.
    #[test]
    fn a_file_that_is_not_utf8_text_is_one_error() {
        let utf16: Vec<u8> = "\u{feff}phone,name\n+14155550100,Ann\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut utf16_without_bom = utf16.clone();
        utf16_without_bom.drain(..2);
        let mut big_endian: Vec<u8> = vec![0xFE, 0xFF];
        big_endian.extend("phone\n".encode_utf16().flat_map(u16::to_be_bytes));
        for (bytes, says) in [
            (utf16, "is UTF-16 text; save it as UTF-8"),
            (big_endian, "is UTF-16 text"),
            (
                utf16_without_bom,
                "is not a text file (line 1 has a NUL byte)",
            ),
            (
                b"phone\n+14155550100\n\x7fELF\x02\x01\x01\x00\x1b[2J".to_vec(),
                "line 3 has a NUL byte",
            ),
            (
                b"phone,name\n+14155550100,Ann\n+14155550101,caf\xE9\n".to_vec(),
                "is not UTF-8 text (line 3 is in another encoding); save it as UTF-8",
            ),
        ] {
            let e = parse(&bytes[..], "leads.csv", None).unwrap_err();
            assert!(matches!(e, LeadsError::NotText { .. }), "{e}");
            let e = e.to_string();
            assert!(
                e.starts_with("leads file leads.csv ") && e.contains(says),
                "{e}"
            );
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }

    #[test]
    fn messages_escape_control_characters() {
        let file = read("phone,tz\n+1415\u{1b}[31m5550100,x\n+14155550101,Mars\u{7}\n");
        for bad in &file.bad_rows {
            assert!(
                !bad.reason.chars().any(char::is_control),
                "{:?}",
                bad.reason
            );
        }
        assert!(
            file.bad_rows[1].reason.contains("'Mars\\u{7}'"),
            "{:?}",
            file.bad_rows
        );
        let e = parse("name\u{1b}[2J,x\nAnn,1\n".as_bytes(), "l.csv", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("name\\u{1b}[2J") && !e.contains('\u{1b}'), "{e}");
    }

    /// Once a megabyte cell became a megabyte of the agent's prompt.
    #[test]
    fn a_value_over_the_size_limit_is_a_bad_row() {
        let big = "x".repeat(1 << 20);
        let limit = "é".repeat(MAX_VALUE_CHARS);
        let text = format!(
            "phone,notes\n+14155550100,{big}\n+14155550101,{limit}\n\"+1415555{}\",x\n",
            " ".repeat(2000) + "0102"
        );
        let file = read(&text);
        let lines: Vec<u64> = file.leads.iter().map(|l| l.line).collect();
        assert_eq!(lines, [3], "{:?}", file.bad_rows);
        assert_eq!(file.leads[0].vars[0].1.chars().count(), MAX_VALUE_CHARS);
        assert_eq!(
            file.bad_rows[0],
            BadRow {
                line: 2,
                reason: "column 'notes' has 1048576 characters; a value may have at most 1000"
                    .into()
            }
        );
        assert_eq!(file.bad_rows[1].line, 4);
        assert!(
            file.bad_rows[1]
                .reason
                .starts_with("column 'phone' has 2012 characters")
        );

        let e = parse(format!("phone,{big}\n").as_bytes(), "l.csv", None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "leads file l.csv: column 2 of the header has 1048576 characters; a column name may have at most 1000"
        );
    }

    /// Once dialed like any other number.
    #[test]
    fn premium_satellite_and_n11_numbers_are_bad_rows_unless_allowed() {
        let text = "phone\n+19005550100\n+1 976 555 0100\n+449098790000\n+8816555010\n+882345678901\n+19115550100\n+12024115555\n+12025550100\n";
        let file = read(text);
        assert_eq!(file.leads.len(), 1);
        let lines: Vec<u64> = file.bad_rows.iter().map(|b| b.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            file.bad_rows[0].reason,
            "+19005550100 is a premium-rate number (+1 900), not dialed by default; to call it, add \"+1900\" to campaign.allow_prefixes"
        );
        assert!(file.bad_rows[5].reason.contains("N11 service code (911)"));
        assert!(file.bad_rows[6].reason.contains("\"+1202411\""));

        let allow = AllowList::new(&["+1900", "+44"]).unwrap();
        let file = parse_with(text.as_bytes(), "l.csv", None, &allow).unwrap();
        let phones: Vec<&str> = file.leads.iter().map(|l| l.phone.as_str()).collect();
        assert_eq!(phones, ["+19005550100", "+449098790000", "+12025550100"]);
    }

    /// Whatever the bytes, the loader returns leads and bad rows or one printable error line;
    /// nothing panics.
    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        const PIECES: [&[u8]; 22] = [
            b"phone",
            b"tz",
            b"name",
            b",",
            b"\"",
            b"\"\"",
            b"\n",
            b"\r",
            b"\r\n",
            b"+1",
            b"202",
            b"5550100",
            b"America/Chicago",
            b" ",
            b"\xEF\xBB\xBF",
            b"\xFF\xFE",
            b"\x00",
            b"\xE9",
            b"\x1b[2J",
            b"+1900",
            b"{{x}}",
            b"=cmd()",
        ];
        for round in 0..3000 {
            let mut bytes = Vec::new();
            if round % 2 == 0 {
                bytes.extend_from_slice(b"phone,name,tz\n");
            }
            for _ in 0..rng.random_range(0..60) {
                if rng.random_bool(0.15) {
                    bytes.push(rng.random());
                } else {
                    bytes.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())]);
                }
            }
            let region = [None, Some("US"), Some("zz")][round % 3];
            match parse(&bytes[..], "l.csv", region) {
                Ok(file) => {
                    for bad in &file.bad_rows {
                        assert!(bad.line >= 1);
                        assert!(
                            !bad.reason.chars().any(char::is_control),
                            "{:?}",
                            bad.reason
                        );
                    }
                    for lead in &file.leads {
                        assert!(lead.line >= 2);
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(!e.chars().any(char::is_control), "{e:?}");
                }
            }
        }
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

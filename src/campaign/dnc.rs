//! Do-not-call lists: plain text files of numbers, re-read whenever they change on disk (a person
//! or another dialer may edit them mid-campaign), and appended to durably when a callee opts out.
//!
//! They fail closed. At load, a line that is not a number, a file that is not text, or a listed
//! file that does not exist (other than the first, which opt-outs create) stops the campaign
//! before its first dial. During a run the list only grows: a number read once stays listed even
//! if its file is deleted, emptied or rewritten (a truncate-then-write by another program leaves
//! a window in which the file is empty), and a file that existed but can no longer be read
//! makes the list unavailable, which pauses dialing until it can be read again.

use crate::phone::{E164, PhoneError};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why a do-not-call list cannot be used or an opt-out cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum DncError {
    #[error("cannot read do-not-call list {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "do-not-call list {} does not exist: create it (it may be empty) or remove it from campaign.dnc; only the first list may be missing, since opt-outs create it",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("do-not-call list {} {reason}", path.display())]
    NotText { path: PathBuf, reason: String },
    #[error(
        "do-not-call list {}, line {line}: {reason}; correct the line or make it a comment with #{more}",
        path.display(),
        more = match more { 0 => String::new(), n => format!(" ({n} more such lines)") }
    )]
    Line {
        path: PathBuf,
        line: u64,
        reason: String,
        /// Bad lines after this one.
        more: usize,
    },
    #[error("cannot record an opt-out in do-not-call list {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "no do-not-call file is configured, so an opt-out cannot be recorded; name one in the campaign file"
    )]
    NoFile,
}

/// A list that existed and cannot be read now: nothing may be dialed until it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dialing paused: do-not-call list {} cannot be read ({}); dialing resumes when it can",
            self.path.display(),
            self.reason
        )
    }
}

/// What [`DncList::refresh`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// Every list is read.
    Ready,
    /// Every list is read again; the previous refresh found this one unavailable.
    Resumed(PathBuf),
    /// A list cannot be read. `news`: the previous refresh did not find this same problem.
    Unavailable { problem: Unavailable, news: bool },
}

/// The numbers of one or more do-not-call files. Opt-outs go to the first file.
#[derive(Debug)]
pub struct DncList {
    files: Vec<PathBuf>,
    lists: Vec<FileList>,
    /// How national-format lines are read.
    regions: Regions,
    /// The problem the last refresh reported, so the next reports only a change.
    paused: Option<Unavailable>,
}

/// What a file looked like when read. Length as well as mtime, since mtime can be too coarse to
/// tell apart two appends in the same second; the inode, since editors save by renaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
        }
    }
}

/// One file's numbers: every number it has listed since the campaign started.
#[derive(Debug, Default)]
struct FileList {
    /// The file as last read; `None` while it does not exist (or before it was first read).
    stamp: Option<Stamp>,
    /// Whether the file has existed, so its disappearance means something.
    seen: bool,
    numbers: HashSet<E164>,
    /// Why the file cannot be read now.
    problem: Option<String>,
}

/// Where national-format lines are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Regions {
    default: Option<String>,
    /// Also as North American numbers: the campaign calls +1 numbers.
    nanp: bool,
}

/// A bad line: its number, why, and how many bad lines follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BadLine {
    line: u64,
    reason: String,
    more: usize,
}

/// What one read of a file gave.
enum Contents {
    Missing,
    /// The numbers it lists, and its first bad line if it has one.
    Numbers(Stamp, HashSet<E164>, Option<BadLine>),
    NotText(Stamp, String),
}

impl FileList {
    fn refresh(&mut self, path: &Path, regions: &Regions) {
        let stamp = match std::fs::metadata(path) {
            Ok(meta) => Stamp::of(&meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stamp = None;
                self.problem = self
                    .seen
                    .then(|| "it no longer exists: it was deleted or renamed".to_string());
                return;
            }
            Err(e) => return self.cannot_read(e),
        };
        if self.stamp == Some(stamp) {
            // Unchanged since read: same numbers, same verdict.
            return;
        }
        match read_file(path, regions) {
            Ok(Contents::Missing) => {
                self.stamp = None;
                self.problem = self
                    .seen
                    .then(|| "it no longer exists: it was deleted or renamed".to_string());
            }
            Ok(Contents::NotText(stamp, reason)) => {
                (self.stamp, self.seen) = (Some(stamp), true);
                self.problem = Some(format!("it {reason}"));
            }
            Ok(Contents::Numbers(stamp, numbers, bad)) => {
                (self.stamp, self.seen) = (Some(stamp), true);
                self.numbers.extend(numbers);
                self.problem = bad.map(|b| format!("line {}: {}", b.line, b.reason));
            }
            Err(e) => self.cannot_read(e),
        }
    }

    /// The file exists but cannot be read: forget its stamp, so it is read again next time
    /// even if it comes back unchanged.
    fn cannot_read(&mut self, e: io::Error) {
        (self.stamp, self.seen) = (None, true);
        self.problem = Some(e.to_string());
    }
}

fn read_file(path: &Path, regions: &Regions) -> io::Result<Contents> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::Missing),
        Err(e) => return Err(e),
    };
    // Stamped before reading: anything appended meanwhile shows as a change next time.
    let stamp = Stamp::of(&file.metadata()?);
    let mut bytes = Vec::with_capacity(stamp.len.min(64 << 20) as usize);
    file.read_to_end(&mut bytes)?;
    Ok(match parse(&bytes, regions) {
        Ok((numbers, bad)) => Contents::Numbers(stamp, numbers, bad),
        Err(reason) => Contents::NotText(stamp, reason),
    })
}

/// The numbers of a do-not-call file's bytes, and its first bad line; an error when the bytes
/// are not text.
fn parse(bytes: &[u8], regions: &Regions) -> Result<(HashSet<E164>, Option<BadLine>), String> {
    let text = super::decode(bytes)?;
    let mut numbers = HashSet::new();
    let mut bad: Option<BadLine> = None;
    for (line, content) in super::numbered_lines(text) {
        let content = content
            .split_once('#')
            .map_or(content, |(before, _)| before);
        if content.trim().is_empty() {
            continue;
        }
        let field = content
            .split_once(',')
            .map_or(content, |(number, _)| number);
        match parse_number(field, regions) {
            Ok(read) => numbers.extend(read),
            Err(e) => match &mut bad {
                Some(first) => first.more += 1,
                None => {
                    bad = Some(BadLine {
                        line,
                        reason: e.to_string(),
                        more: 0,
                    })
                }
            },
        }
    }
    Ok((numbers, bad))
}

impl DncList {
    /// Load every file; national formats are read in `default_region`. See [`DncList::load_in`].
    pub fn load(files: &[PathBuf], default_region: Option<&str>) -> Result<DncList, DncError> {
        Self::load_in(files, default_region, false)
    }

    /// Load every file. One number per line, optionally followed by `,` or whitespace and a
    /// note; `#` starts a comment; a national-format line is read in `default_region` and, with
    /// `nanp`, as a North American number too (`2025550113`, `(202) 555-0118`), every valid
    /// reading listed. Only the first file may be missing (it is created on the first opt-out);
    /// a line that is not a number is an error naming it.
    pub fn load_in(
        files: &[PathBuf],
        default_region: Option<&str>,
        nanp: bool,
    ) -> Result<DncList, DncError> {
        let regions = Regions {
            default: default_region.map(str::to_string),
            nanp,
        };
        let mut lists = Vec::with_capacity(files.len());
        for (i, path) in files.iter().enumerate() {
            let read = read_file(path, &regions).map_err(|source| DncError::Read {
                path: path.clone(),
                source,
            })?;
            lists.push(match read {
                Contents::Missing if i == 0 => FileList::default(),
                Contents::Missing => return Err(DncError::Missing { path: path.clone() }),
                Contents::NotText(_, reason) => {
                    return Err(DncError::NotText {
                        path: path.clone(),
                        reason,
                    });
                }
                Contents::Numbers(_, _, Some(bad)) => {
                    return Err(DncError::Line {
                        path: path.clone(),
                        line: bad.line,
                        reason: bad.reason,
                        more: bad.more,
                    });
                }
                Contents::Numbers(stamp, numbers, None) => FileList {
                    stamp: Some(stamp),
                    seen: true,
                    numbers,
                    problem: None,
                },
            });
        }
        Ok(DncList {
            files: files.to_vec(),
            lists,
            regions,
            paused: None,
        })
    }

    /// Re-read every file that changed on disk since it was read (only metadata is read when
    /// none did), adding the numbers it lists now. Numbers are never removed: a number taken off
    /// a list by hand stays listed until the next run. A file that existed and is now missing,
    /// unreadable, not text or has a line that is not a number makes the list unavailable.
    pub fn refresh(&mut self) -> Refresh {
        let mut problem = None;
        for (path, list) in self.files.iter().zip(&mut self.lists) {
            list.refresh(path, &self.regions);
            if problem.is_none()
                && let Some(reason) = &list.problem
            {
                problem = Some(Unavailable {
                    path: path.clone(),
                    reason: reason.clone(),
                });
            }
        }
        match (problem, self.paused.take()) {
            (None, None) => Refresh::Ready,
            (None, Some(before)) => Refresh::Resumed(before.path),
            (Some(problem), before) => {
                let news = before.as_ref() != Some(&problem);
                self.paused = Some(problem.clone());
                Refresh::Unavailable { problem, news }
            }
        }
    }

    /// Whether the last refresh found a list it cannot read.
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    pub fn contains(&self, number: &E164) -> bool {
        self.lists.iter().any(|list| list.numbers.contains(number))
    }

    /// Record an opt-out: append `<number>,<note>` to the first file (creating it and its
    /// folder), synced to disk before returning. A number the first file already lists is not
    /// appended again.
    pub fn add(&mut self, number: &E164, note: &str) -> Result<(), DncError> {
        let (Some(path), Some(list)) = (self.files.first(), self.lists.first_mut()) else {
            return Err(DncError::NoFile);
        };
        if list.numbers.contains(number) {
            return Ok(());
        }
        let write_error = |source| DncError::Write {
            path: path.clone(),
            source,
        };
        let note = safe_note(note);
        let mut line = if note.is_empty() {
            format!("{number}\n")
        } else {
            format!("{number},{note}\n")
        };

        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(write_error)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(write_error)?;
        let before = Stamp::of(&file.metadata().map_err(write_error)?);
        if before.len > 0 && !ends_with_newline(&mut file, before.len).map_err(write_error)? {
            // A hand-edited file may lack its final newline; the number must not join that line.
            line.insert(0, '\n');
        }
        file.write_all(line.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        if before.len == 0 {
            // The file may be new: its directory entry must be durable too.
            File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(write_error)?;
        }
        let after = Stamp::of(&file.metadata().map_err(write_error)?);

        list.numbers.insert(number.clone());
        // Skip the re-read only when the file is exactly what was read plus this line; if anyone
        // else wrote to it meanwhile, the next refresh reads it again.
        if list.stamp == Some(before) && after.len == before.len + line.len() as u64 {
            list.stamp = Some(after);
        }
        Ok(())
    }

    /// Distinct numbers over every file.
    pub fn len(&self) -> usize {
        self.lists
            .iter()
            .enumerate()
            .map(|(i, list)| {
                list.numbers
                    .iter()
                    .filter(|n| !self.lists[..i].iter().any(|l| l.numbers.contains(*n)))
                    .count()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.iter().all(|list| list.numbers.is_empty())
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// Every reading of the number at the start of `field`. A note may follow after whitespace,
/// and national numbers contain spaces, so the longest run of words that is a number wins.
fn parse_number(field: &str, regions: &Regions) -> Result<Vec<E164>, PhoneError> {
    let field = field.trim();
    let read = |text: &str| -> Result<Vec<E164>, PhoneError> {
        let mut numbers = Vec::with_capacity(1);
        // The error is the default region's: the North American reading is only a guess.
        let error = match E164::parse_with_region(text, regions.default.as_deref()) {
            Ok(number) => {
                numbers.push(number);
                None
            }
            Err(e) => Some(e),
        };
        if regions.nanp
            && let Ok(number) = E164::parse_with_region(text, Some("US"))
            && !numbers.contains(&number)
        {
            numbers.push(number);
        }
        match error {
            Some(e) if numbers.is_empty() => Err(e),
            _ => Ok(numbers),
        }
    };
    match read(field) {
        Ok(numbers) => Ok(numbers),
        Err(e) => field
            .rmatch_indices(char::is_whitespace)
            .find_map(|(end, _)| read(&field[..end]).ok())
            .ok_or(e),
    }
}

/// A note on one line that cannot be mistaken for another field.
fn safe_note(note: &str) -> String {
    note.chars()
        .map(|c| match c {
            ',' => ';',
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => ' ',
            c => c,
        })
        .collect::<String>()
        .trim()
        .to_string()
}

fn ends_with_newline(file: &mut File, len: u64) -> io::Result<bool> {
    let mut last = [0u8];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> E164 {
        E164::parse(s).unwrap()
    }

    fn load(files: &[PathBuf], region: Option<&str>, nanp: bool) -> DncList {
        DncList::load_in(files, region, nanp).unwrap()
    }

    fn load_err(files: &[PathBuf], region: Option<&str>, nanp: bool) -> String {
        DncList::load_in(files, region, nanp)
            .unwrap_err()
            .to_string()
    }

    fn unavailable(refresh: Refresh) -> (String, bool) {
        match refresh {
            Refresh::Unavailable { problem, news } => (problem.to_string(), news),
            other => panic!("expected the list to be unavailable, got {other:?}"),
        }
    }

    #[test]
    fn missing_first_file_is_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        let mut list = DncList::load(std::slice::from_ref(&path), None).unwrap();
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
        assert_eq!(list.files(), [path]);
        // It never existed: nothing is missing.
        assert_eq!(list.refresh(), Refresh::Ready);
    }

    #[test]
    fn a_missing_list_other_than_the_first_stops_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            dir.path().join("opt-outs.txt"),
            dir.path().join("national.txt"),
        ];
        let e = load_err(&files, None, false);
        assert!(
            e.starts_with(&format!(
                "do-not-call list {} does not exist: create it",
                files[1].display()
            )),
            "{e}"
        );
        std::fs::write(&files[1], "").unwrap();
        assert!(load(&files, None, false).is_empty());
    }

    #[test]
    fn reads_numbers_notes_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(
            &a,
            "# opt-outs\n\
             +14155550100\n\
             +1 415 555 0101, asked on 2024-05-01, twice\n\
             (415) 555-0102 called back   # by hand\n\
             +14155550103\tnote 2024\n\
             \n   \n",
        )
        .unwrap();
        // Windows line ends and a BOM.
        let b = dir.path().join("b.txt");
        std::fs::write(&b, b"\xEF\xBB\xBF+442071838750\r\n+14155550100\r\n").unwrap();

        let list = load(&[a, b], Some("US"), false);
        for n in [
            "+14155550100",
            "+14155550101",
            "+14155550102",
            "+14155550103",
            "+442071838750",
        ] {
            assert!(list.contains(&num(n)), "{n}");
        }
        assert!(!list.contains(&num("+14155550104")));
        assert_eq!(list.len(), 5);
    }

    /// Once a warning, and the line's number was dialed.
    #[test]
    fn a_line_that_is_not_a_number_stops_the_load_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        std::fs::write(&path, "+14155550100\nnot a number\n,no number\n+12\n").unwrap();
        let e = load_err(std::slice::from_ref(&path), None, false);
        assert_eq!(
            e,
            format!(
                "do-not-call list {}, line 2: 'not a number' contains characters that are not part of a phone number; correct the line or make it a comment with # (2 more such lines)",
                path.display()
            )
        );
        // Old Mac line ends are lines too.
        std::fs::write(&path, "+14155550100\r+14155550101\rnope\r").unwrap();
        let e = load_err(std::slice::from_ref(&path), None, false);
        assert!(e.contains(", line 3: 'nope'"), "{e}");
        // A control character in the line is not echoed.
        std::fs::write(&path, "+1415\x1b[2J5550100\n").unwrap();
        let e = load_err(std::slice::from_ref(&path), None, false);
        assert!(e.contains("\\u{1b}[2J") && !e.contains('\x1b'), "{e}");
    }

    /// Once skipped with a warning without DEFAULT_REGION, and these numbers were dialed.
    #[test]
    fn common_us_formats_are_read_in_north_america() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        std::fs::write(
            &path,
            "2025550113\n12025550116\n1-202-555-0115\n202.555.0117\n(202) 555-0118\n",
        )
        .unwrap();
        for (region, nanp) in [(Some("US"), false), (None, true), (Some("ca"), true)] {
            let list = load(std::slice::from_ref(&path), region, nanp);
            assert_eq!(list.len(), 5);
        }
        let list = load(std::slice::from_ref(&path), None, true);
        for n in 13..=18 {
            if n != 14 {
                assert!(list.contains(&num(&format!("+120255501{n}"))), "{n}");
            }
        }
        assert_eq!(list.len(), 5);
        // Without a region they cannot be read, and that is an error, not a warning.
        let e = load_err(std::slice::from_ref(&path), None, false);
        assert!(
            e.contains(", line 1: '2025550113' is a national number") && e.contains("4 more"),
            "{e}"
        );
        // Only North American forms are guessed: another national number still needs a region.
        std::fs::write(&path, "020 7183 8750\n2025550113\n").unwrap();
        let e = load_err(std::slice::from_ref(&path), None, true);
        assert!(
            e.contains(", line 1: '020 7183 8750' is a national number; write it as +<country code><number>, or set a default region"),
            "{e}"
        );
        // A line valid in the default region and in North America is listed both ways.
        let list = load(std::slice::from_ref(&path), Some("GB"), true);
        assert!(list.contains(&num("+442071838750")));
        assert!(list.contains(&num("+12025550113")));
        assert!(list.contains(&num("+442025550113")));
    }

    #[test]
    fn a_file_that_is_not_text_is_one_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        let utf16: Vec<u8> = "\u{feff}+14155550100\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        for (bytes, says) in [
            (utf16, "is UTF-16 text"),
            (
                b"+14155550100\n\x00\x01\x02\x1b[2J".to_vec(),
                "line 2 has a NUL byte",
            ),
            (
                b"+14155550100\ncaf\xE9\n".to_vec(),
                "line 2 is in another encoding",
            ),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let e = load_err(std::slice::from_ref(&path), None, false);
            assert!(e.contains(says), "{e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = DncList::load(&[dir.path().to_path_buf()], None).unwrap_err();
        assert!(matches!(err, DncError::Read { .. }), "{err}");
    }

    /// Once read as an empty list, and its numbers were dialed.
    #[test]
    fn a_list_that_disappears_pauses_dialing_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        let moved = dir.path().join("dnc.txt.bak");
        std::fs::write(&path, "+14155550100\n").unwrap();
        let mut list = load(std::slice::from_ref(&path), None, false);
        assert_eq!(list.refresh(), Refresh::Ready);

        std::fs::rename(&path, &moved).unwrap();
        let (message, news) = unavailable(list.refresh());
        assert!(news);
        assert_eq!(
            message,
            format!(
                "dialing paused: do-not-call list {} cannot be read (it no longer exists: it was deleted or renamed); dialing resumes when it can",
                path.display()
            )
        );
        assert!(list.is_paused());
        assert!(list.contains(&num("+14155550100")));
        // Said once, not at every check.
        assert!(!unavailable(list.refresh()).1);

        std::fs::rename(&moved, &path).unwrap();
        assert_eq!(list.refresh(), Refresh::Resumed(path.clone()));
        assert!(!list.is_paused());
        assert_eq!(list.refresh(), Refresh::Ready);
    }

    #[test]
    fn a_list_that_cannot_be_read_or_has_a_bad_line_pauses_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        std::fs::write(&path, "+14155550100\n").unwrap();
        let mut list = load(std::slice::from_ref(&path), None, false);

        // Half an append: the last line is not a number yet.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"+1415555").unwrap();
        let (message, _) = unavailable(list.refresh());
        assert!(
            message.contains("(line 2: '+1415555' has 6 digits"),
            "{message}"
        );
        assert!(!unavailable(list.refresh()).1);
        file.write_all(b"0101\n").unwrap();
        assert_eq!(list.refresh(), Refresh::Resumed(path.clone()));
        assert!(list.contains(&num("+14155550101")));

        // A folder where the file was: it exists and cannot be read.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let (message, news) = unavailable(list.refresh());
        assert!(news && message.contains("cannot be read ("), "{message}");
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, b"\xFF\xFE+\x001\x00").unwrap();
        let (message, news) = unavailable(list.refresh());
        assert!(news && message.contains("UTF-16"), "{message}");
        std::fs::write(&path, "").unwrap();
        assert_eq!(list.refresh(), Refresh::Resumed(path.clone()));
        assert!(list.contains(&num("+14155550100")) && list.contains(&num("+14155550101")));
    }

    /// Once a rewrite read while empty (or shorter) dropped numbers from the list.
    #[test]
    fn the_list_only_grows_during_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        std::fs::write(&path, "+14155550100\n+14155550101\n").unwrap();
        let mut list = load(std::slice::from_ref(&path), None, false);

        // Truncate-then-write, read in the window.
        std::fs::write(&path, "").unwrap();
        assert_eq!(list.refresh(), Refresh::Ready);
        std::fs::write(&path, "+14155550101\n+14155550102\n").unwrap();
        assert_eq!(list.refresh(), Refresh::Ready);
        for n in ["+14155550100", "+14155550101", "+14155550102"] {
            assert!(list.contains(&num(n)), "{n}");
        }
        assert_eq!(list.len(), 3);
        // The next run reads the file as it is.
        assert_eq!(load(std::slice::from_ref(&path), None, false).len(), 2);
    }

    #[test]
    fn add_creates_the_file_once_per_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lists/opt-outs.txt");
        let mut list = DncList::load(std::slice::from_ref(&path), None).unwrap();
        let n = num("+14155550100");
        list.add(&n, " said: stop, now\r\nplease\u{2028}").unwrap();
        list.add(&n, "again").unwrap();
        list.add(&num("+14155550101"), "").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "+14155550100,said: stop; now  please\n+14155550101\n"
        );
        assert!(list.contains(&n));
        assert_eq!(list.refresh(), Refresh::Ready);
        assert!(list.contains(&n));
        let reloaded = load(&[path], None, false);
        assert_eq!(reloaded.len(), 2);
    }

    #[test]
    fn an_opt_out_is_recorded_while_the_list_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        std::fs::write(&path, "+14155550100\n").unwrap();
        let mut list = load(std::slice::from_ref(&path), None, false);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(list.refresh(), Refresh::Unavailable { .. }));
        list.add(&num("+14155550101"), "").unwrap();
        assert_eq!(list.refresh(), Refresh::Resumed(path.clone()));
        assert!(list.contains(&num("+14155550100")) && list.contains(&num("+14155550101")));
    }

    #[test]
    fn add_starts_a_new_line_after_a_hand_edit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        std::fs::write(&path, "+14155550100").unwrap();
        let mut list = DncList::load(std::slice::from_ref(&path), None).unwrap();
        list.add(&num("+14155550101"), "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "+14155550100\n+14155550101,x\n"
        );
        list.refresh();
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn add_needs_a_writable_first_file() {
        let mut none = DncList::load(&[], None).unwrap();
        assert!(matches!(
            none.add(&num("+14155550100"), ""),
            Err(DncError::NoFile)
        ));

        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("lists");
        let mut list = DncList::load(&[folder.join("dnc.txt")], None).unwrap();
        // The folder cannot be created where a file now stands.
        std::fs::write(&folder, "").unwrap();
        let err = list.add(&num("+14155550100"), "").unwrap_err();
        assert!(matches!(err, DncError::Write { .. }), "{err}");
        assert!(!list.contains(&num("+14155550100")));
    }

    #[test]
    fn two_lists_on_one_file_see_each_others_opt_outs() {
        let dir = tempfile::tempdir().unwrap();
        let files = [dir.path().join("dnc.txt"), dir.path().join("other.txt")];
        std::fs::write(&files[1], "").unwrap();
        let mut a = load(&files, None, false);
        let mut b = load(&files, None, false);
        let (one, two, three) = (
            num("+14155550101"),
            num("+14155550102"),
            num("+14155550103"),
        );

        a.add(&one, "a").unwrap();
        assert!(!b.contains(&one));
        b.refresh();
        assert!(b.contains(&one));

        // Appends in quick succession, possibly within one mtime tick.
        b.add(&two, "b").unwrap();
        a.add(&three, "a").unwrap();
        a.refresh();
        b.refresh();
        for list in [&a, &b] {
            assert!(list.contains(&one) && list.contains(&two) && list.contains(&three));
            assert_eq!(list.len(), 3);
        }
        // b already saw `one` appended by a: not written twice.
        b.add(&one, "again").unwrap();
        assert_eq!(
            std::fs::read_to_string(&files[0]).unwrap().lines().count(),
            3
        );

        // Other files are watched too; a number removed by hand stays listed for this run.
        std::fs::write(&files[1], "+14155550104\n+14155550105\n").unwrap();
        a.refresh();
        assert!(a.contains(&num("+14155550105")));
        std::fs::write(&files[1], "+14155550104\n").unwrap();
        a.refresh();
        assert!(a.contains(&num("+14155550105")));
    }

    /// Whatever a list file holds, loading and refreshing it end in numbers or one printable
    /// line; nothing panics.
    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        const PIECES: [&[u8]; 18] = [
            b"+1",
            b"202",
            b"555",
            b"0100",
            b"\n",
            b"\r",
            b"\r\n",
            b"#",
            b",",
            b" ",
            b"(",
            b")",
            b"-",
            b"00",
            b"\xEF\xBB\xBF",
            b"\xFF\xFE",
            b"\x00",
            b"\xE9",
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        let mut running = DncList::load(std::slice::from_ref(&path), None).unwrap();
        for round in 0..1500 {
            let mut bytes = Vec::new();
            for _ in 0..rng.random_range(0..40) {
                if rng.random_bool(0.2) {
                    bytes.push(rng.random());
                } else {
                    bytes.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())]);
                }
            }
            let (region, nanp) = [
                (None, false),
                (Some("US"), false),
                (Some("GB"), true),
                (Some("zz"), true),
            ][round % 4];
            let regions = Regions {
                default: region.map(str::to_string),
                nanp,
            };
            if let Err(e) = parse(&bytes, &regions) {
                assert!(!e.is_empty() && !e.chars().any(char::is_control), "{e:?}");
            }
            if round % 10 == 0 {
                std::fs::write(&path, &bytes).unwrap();
                if let Err(e) = DncList::load_in(std::slice::from_ref(&path), region, nanp) {
                    let e = e.to_string();
                    assert!(!e.chars().any(char::is_control), "{e:?}");
                }
                if let Refresh::Unavailable { problem, .. } = running.refresh() {
                    let e = problem.to_string();
                    assert!(!e.chars().any(char::is_control), "{e:?}");
                }
            }
        }
    }
}

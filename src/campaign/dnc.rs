//! Do-not-call lists: plain text files of numbers, re-read whenever they change on disk (a person
//! or another dialer may edit them mid-campaign), and appended to durably when a callee opts out.

use crate::phone::{E164, PhoneError};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why a do-not-call list cannot be read or an opt-out cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum DncError {
    #[error("cannot read do-not-call list {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot record an opt-out in do-not-call list {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "no do-not-call file is configured, so an opt-out cannot be recorded; name one in the campaign file"
    )]
    NoFile,
}

/// A line of a do-not-call file that is not a number; it is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DncWarning {
    pub path: PathBuf,
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for DncWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
    }
}

/// The numbers of one or more do-not-call files. Opt-outs go to the first file.
#[derive(Debug)]
pub struct DncList {
    files: Vec<PathBuf>,
    lists: Vec<FileList>,
    default_region: Option<String>,
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

/// One file's numbers as last read; `stamp` is `None` while the file does not exist.
#[derive(Debug, Default)]
struct FileList {
    stamp: Option<Stamp>,
    numbers: HashSet<E164>,
    /// Bad lines as (line, reason), so a re-read reports only new ones.
    warnings: Vec<(u64, String)>,
}

impl FileList {
    fn read(path: &Path, region: Option<&str>) -> Result<Self, DncError> {
        let read_error = |source| DncError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(read_error(e)),
        };
        // Stamped before reading: anything appended meanwhile shows as a change next time.
        let stamp = Stamp::of(&file.metadata().map_err(read_error)?);
        let mut bytes = Vec::with_capacity(stamp.len as usize);
        file.read_to_end(&mut bytes).map_err(read_error)?;

        let mut list = FileList {
            stamp: Some(stamp),
            ..Self::default()
        };
        for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            let content = line.split_once('#').map_or(line, |(before, _)| before);
            if content.trim().is_empty() {
                continue;
            }
            let field = content
                .split_once(',')
                .map_or(content, |(number, _)| number);
            match parse_number(field, region) {
                Ok(number) => {
                    list.numbers.insert(number);
                }
                Err(e) => list.warnings.push((i as u64 + 1, e.to_string())),
            }
        }
        Ok(list)
    }
}

impl DncList {
    /// Load every file. A missing file is an empty list (the first is created on the first
    /// opt-out). One number per line, optionally followed by `,` or whitespace and a note; `#`
    /// starts a comment; national formats are read in `default_region`. Lines that are not
    /// numbers are returned as warnings.
    pub fn load(
        files: &[PathBuf],
        default_region: Option<&str>,
    ) -> Result<(DncList, Vec<DncWarning>), DncError> {
        let lists = files
            .iter()
            .map(|path| FileList::read(path, default_region))
            .collect::<Result<Vec<_>, _>>()?;
        let warnings = files
            .iter()
            .zip(&lists)
            .flat_map(|(path, list)| warnings_of(path, &list.warnings))
            .collect();
        let list = DncList {
            files: files.to_vec(),
            lists,
            default_region: default_region.map(str::to_string),
        };
        Ok((list, warnings))
    }

    /// Re-read every file that changed on disk since it was read; only metadata is read when
    /// none did. Returns warnings for bad lines not reported before.
    pub fn refresh(&mut self) -> Result<Vec<DncWarning>, DncError> {
        let mut warnings = Vec::new();
        for (path, list) in self.files.iter().zip(&mut self.lists) {
            let stamp = match std::fs::metadata(path) {
                Ok(meta) => Some(Stamp::of(&meta)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(DncError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            };
            if stamp == list.stamp {
                continue;
            }
            let fresh = FileList::read(path, self.default_region.as_deref())?;
            let new: Vec<(u64, String)> = fresh
                .warnings
                .iter()
                .filter(|w| !list.warnings.contains(w))
                .cloned()
                .collect();
            warnings.extend(warnings_of(path, &new));
            *list = fresh;
        }
        Ok(warnings)
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

fn warnings_of(path: &Path, warnings: &[(u64, String)]) -> Vec<DncWarning> {
    warnings
        .iter()
        .map(|(line, reason)| DncWarning {
            path: path.to_path_buf(),
            line: *line,
            reason: reason.clone(),
        })
        .collect()
}

/// The number at the start of `field`. A note may follow after whitespace, and national numbers
/// contain spaces, so the longest run of words that is a number wins.
fn parse_number(field: &str, region: Option<&str>) -> Result<E164, PhoneError> {
    let field = field.trim();
    match E164::parse_with_region(field, region) {
        Ok(number) => Ok(number),
        Err(e) => field
            .rmatch_indices(char::is_whitespace)
            .find_map(|(end, _)| E164::parse_with_region(&field[..end], region).ok())
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

    #[test]
    fn missing_file_is_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        let (list, warnings) = DncList::load(std::slice::from_ref(&path), None).unwrap();
        assert!(list.is_empty() && warnings.is_empty());
        assert_eq!(list.len(), 0);
        assert_eq!(list.files(), [path]);
    }

    #[test]
    fn reads_numbers_notes_and_comments_and_warns_on_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(
            &a,
            "# opt-outs\n\
             +14155550100\n\
             +1 415 555 0101, asked on 2024-05-01, twice\n\
             (415) 555-0102 called back   # by hand\n\
             +14155550103\tnote 2024\n\
             \n   \n\
             not a number\n\
             ,no number\n\
             +12\n",
        )
        .unwrap();
        let b = dir.path().join("b.txt");
        std::fs::write(&b, b"+442071838750\r\n+14155550100\r\ncaf\xE9\r\n").unwrap();

        let (list, warnings) = DncList::load(&[a.clone(), b.clone()], Some("US")).unwrap();
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
        let found: Vec<(&Path, u64)> = warnings
            .iter()
            .map(|w| (w.path.as_path(), w.line))
            .collect();
        assert_eq!(
            found,
            [
                (a.as_path(), 8),
                (a.as_path(), 9),
                (a.as_path(), 10),
                (b.as_path(), 3)
            ]
        );
        assert_eq!(warnings[1].reason, "the phone number is empty");
        assert!(
            warnings[0]
                .to_string()
                .starts_with(&format!("{}:8: ", a.display()))
        );
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = DncList::load(&[dir.path().to_path_buf()], None).unwrap_err();
        assert!(matches!(err, DncError::Read { .. }), "{err}");
    }

    #[test]
    fn add_creates_the_file_once_per_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lists/opt-outs.txt");
        let (mut list, _) = DncList::load(std::slice::from_ref(&path), None).unwrap();
        let n = num("+14155550100");
        list.add(&n, " said: stop, now\r\nplease\u{2028}").unwrap();
        list.add(&n, "again").unwrap();
        list.add(&num("+14155550101"), "").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "+14155550100,said: stop; now  please\n+14155550101\n"
        );
        assert!(list.contains(&n));
        assert!(list.refresh().unwrap().is_empty());
        assert!(list.contains(&n));
        let (reloaded, warnings) = DncList::load(&[path], None).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(reloaded.len(), 2);
    }

    #[test]
    fn add_starts_a_new_line_after_a_hand_edit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        std::fs::write(&path, "+14155550100").unwrap();
        let (mut list, _) = DncList::load(std::slice::from_ref(&path), None).unwrap();
        list.add(&num("+14155550101"), "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "+14155550100\n+14155550101,x\n"
        );
        list.refresh().unwrap();
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn add_needs_a_writable_first_file() {
        let (mut none, _) = DncList::load(&[], None).unwrap();
        assert!(matches!(
            none.add(&num("+14155550100"), ""),
            Err(DncError::NoFile)
        ));

        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("lists");
        let (mut list, _) = DncList::load(&[folder.join("dnc.txt")], None).unwrap();
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
        let (mut a, _) = DncList::load(&files, None).unwrap();
        let (mut b, _) = DncList::load(&files, None).unwrap();
        let (one, two, three) = (
            num("+14155550101"),
            num("+14155550102"),
            num("+14155550103"),
        );

        a.add(&one, "a").unwrap();
        assert!(!b.contains(&one));
        b.refresh().unwrap();
        assert!(b.contains(&one));

        // Appends in quick succession, possibly within one mtime tick.
        b.add(&two, "b").unwrap();
        a.add(&three, "a").unwrap();
        a.refresh().unwrap();
        b.refresh().unwrap();
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

        // Other files are watched too, including a person removing a number.
        std::fs::write(&files[1], "+14155550104\n+14155550105\n").unwrap();
        a.refresh().unwrap();
        assert!(a.contains(&num("+14155550105")));
        std::fs::write(&files[1], "+14155550104\n").unwrap();
        a.refresh().unwrap();
        assert!(!a.contains(&num("+14155550105")));
    }

    #[test]
    fn refresh_reports_each_bad_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnc.txt");
        std::fs::write(&path, "+14155550100\noops\n").unwrap();
        let (mut list, warnings) = DncList::load(std::slice::from_ref(&path), None).unwrap();
        assert_eq!(warnings.len(), 1);

        let (mut other, _) = DncList::load(std::slice::from_ref(&path), None).unwrap();
        other.add(&num("+14155550101"), "").unwrap();
        assert!(list.refresh().unwrap().is_empty());
        assert!(list.contains(&num("+14155550101")));

        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"still oops\n").unwrap();
        let warnings = list.refresh().unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].line, 4);
        assert!(list.refresh().unwrap().is_empty());
    }
}

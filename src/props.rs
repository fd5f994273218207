//! Support for the property tests of the parsers that read outside input: a seeded generator
//! (so a failure repeats), the case count, inputs that are garbage or damaged valid messages,
//! and what a rejection's message must look like.
//!
//! `DIALER_PROPTEST_CASES=200000 cargo test --lib` runs every property longer; without it each
//! runs 2,000 cases (the slow ones a tenth), so the whole suite stays fast.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Cases each property runs; expensive properties run a fixed fraction of it.
pub(crate) fn cases() -> usize {
    match std::env::var("DIALER_PROPTEST_CASES") {
        Err(_) => 2000,
        // A typo must not quietly run the default and look like a long run.
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DIALER_PROPTEST_CASES={text:?} is not a count")),
    }
}

/// Runs `property` on `cases` inputs made by `generate` from an RNG seeded with `seed`. When the
/// property panics, the panic names the seed, the case and the input (shortened), since the
/// input is all one needs to reproduce it.
pub(crate) fn check<T: Debug>(
    seed: u64,
    cases: usize,
    mut generate: impl FnMut(&mut StdRng) -> T,
    mut property: impl FnMut(&T),
) {
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..cases {
        let input = generate(&mut rng);
        if catch_unwind(AssertUnwindSafe(|| property(&input))).is_err() {
            panic!(
                "property failed (seed {seed}, case {case}) for {}",
                shorten(&format!("{input:?}"))
            );
        }
    }
}

/// Bytes shown as text in a failure report, for inputs that are mostly text.
pub(crate) struct Lossy(pub(crate) Vec<u8>);

impl Debug for Lossy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// At most a few hundred characters of `text`, for a failure report.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 400;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
        None => text.to_string(),
    }
}

/// A rejection's message as a person reads it: one non-empty line, nothing that moves the
/// cursor or reorders text, and short whatever the input's size.
pub(crate) fn assert_clear(message: &str, max_chars: usize) {
    assert!(!message.trim().is_empty(), "empty message");
    assert!(
        !message.chars().any(hidden),
        "control character in {:?}",
        shorten(message)
    );
    let chars = message.chars().count();
    assert!(
        chars <= max_chars,
        "{chars} characters, more than {max_chars}: {:?}",
        shorten(message)
    );
}

/// Characters that must never reach a terminal or a log line from outside input (the set
/// `phone::escape_controls` escapes).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Up to `max_len` random bytes, often short: most parsers fail on the first few.
pub(crate) fn random_bytes(rng: &mut StdRng, max_len: usize) -> Vec<u8> {
    let len = if rng.random_bool(0.8) {
        rng.random_range(0..=max_len.min(32))
    } else {
        rng.random_range(0..=max_len)
    };
    (0..len).map(|_| rng.random()).collect()
}

/// Characters that break parsers and terminals: controls, escapes, bidi overrides, a BOM,
/// the largest code points, and the quote and markup characters of JSON, XML and forms.
const NASTY: &[char] = &[
    '\0',
    '\t',
    '\n',
    '\r',
    '\u{1b}',
    '\u{7f}',
    '\u{85}',
    '\u{200b}',
    '\u{202e}',
    '\u{2028}',
    '\u{feff}',
    '\u{fffd}',
    '\u{10ffff}',
    '"',
    '\'',
    '\\',
    '<',
    '>',
    '&',
    ';',
    '=',
    '%',
    '+',
    '/',
    ':',
    '?',
    '#',
    '[',
    ']',
    '{',
    '}',
    ',',
    ' ',
    'é',
    '漢',
    '😀',
];

/// A string of up to `max_len` characters, drawn from `pieces`, [`NASTY`] and any code point.
pub(crate) fn random_text(rng: &mut StdRng, pieces: &[&str], max_len: usize) -> String {
    let len = rng.random_range(0..=max_len);
    let mut out = String::new();
    for _ in 0..len {
        match rng.random_range(0..10) {
            0..=3 if !pieces.is_empty() => out.push_str(pieces[rng.random_range(0..pieces.len())]),
            4..=6 => out.push(NASTY[rng.random_range(0..NASTY.len())]),
            7 => out.push(char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('?')),
            _ => out.push(rng.random_range(b'a'..=b'z') as char),
        }
    }
    out
}

/// A long string (tens of kilobytes): what a message must never echo whole.
pub(crate) fn long_text(rng: &mut StdRng) -> String {
    let unit = ["x", "\u{1b}[2J", "é", "\"", "\\n"][rng.random_range(0..5)];
    unit.repeat(rng.random_range(1_000..20_000))
}

/// Bytes that are not UTF-8: a stray continuation byte, an overlong encoding, a UTF-16
/// surrogate, a code point past U+10FFFF, a truncated sequence, and bytes never used.
const NOT_UTF8: &[&[u8]] = &[
    b"\x80",
    b"\xC0\xAF",
    b"\xED\xA0\x80",
    b"\xF4\x90\x80\x80",
    b"\xE2\x82",
    b"\xFF",
    b"\xFE",
];

/// `valid` damaged one to three times: truncated, bytes flipped, inserted, deleted or
/// repeated, or invalid UTF-8 spliced in.
pub(crate) fn mutate_bytes(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        let at = rng.random_range(0..=bytes.len());
        match rng.random_range(0..6) {
            0 => bytes.truncate(at),
            1 if at < bytes.len() => bytes[at] ^= 1 << rng.random_range(0..8),
            2 => {
                let junk = random_bytes(rng, 8);
                bytes.splice(at..at, junk);
            }
            3 => {
                let end = rng.random_range(at..=bytes.len());
                bytes.drain(at..end);
            }
            4 => {
                let end = rng.random_range(at..=bytes.len().min(at + 16));
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => {
                let bad = NOT_UTF8[rng.random_range(0..NOT_UTF8.len())];
                bytes.splice(at..at, bad.iter().copied());
            }
        }
    }
    bytes
}

/// Replaces a value in a JSON document before it is written out as text, for what a
/// `serde_json::Value` cannot hold (numbers past any type, nesting past any limit).
const HOLE: &str = "\u{1}hole\u{1}";

/// Text that takes the place of one value of a JSON document: the wrong type, a number no
/// field holds, nesting deeper than any parser allows, a string that is not Unicode.
fn hostile_json(rng: &mut StdRng) -> String {
    match rng.random_range(0..16) {
        0 => "null".into(),
        1 => "true".into(),
        2 => "0".into(),
        3 => "-1".into(),
        4 => "18446744073709551616".into(),
        5 => "-9223372036854775809".into(),
        6 => "1e400".into(),
        7 => "1.5".into(),
        8 => "\"\"".into(),
        9 => serde_json::to_string(&long_text(rng)).unwrap(),
        10 => serde_json::to_string(&random_text(rng, &[], 20)).unwrap(),
        11 => "[]".into(),
        12 => "{}".into(),
        13 => {
            let depth = rng.random_range(100..5_000);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        }
        14 => r#""\ud800""#.into(),
        _ => r#"{"a":{"b":[1,"2",{"c":null}]}}"#.into(),
    }
}

/// `valid` (a JSON object) with one value replaced by [`hostile_json`], or one key removed,
/// or a key added; sometimes then damaged as bytes.
pub(crate) fn mutate_json(rng: &mut StdRng, valid: &Value) -> Vec<u8> {
    let mut doc = valid.clone();
    let mut paths = Vec::new();
    collect_paths(&doc, &mut Vec::new(), &mut paths);
    let path = &paths[rng.random_range(0..paths.len())];
    match rng.random_range(0..4) {
        0 if !path.is_empty() => remove(&mut doc, path),
        1 => {
            if let Some(Value::Object(map)) = at(&mut doc, path) {
                map.insert(random_text(rng, &["event", "type"], 3), HOLE.into());
            }
        }
        _ => {
            if let Some(v) = at(&mut doc, path) {
                *v = HOLE.into();
            }
        }
    }
    let hole = serde_json::to_string(HOLE).unwrap();
    let mut text = serde_json::to_string(&doc).unwrap();
    while let Some(i) = text.find(&hole) {
        text.replace_range(i..i + hole.len(), &hostile_json(rng));
    }
    let bytes = text.into_bytes();
    if rng.random_bool(0.2) {
        mutate_bytes(rng, &bytes)
    } else {
        bytes
    }
}

/// Where a value is inside a document: object keys and array indexes.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn collect_paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                here.push(Step::Key(k.clone()));
                collect_paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                here.push(Step::Index(i));
                collect_paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

fn remove(v: &mut Value, path: &[Step]) {
    let (last, parent) = path.split_last().expect("the root is never removed");
    match (at(v, parent), last) {
        (Some(Value::Object(map)), Step::Key(k)) => {
            map.remove(k);
        }
        (Some(Value::Array(items)), Step::Index(i)) => {
            items.remove(*i);
        }
        _ => {}
    }
}

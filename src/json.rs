//! JSON strings written straight into a frame buffer, for the two messages the bridge builds
//! a hundred times a second per call (`media` and `input.audio`). Their payload is base64,
//! which never needs escaping: checking that is cheaper than serde's escape scan, which was
//! the largest part of building those messages (BENCHMARKS.md).

use bytes::{BufMut, BytesMut};

/// Append `s` as a JSON string literal, quotes included.
pub(crate) fn write_str(out: &mut BytesMut, s: &str) {
    // Every byte is looked at, without stopping at the first that needs escaping: the
    // compiler turns the loop into vector instructions, and payloads never stop early.
    if s.bytes().fold(true, |all, b| all & plain(b)) {
        out.reserve(s.len() + 2);
        out.put_u8(b'"');
        out.extend_from_slice(s.as_bytes());
        out.put_u8(b'"');
    } else {
        serde_json::to_writer(out.writer(), s).expect("a string always serialises");
    }
}

/// A byte JSON writes as itself inside a string: printable ASCII but `"` and `\`. Every
/// base64 character is one.
fn plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn written(s: &str) -> String {
        let mut out = BytesMut::new();
        write_str(&mut out, s);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn base64_is_written_as_it_is() {
        assert_eq!(written("f/+A=="), "\"f/+A==\"");
        assert_eq!(written(""), "\"\"");
    }

    #[test]
    fn anything_else_is_escaped_as_serde_would() {
        for s in [
            "a\"b",
            "back\\slash",
            "line\nbreak",
            "tab\t",
            "\u{1}",
            "é",
            "\u{7f}",
        ] {
            assert_eq!(written(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn every_string_reads_back_as_itself() {
        const CHARS: &[char] = &[
            'A', 'z', '0', '+', '/', '=', '"', '\\', '\n', '\u{0}', '\u{7f}', 'é', '😀',
        ];
        crate::props::check(
            0x150,
            crate::props::cases(),
            |rng| {
                let len = rng.random_range(0..40);
                (0..len)
                    .map(|_| CHARS[rng.random_range(0..CHARS.len())])
                    .collect::<String>()
            },
            |s| assert_eq!(serde_json::from_str::<String>(&written(s)).unwrap(), *s),
        );
    }
}

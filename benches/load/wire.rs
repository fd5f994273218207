//! Just enough WebSocket (RFC 6455) and HTTP/1.1 for the load generator. A library would do,
//! but it would cost the generator about what the dialer spends on its own sockets; by hand the
//! generator writes each frame with one copy and reads it in place, so its cost stays well
//! below the dialer's and the figures measured on the dialer are the dialer's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};
use std::ops::Range;
use tokio::io::{AsyncRead, AsyncReadExt};

pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Append one whole frame. A client must mask its frames; the generator sends the zero key,
/// which leaves the payload as it is. The server unmasks whatever key arrives, at the same cost
/// for any key, and between two loopback ends there is no proxy for masking to protect.
pub(crate) fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], masked: bool) {
    put_header(out, opcode, payload.len(), masked);
    out.extend_from_slice(payload);
}

/// The header of a frame whose payload of `len` bytes the caller appends next.
pub(crate) fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize, masked: bool) {
    out.push(0x80 | opcode);
    let m = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xFFFF {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if masked {
        out.extend_from_slice(&[0; 4]);
    }
}

/// A close frame with a status code.
pub(crate) fn put_close(out: &mut Vec<u8>, code: u16, masked: bool) {
    put_frame(out, OP_CLOSE, &code.to_be_bytes(), masked);
}

/// The first complete frame at the start of `buf`: its opcode, where its payload lies in `buf`
/// (unmasked in place) and the frame's whole length. `None` until the frame has arrived.
pub(crate) fn parse_frame(buf: &mut [u8]) -> Option<(u8, Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let mut key = [0u8; 4];
    if masked {
        if buf.len() < at + 4 {
            return None;
        }
        key.copy_from_slice(&buf[at..at + 4]);
        at += 4;
    }
    if buf.len() < at + len {
        return None;
    }
    if masked && key != [0; 4] {
        for (i, b) in buf[at..at + len].iter_mut().enumerate() {
            *b ^= key[i & 3];
        }
    }
    Some((opcode, at..at + len, at + len))
}

/// Where `needle` starts in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The JSON string value after `key` (given with its quotes, colon and opening quote, as in
/// `"payload":"`), up to the closing quote. Escaped values are not needed here: base64 has no
/// character JSON escapes, so a backslash means the bytes were changed on the way.
pub(crate) fn string_after<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = find(json, key)? + key.len();
    let len = json[start..].iter().position(|&b| b == b'"')?;
    Some(&json[start..start + len])
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    STANDARD.encode(sha.finalize())
}

/// Read an HTTP head (up to the blank line) into `buf`; returns the head's length. What came
/// after it stays in `buf` behind the head.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            return Ok(end + 4);
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("HTTP head too long"));
        }
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A header's value in an HTTP head, by case-insensitive name.
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The bench has no test harness: it checks its own framing before it measures anything.
pub(crate) fn self_check() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        "RFC 6455's example"
    );
    for len in [0, 5, 125, 126, 300, 70_000] {
        let mut out = Vec::new();
        put_frame(&mut out, OP_TEXT, &vec![7u8; len], true);
        let (op, range, total) = parse_frame(&mut out).expect("a whole frame");
        assert_eq!((op, range.len(), total), (OP_TEXT, len, out.len()));
        assert!(parse_frame(&mut out[..total - 1]).is_none());
    }
}

//! The audio the generator sends: 20 ms of μ-law (160 bytes, any byte is a valid sample) that
//! carries its call, its sequence number and the time it was sent, followed by 144 bytes that
//! follow from those. An echo that differs from what was sent in any bit is caught.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// 20 ms of 8 kHz μ-law.
pub(crate) const FRAME: usize = 160;
/// Its base64 length, as it travels in JSON.
pub(crate) const FRAME_B64: usize = FRAME.div_ceil(3) * 4;
/// The call number the echo agent's greeting carries: no call has it.
pub(crate) const GREETING: u32 = u32::MAX;

/// The header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub call: u32,
    pub seq: u32,
    /// Nanoseconds since the round's epoch.
    pub sent_ns: u64,
}

/// One frame of audio, as base64.
pub(crate) fn encode(stamp: Stamp, out: &mut [u8; FRAME_B64]) {
    let mut raw = [0u8; FRAME];
    raw[0..4].copy_from_slice(&stamp.call.to_le_bytes());
    raw[4..8].copy_from_slice(&stamp.seq.to_le_bytes());
    raw[8..16].copy_from_slice(&stamp.sent_ns.to_le_bytes());
    fill(stamp.call, stamp.seq, &mut raw[16..]);
    let n = STANDARD
        .encode_slice(raw, out)
        .expect("the output fits by construction");
    debug_assert_eq!(n, FRAME_B64);
}

/// The frame's header if the rest of it is exactly what was sent with it.
pub(crate) fn decode(b64: &[u8]) -> Option<Stamp> {
    if b64.len() != FRAME_B64 {
        return None;
    }
    let mut raw = [0u8; FRAME + 2];
    let n = STANDARD.decode_slice(b64, &mut raw).ok()?;
    if n != FRAME {
        return None;
    }
    let stamp = Stamp {
        call: u32::from_le_bytes(raw[0..4].try_into().ok()?),
        seq: u32::from_le_bytes(raw[4..8].try_into().ok()?),
        sent_ns: u64::from_le_bytes(raw[8..16].try_into().ok()?),
    };
    let mut expected = [0u8; FRAME - 16];
    fill(stamp.call, stamp.seq, &mut expected);
    (raw[16..FRAME] == expected).then_some(stamp)
}

/// Bytes that depend on the call and the sequence number (xorshift64*).
fn fill(call: u32, seq: u32, out: &mut [u8]) {
    let mut x = (u64::from(call) << 32 | u64::from(seq)) ^ 0x9E37_79B9_7F4A_7C15;
    for chunk in out.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

pub(crate) fn self_check() {
    let stamp = Stamp {
        call: 7,
        seq: 1234,
        sent_ns: 987_654_321,
    };
    let mut b64 = [0u8; FRAME_B64];
    encode(stamp, &mut b64);
    assert_eq!(decode(&b64), Some(stamp));
    // One bit flipped anywhere is caught.
    for i in 0..FRAME_B64 - 2 {
        let mut bad = b64;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert_ne!(decode(&bad), Some(stamp), "byte {i}");
    }
}

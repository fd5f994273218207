//! The recording's file format: a canonical 44-byte WAV header, 16-bit PCM, two channels,
//! 8 kHz. PCM rather than G.711 μ-law (`WAVE_FORMAT_MULAW`, format 7) because every player,
//! editor and speech-to-text service reads PCM, while format 7 is refused by some (browsers
//! among them); it costs twice the space (32 kB a second). Decoding μ-law is exact (each of the
//! 256 codes is one 16-bit value), so the file keeps every bit of what was sent and heard.
//!
//! The header's two sizes are written as placeholders and kept up to date while the call
//! lasts, and [`repair`] fixes the header of a file whose writer died (a killed process) from
//! the file's length, so a recording is always a valid file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const SAMPLE_RATE: u32 = 8000;
pub const CHANNELS: u16 = 2;
pub const BITS: u16 = 16;
/// Bytes of one stereo sample.
pub const BLOCK: u64 = (CHANNELS as u64) * (BITS as u64 / 8);
pub const HEADER_LEN: u64 = 44;

/// The header of a file with `data_len` bytes of samples.
pub fn header(data_len: u64) -> [u8; 44] {
    // Sizes past 4 GiB cannot be written; a call would have to last 37 hours.
    let data = u32::try_from(data_len).unwrap_or(u32::MAX);
    let riff = data.saturating_add(36);
    let byte_rate = SAMPLE_RATE * u32::from(CHANNELS) * u32::from(BITS / 8);
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&((BLOCK as u16).to_le_bytes()));
    h[34..36].copy_from_slice(&BITS.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// G.711 μ-law to 16-bit linear, every code at once.
const fn decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        let u = !(code as u8);
        let exponent = ((u >> 4) & 0x07) as i32;
        let mantissa = (u & 0x0F) as i32;
        let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
        table[code] = if u & 0x80 != 0 {
            -magnitude as i16
        } else {
            magnitude as i16
        };
        code += 1;
    }
    table
}

static DECODE: [i16; 256] = decode_table();

/// One μ-law code as a 16-bit sample.
pub fn ulaw_to_pcm(code: u8) -> i16 {
    DECODE[code as usize]
}

/// `(left, right)` μ-law pairs as interleaved little-endian PCM, appended to `out`.
pub fn encode_pairs(pairs: &[[u8; 2]], out: &mut Vec<u8>) {
    out.reserve(pairs.len() * BLOCK as usize);
    for [left, right] in pairs {
        out.extend_from_slice(&ulaw_to_pcm(*left).to_le_bytes());
        out.extend_from_slice(&ulaw_to_pcm(*right).to_le_bytes());
    }
}

/// What [`repair`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The header already described the file.
    Sound,
    /// The sizes were stale (the writer died) and now match the samples in the file.
    Fixed,
}

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a recording of this program (no 8 kHz 16-bit stereo PCM header)")]
    Foreign,
}

/// Make the header of `path` describe the samples it holds: a writer that died leaves sizes
/// from its last update. A trailing half sample is cut off. Files of another layout are left
/// alone.
pub fn repair(path: &Path) -> Result<Repair, WavError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut head = [0u8; 44];
    if file.read_exact(&mut head).is_err() {
        return Err(WavError::Foreign);
    }
    let len = file.metadata()?.len();
    let data = (len - HEADER_LEN) / BLOCK * BLOCK;
    let expected = header(data);
    // Everything but the two sizes must be ours.
    let same_layout = head[..4] == expected[..4] && head[8..40] == expected[8..40];
    if !same_layout {
        return Err(WavError::Foreign);
    }
    if head == expected && len == HEADER_LEN + data {
        return Ok(Repair::Sound);
    }
    file.set_len(HEADER_LEN + data)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&expected)?;
    file.sync_all()?;
    Ok(Repair::Fixed)
}

/// Repair every `.wav` in `dir` (a missing folder has nothing to repair). Returns the files
/// fixed; a file that cannot be read or is not ours is left as it is, with a warning.
pub fn repair_dir(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut fixed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "wav") {
            continue;
        }
        match repair(&path) {
            Ok(Repair::Fixed) => fixed.push(path),
            Ok(Repair::Sound) => {}
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "recording left as it is"),
        }
    }
    fixed
}

/// A WAV file of ours, read back: its samples, left and right (tests and tools).
pub fn read(path: &Path) -> Result<(Vec<i16>, Vec<i16>), WavError> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < HEADER_LEN as usize {
        return Err(WavError::Foreign);
    }
    let data_len = u32::from_le_bytes([bytes[40], bytes[41], bytes[42], bytes[43]]) as usize;
    if bytes[..40] != header(data_len as u64)[..40] || bytes.len() != 44 + data_len {
        return Err(WavError::Foreign);
    }
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for block in bytes[44..].chunks_exact(4) {
        left.push(i16::from_le_bytes([block[0], block[1]]));
        right.push(i16::from_le_bytes([block[2], block[3]]));
    }
    Ok((left, right))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mu_law_decodes_to_the_g711_values() {
        assert_eq!(ulaw_to_pcm(0xFF), 0);
        assert_eq!(ulaw_to_pcm(0x7F), 0);
        assert_eq!(ulaw_to_pcm(0x00), -32124);
        assert_eq!(ulaw_to_pcm(0x80), 32124);
        assert_eq!(ulaw_to_pcm(0xFE), 8);
        assert_eq!(ulaw_to_pcm(0x7E), -8);
        // Exact: apart from the two zeros, no two codes give the same sample.
        let mut values: Vec<i16> = (0..=255u8).map(ulaw_to_pcm).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), 255);
    }

    #[test]
    fn the_header_is_canonical_pcm_stereo_8k() {
        let h = header(32_000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), 32_036);
        assert_eq!(u16::from_le_bytes([h[22], h[23]]), 2);
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 8000);
        assert_eq!(u32::from_le_bytes([h[28], h[29], h[30], h[31]]), 32_000);
        assert_eq!(u16::from_le_bytes([h[32], h[33]]), 4);
        assert_eq!(u32::from_le_bytes([h[40], h[41], h[42], h[43]]), 32_000);
    }

    #[test]
    fn a_file_whose_writer_died_is_repaired_from_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("CA1.wav");
        let mut body = header(0).to_vec();
        let mut pcm = Vec::new();
        encode_pairs(&[[0x00, 0xFF], [0x80, 0x7E], [0x10, 0x20]], &mut pcm);
        body.extend_from_slice(&pcm);
        body.extend_from_slice(&[1, 2, 3]); // half a sample: the write was cut short
        std::fs::write(&path, &body).unwrap();
        assert!(
            read(&path).is_err(),
            "sizes say 0 bytes, the file holds more"
        );
        assert_eq!(repair(&path).unwrap(), Repair::Fixed);
        let (left, right) = read(&path).unwrap();
        assert_eq!(left, [-32124, 32124, ulaw_to_pcm(0x10)]);
        assert_eq!(right, [0, -8, ulaw_to_pcm(0x20)]);
        assert_eq!(repair(&path).unwrap(), Repair::Sound);
        // Someone else's file is not touched.
        let other = dir.path().join("song.wav");
        std::fs::write(&other, b"RIFF\0\0\0\0WAVEnot ours at all, no").unwrap();
        assert!(matches!(repair(&other), Err(WavError::Foreign)));
        assert_eq!(repair_dir(dir.path()), Vec::<std::path::PathBuf>::new());
    }
}

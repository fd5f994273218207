//! The simulators' "speech": text carried inside G.711 μ-law audio.
//!
//! The fake callee and the fake Voice Agent must understand each other through the real bridge,
//! which passes audio untouched. So simulated speech encodes its text into loud μ-law bytes
//! (nibbles of the UTF-8 text, spread over the utterance's duration with loud filler), and
//! silence is `0xFF`. Energy-based turn detection sees speech as speech and pauses as silence,
//! and a listener can decode what was said, partially while it is still being spoken.
//! Real phone audio never decodes to text; this exists only for `--simulate` and the tests.

/// μ-law silence (decodes to linear 0).
pub const SILENCE: u8 = 0xFF;
/// Marks the start of an utterance.
const START: u8 = 0x90;
/// Marks the end of an utterance.
const END: u8 = 0x91;
/// Loud padding that carries no data.
const FILLER: u8 = 0x9F;
/// Nibbles travel as `NIBBLE_BASE | nibble` (0x80..=0x8F, all loud).
const NIBBLE_BASE: u8 = 0x80;

/// 8 kHz μ-law: 8 bytes per millisecond.
pub const BYTES_PER_MS: usize = 8;
/// One 20 ms Media Streams frame.
pub const FRAME_BYTES: usize = 160;

/// Speaking rate: milliseconds of audio per character of text (≈ 15 characters a second).
pub const MS_PER_CHAR: usize = 65;

/// Encode `text` as an utterance whose duration follows the speaking rate.
pub fn encode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let per_char = MS_PER_CHAR * BYTES_PER_MS;
    let mut out = Vec::with_capacity(2 + bytes.len() * per_char);
    out.push(START);
    for &b in bytes {
        out.push(NIBBLE_BASE | (b >> 4));
        out.push(NIBBLE_BASE | (b & 0x0F));
        out.extend(std::iter::repeat_n(FILLER, per_char - 2));
    }
    out.push(END);
    out
}

/// `ms` milliseconds of silence.
pub fn silence(ms: usize) -> Vec<u8> {
    vec![SILENCE; ms * BYTES_PER_MS]
}

/// Decode one μ-law byte to 16-bit linear PCM (ITU-T G.711).
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = b & 0x0F;
    let magnitude = ((i32::from(mantissa) << 3) + 0x84) << exponent;
    let value = magnitude - 0x84;
    (if sign != 0 { -value } else { value }) as i16
}

/// Mean absolute linear amplitude of a chunk, 0..=32124. Speech from [`encode`] is far above
/// 1000; silence is 0.
pub fn energy(chunk: &[u8]) -> u32 {
    if chunk.is_empty() {
        return 0;
    }
    let sum: u64 = chunk
        .iter()
        .map(|&b| u64::from(ulaw_to_linear(b).unsigned_abs()))
        .sum();
    (sum / chunk.len() as u64) as u32
}

/// What a [`Listener`] made of the bytes it was fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// The text so far of an utterance still being spoken (the full text so far, not a delta).
    Partial(String),
    /// A finished utterance.
    Utterance(String),
    /// An utterance that stopped before its end marker (cut off by `clear` or barge-in).
    CutOff(String),
}

/// Streaming decoder: feed audio in any chunking, get partial and final text back.
#[derive(Debug, Default)]
pub struct Listener {
    current: Option<Vec<u8>>,
    high: Option<u8>,
}

impl Listener {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an utterance is in progress.
    pub fn in_utterance(&self) -> bool {
        self.current.is_some()
    }

    /// Feed audio; returns what became known from it, in order. A `Partial` is reported at
    /// most once per call, after the chunk's last new character.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Heard> {
        let mut out = Vec::new();
        let mut grew = false;
        for &b in chunk {
            match b {
                START => {
                    if let Some(prev) = self.current.take() {
                        grew = false;
                        out.push(Heard::CutOff(lossy(&prev)));
                    }
                    self.current = Some(Vec::new());
                    self.high = None;
                }
                END => {
                    if let Some(done) = self.current.take() {
                        grew = false;
                        out.push(Heard::Utterance(lossy(&done)));
                    }
                    self.high = None;
                }
                b if b & 0xF0 == NIBBLE_BASE => {
                    if let Some(text) = self.current.as_mut() {
                        match self.high.take() {
                            None => self.high = Some(b & 0x0F),
                            Some(h) => {
                                text.push((h << 4) | (b & 0x0F));
                                grew = true;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if grew && let Some(text) = &self.current {
            out.push(Heard::Partial(lossy(text)));
        }
        out
    }

    /// End of input (e.g. the speaker stopped mid-utterance and went silent for good).
    pub fn cut_off(&mut self) -> Option<String> {
        self.high = None;
        self.current.take().map(|t| lossy(&t))
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_frames() {
        let audio = encode("Yes, that works — thanks!");
        let mut l = Listener::new();
        let mut finals = Vec::new();
        let mut partials = 0;
        for frame in audio.chunks(FRAME_BYTES) {
            for h in l.feed(frame) {
                match h {
                    Heard::Partial(_) => partials += 1,
                    Heard::Utterance(t) => finals.push(t),
                    Heard::CutOff(_) => panic!("not cut off"),
                }
            }
        }
        assert_eq!(finals, vec!["Yes, that works — thanks!".to_string()]);
        assert!(partials > 5, "partials arrive while speaking: {partials}");
    }

    #[test]
    fn speech_is_loud_and_silence_is_silent() {
        let audio = encode("hello there");
        for frame in audio.chunks(FRAME_BYTES) {
            assert!(
                energy(frame) > 5000,
                "speech frame energy {}",
                energy(frame)
            );
        }
        assert_eq!(energy(&silence(20)), 0);
    }

    #[test]
    fn duration_follows_speaking_rate() {
        let audio = encode("abcdefghij");
        let ms = audio.len() / BYTES_PER_MS;
        assert!((640..=660).contains(&ms), "{ms} ms");
    }

    #[test]
    fn interrupted_utterance_is_cut_off() {
        let a = encode("first sentence");
        let b = encode("second");
        let mut l = Listener::new();
        let mut stream = a[..a.len() / 2].to_vec();
        stream.extend_from_slice(&b);
        let heard = l.feed(&stream);
        assert!(
            matches!(&heard[0], Heard::CutOff(t) if "first sentence".starts_with(t.as_str()) && !t.is_empty())
        );
        assert_eq!(heard.last(), Some(&Heard::Utterance("second".into())));
    }

    #[test]
    fn g711_reference_points() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
    }
}

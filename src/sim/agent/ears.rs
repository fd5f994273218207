//! The fake agent's ears: energy-based voice activity and end-of-turn detection over the
//! caller's `input.audio`, plus transcription of simulated speech (μ-law only, via
//! `sim::speech::Listener`). Time here is audio time, counted from bytes, never wall time, so
//! turn detection behaves the same at any `TimeScale` and however the client chunks its audio.

use super::session::{Encoding, TurnParams};
use crate::sim::speech::{self, Heard as Decoded, Listener};

/// Turn detection works on 20 ms frames.
const FRAME_MS: usize = 20;

/// What a frame of audio told the ears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Heard {
    SpeechStarted,
    /// The full transcript so far of the current turn (replace, never append).
    Partial(String),
    /// End of the user's turn, with its final transcript ("" when nothing was intelligible).
    SpeechStopped(String),
}

/// Result of one frame.
#[derive(Debug, Default)]
pub(super) struct Frame {
    pub events: Vec<Heard>,
    pub speech: bool,
    pub bytes: usize,
}

#[derive(Debug)]
pub(super) struct Ears {
    encoding: Encoding,
    listener: Listener,
    pending: Vec<u8>,
    in_turn: bool,
    /// Finished utterances of the current turn.
    done: Vec<String>,
    last_partial: String,
    turn_bytes: usize,
    silence_bytes: usize,
}

impl Ears {
    pub(super) fn new(encoding: Encoding) -> Self {
        Self {
            encoding,
            listener: Listener::new(),
            pending: Vec::new(),
            in_turn: false,
            done: Vec::new(),
            last_partial: String::new(),
            turn_bytes: 0,
            silence_bytes: 0,
        }
    }

    pub(super) fn in_turn(&self) -> bool {
        self.in_turn
    }

    /// Audio milliseconds since the current turn started.
    pub(super) fn turn_ms(&self) -> usize {
        self.turn_bytes / self.encoding.bytes_per_ms()
    }

    pub(super) fn push(&mut self, audio: &[u8]) {
        self.pending.extend_from_slice(audio);
    }

    /// Process the next complete 20 ms frame of pushed audio, if there is one.
    pub(super) fn next_frame(&mut self, turn: &TurnParams) -> Option<Frame> {
        let size = FRAME_MS * self.encoding.bytes_per_ms();
        if self.pending.len() < size {
            return None;
        }
        let frame: Vec<u8> = self.pending.drain(..size).collect();
        Some(self.frame(&frame, turn))
    }

    fn frame(&mut self, frame: &[u8], turn: &TurnParams) -> Frame {
        let mut out = Frame {
            bytes: frame.len(),
            ..Frame::default()
        };
        let decoded = if self.encoding == Encoding::Pcmu {
            self.listener.feed(frame)
        } else {
            Vec::new()
        };
        out.speech = f64::from(energy(self.encoding, frame)) > threshold(turn.vad_threshold);
        if out.speech && !self.in_turn {
            self.in_turn = true;
            self.turn_bytes = 0;
            self.silence_bytes = 0;
            self.last_partial.clear();
            out.events.push(Heard::SpeechStarted);
        }
        for d in decoded {
            match d {
                Decoded::Partial(p) => {
                    // Report whole words, as a recogniser does, not every character.
                    if self.in_turn && p.ends_with(char::is_whitespace) {
                        let text = self.text_with(p.trim_end());
                        if text != self.last_partial {
                            self.last_partial = text.clone();
                            out.events.push(Heard::Partial(text));
                        }
                    }
                }
                Decoded::Utterance(t) | Decoded::CutOff(t) => self.done.push(t),
            }
        }
        if self.in_turn {
            self.turn_bytes += frame.len();
            if out.speech {
                self.silence_bytes = 0;
            } else {
                self.silence_bytes += frame.len();
                if self.silence_bytes >= turn.min_silence_ms * self.encoding.bytes_per_ms() {
                    out.events.push(Heard::SpeechStopped(self.finish_turn()));
                }
            }
        }
        out
    }

    fn text_with(&self, partial: &str) -> String {
        let mut parts: Vec<&str> = self.done.iter().map(|s| s.trim()).collect();
        parts.push(partial.trim());
        parts.retain(|p| !p.is_empty());
        parts.join(" ")
    }

    fn finish_turn(&mut self) -> String {
        // Speech that went silent before its end marker was cut off; keep what was said.
        let tail = self.listener.cut_off().unwrap_or_default();
        let text = self.text_with(&tail);
        self.done.clear();
        self.in_turn = false;
        self.turn_bytes = 0;
        self.silence_bytes = 0;
        text
    }
}

/// Energy above which a frame is speech: lower `vad_threshold` is more sensitive. At the
/// default 0.5 this is 1700, far above line noise and far below simulated speech (> 5000).
fn threshold(vad_threshold: f64) -> f64 {
    200.0 + 3000.0 * vad_threshold
}

/// Mean absolute linear amplitude of a frame in `encoding`.
fn energy(encoding: Encoding, frame: &[u8]) -> u32 {
    match encoding {
        Encoding::Pcmu => speech::energy(frame),
        Encoding::Pcma => mean_abs(frame.iter().map(|&b| alaw_to_linear(b))),
        Encoding::Pcm => mean_abs(
            frame
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]])),
        ),
    }
}

fn mean_abs(samples: impl Iterator<Item = i16>) -> u32 {
    let (sum, n) = samples.fold((0u64, 0u64), |(sum, n), s| {
        (sum + u64::from(s.unsigned_abs()), n + 1)
    });
    sum.checked_div(n).map_or(0, |m| m as u32)
}

/// G.711 A-law to linear PCM.
fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0F);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> TurnParams {
        TurnParams {
            vad_threshold: 0.5,
            min_silence_ms: 600,
            interrupt_response: true,
            interruption_delay_ms: 500,
        }
    }

    fn run(ears: &mut Ears, audio: &[u8]) -> Vec<Heard> {
        ears.push(audio);
        let mut out = Vec::new();
        while let Some(f) = ears.next_frame(&params()) {
            out.extend(f.events);
        }
        out
    }

    #[test]
    fn a_turn_with_two_utterances_and_a_short_pause() {
        let mut ears = Ears::new(Encoding::Pcmu);
        let mut audio = speech::silence(100);
        audio.extend(speech::encode("leave a message"));
        audio.extend(speech::silence(300));
        audio.extend(speech::encode("beep"));
        audio.extend(speech::silence(700));
        let heard = run(&mut ears, &audio);
        assert_eq!(heard.first(), Some(&Heard::SpeechStarted));
        assert_eq!(
            heard.last(),
            Some(&Heard::SpeechStopped("leave a message beep".into()))
        );
        assert!(heard.contains(&Heard::Partial("leave a".into())));
        assert_eq!(
            heard.iter().filter(|h| **h == Heard::SpeechStarted).count(),
            1
        );
    }

    #[test]
    fn loud_noise_is_a_turn_without_words() {
        let mut ears = Ears::new(Encoding::Pcmu);
        let mut audio = vec![0x85u8; 800];
        audio.extend(speech::silence(700));
        let heard = run(&mut ears, &audio);
        assert_eq!(
            heard,
            vec![Heard::SpeechStarted, Heard::SpeechStopped(String::new())]
        );
    }

    #[test]
    fn silence_in_other_encodings_is_silent() {
        assert_eq!(energy(Encoding::Pcma, &[0xD5; 160]), 8);
        assert_eq!(energy(Encoding::Pcm, &[0; 960]), 0);
        assert!(energy(Encoding::Pcma, &[0xAA; 160]) > 5000);
    }
}

//! Where each sample of a call belongs in its recording: a pure model of the two sides on one
//! clock, Twilio's media clock.
//!
//! The callee's side is placed by Twilio's own `media.timestamp` (milliseconds since the
//! stream started, 8 samples each); a gap (frames lost or dropped) is silence. The agent's side
//! is placed where the callee heard it. Twilio plays what we send at 8000 samples a second from
//! a buffer: audio sent when the buffer is empty starts playing at once, audio sent while it
//! plays is queued behind it, and `clear` drops whatever was queued and not yet played. "Now",
//! on Twilio's clock, is the end of the last callee frame received: frames arrive as their
//! 20 ms are spoken, so that is where the agent's next sample plays. The clock is Twilio's
//! media clock, so marks would add nothing but a network round trip; they are not needed.
//!
//! Everything before "now" is final and handed out; audio queued after it waits for the
//! callee frames that bring the clock forward (or is dropped by a `clear`, or by the end of
//! the call, when Twilio stops playing).

use std::collections::VecDeque;

/// μ-law silence (the code for zero).
pub const SILENCE: u8 = 0xFF;

/// Samples per millisecond at 8 kHz.
const SAMPLES_PER_MS: u64 = 8;

/// The two sides of a call on Twilio's clock.
#[derive(Debug, Default, Clone)]
pub struct Playout {
    /// Samples handed out so far: the position of the next one, on Twilio's clock.
    written: u64,
    /// Agent audio Twilio holds and has not played: its first sample plays at `written`.
    queued: VecDeque<u8>,
}

impl Playout {
    pub fn new() -> Self {
        Self::default()
    }

    /// The position of the next sample, in samples since the stream started.
    pub fn position(&self) -> u64 {
        self.written
    }

    /// Agent audio Twilio has buffered and not yet played.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Agent audio (μ-law) sent to Twilio: it plays after what is already queued.
    pub fn agent(&mut self, audio: &[u8]) {
        self.queued.extend(audio);
    }

    /// `clear`: what was queued and not yet played is never heard.
    pub fn clear(&mut self) {
        self.queued.clear();
    }

    /// A callee frame (μ-law) whose first sample is at `timestamp_ms`: hands out every
    /// `(callee, agent)` sample pair up to its end. A gap before it is callee silence; a
    /// frame that overlaps what was handed out already contributes only its new samples.
    pub fn callee(&mut self, timestamp_ms: u64, audio: &[u8], out: &mut Vec<[u8; 2]>) {
        let start = timestamp_ms.saturating_mul(SAMPLES_PER_MS);
        let end = start.saturating_add(audio.len() as u64);
        if end <= self.written {
            return;
        }
        out.reserve((end - self.written) as usize);
        while self.written < start {
            let agent = self.next_agent();
            out.push([SILENCE, agent]);
            self.written += 1;
        }
        let skip = (self.written - start) as usize;
        for &callee in &audio[skip..] {
            let agent = self.next_agent();
            out.push([callee, agent]);
            self.written += 1;
        }
    }

    fn next_agent(&mut self) -> u8 {
        self.queued.pop_front().unwrap_or(SILENCE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &mut Playout, ts: u64, audio: &[u8]) -> Vec<[u8; 2]> {
        let mut out = Vec::new();
        p.callee(ts, audio, &mut out);
        out
    }

    fn agent_side(pairs: &[[u8; 2]]) -> Vec<u8> {
        pairs.iter().map(|p| p[1]).collect()
    }

    #[test]
    fn agent_audio_plays_from_now_in_order_and_queues_behind_itself() {
        let mut p = Playout::new();
        // 1 ms callee frames (8 samples) keep the test short; the model does not care.
        assert_eq!(agent_side(&run(&mut p, 0, &[1; 8])), [SILENCE; 8]);
        p.agent(&[10, 11, 12]);
        p.agent(&[13, 14, 15, 16, 17, 18, 19, 20]);
        let pairs = run(&mut p, 1, &[2; 8]);
        assert_eq!(pairs.iter().map(|p| p[0]).collect::<Vec<_>>(), [2; 8]);
        assert_eq!(agent_side(&pairs), [10, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(p.queued(), 3);
        // The rest plays next, then silence: the buffer ran dry.
        assert_eq!(
            agent_side(&run(&mut p, 2, &[3; 8])),
            [18, 19, 20, SILENCE, SILENCE, SILENCE, SILENCE, SILENCE]
        );
        assert_eq!(p.position(), 24);
    }

    #[test]
    fn a_clear_mid_utterance_drops_only_what_was_not_yet_played() {
        let mut p = Playout::new();
        p.agent(&(100..132).collect::<Vec<u8>>());
        let heard = run(&mut p, 0, &[1; 8]);
        assert_eq!(agent_side(&heard), (100..108).collect::<Vec<u8>>());
        // The callee barges in: the 24 samples still queued are never heard.
        p.clear();
        assert_eq!(agent_side(&run(&mut p, 1, &[1; 8])), [SILENCE; 8]);
        // The next reply starts where the clock is, not where the old one would have ended.
        p.agent(&[7, 7]);
        let next = run(&mut p, 2, &[1; 8]);
        assert_eq!(&agent_side(&next)[..3], [7, 7, SILENCE]);
    }

    #[test]
    fn gaps_in_the_callees_frames_are_silence_and_the_agent_keeps_playing_through_them() {
        let mut p = Playout::new();
        p.agent(&[9; 20]);
        run(&mut p, 0, &[1; 8]);
        // Frames for 1–2 ms never came (lost, or dropped by a full recorder).
        let pairs = run(&mut p, 3, &[5; 8]);
        assert_eq!(pairs.len(), 24);
        assert_eq!(
            &pairs[..16].iter().map(|p| p[0]).collect::<Vec<_>>(),
            &[SILENCE; 16]
        );
        assert_eq!(
            &pairs[16..].iter().map(|p| p[0]).collect::<Vec<_>>(),
            &[5; 8]
        );
        assert_eq!(
            agent_side(&pairs),
            [[9; 12].as_slice(), &[SILENCE; 12]].concat(),
            "the agent's 12 remaining samples play on through the gap"
        );
    }

    #[test]
    fn a_late_start_and_repeated_or_overlapping_frames_keep_the_timeline() {
        let mut p = Playout::new();
        // The first frame Twilio sends is at 2 ms: the file starts at the stream's start.
        let first = run(&mut p, 2, &[4; 8]);
        assert_eq!(first.len(), 24);
        // The same frame again adds nothing; one overlapping by half adds its new half.
        assert!(run(&mut p, 2, &[4; 8]).is_empty());
        let half = run(&mut p, 2, &[6; 16]);
        assert_eq!(half.iter().map(|p| p[0]).collect::<Vec<_>>(), [6; 8]);
        assert_eq!(p.position(), 32);
    }
}

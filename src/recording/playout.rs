//! Where each sample of a call belongs in its recording: a pure model of the two sides on one
//! clock, Twilio's media clock.
//!
//! The callee's side is placed by Twilio's own `media.timestamp` (milliseconds since the
//! stream started, 8 samples each); a gap (frames lost or dropped) is silence. "Now" is the end
//! of the last callee frame received: frames arrive as their 20 ms are spoken.
//!
//! The agent's side is placed where the callee heard it. Twilio plays what we send at 8000
//! samples a second from a buffer, in order: audio sent while it plays is queued behind it,
//! and `clear` drops whatever is queued and not yet played. Our messages reach Twilio a little
//! after we send them, and at the start of a reply or at a barge-in a little is a lot: a
//! `clear` that reaches Twilio two frames after we sent it has let two more frames be heard.
//! So the model asks Twilio where its clock is. A mark sent just before a reply's first audio
//! comes back the moment Twilio has it (its buffer is empty, or it is reached when what was before
//! it has played): the audio behind it starts there, and is held until then. A mark sent just
//! before a `clear` comes back when Twilio has cleared its buffer (a clear sends every pending
//! mark back): the audio before it plays on in the model until then, and what is left of it is
//! dropped there. A mark whose echo does not come within [`HOLD_MAX`] is given up on.
//!
//! In between, audio is placed on our clock: where a reply's audio comes at real-time pace
//! and Twilio's buffer runs dry, the model can run up to the network's jitter apart from
//! Twilio, until the next mark brings it back.
//!
//! Everything before "now" is final and handed out; audio queued after it waits for the
//! callee frames that bring the clock forward (or is dropped by a `clear`, or by the end of
//! the call, when Twilio stops playing, except what the echo of a mark behind it says was
//! heard: the goodbye before the call ends on its mark).

use std::collections::VecDeque;

/// μ-law silence (the code for zero).
pub const SILENCE: u8 = 0xFF;

/// Samples per millisecond at 8 kHz.
const SAMPLES_PER_MS: u64 = 8;

/// Longest the model waits for a mark's echo before playing on without it: Twilio echoes
/// within a network round trip.
pub const HOLD_MAX: u64 = 8000;

impl Item {
    /// Audio samples not yet played.
    fn samples(&self) -> usize {
        match self {
            Item::Audio { data, at } => data.len() - at,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone)]
enum Item {
    /// Agent audio (μ-law), `at` samples of it played.
    Audio { data: Vec<u8>, at: usize },
    /// A mark sent to Twilio, not yet echoed.
    Mark(String),
    /// A `clear` sent right after the mark before it: applied when that mark comes back.
    Clear,
}

/// The two sides of a call on Twilio's clock.
#[derive(Debug, Default, Clone)]
pub struct Playout {
    /// Samples handed out so far: the position of the next one, on Twilio's clock.
    written: u64,
    /// What Twilio holds and has not played, in the order it was sent.
    queue: VecDeque<Item>,
    /// Samples a mark at the front of the queue has waited for its echo.
    held: u64,
    /// Samples at the front of the queue that an echoed mark behind them says were heard:
    /// placed at the end of the call even when no callee frame comes to carry them.
    heard: usize,
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
        self.queue.iter().map(Item::samples).sum()
    }

    /// Agent audio (μ-law) sent to Twilio: it plays after what is already queued.
    pub fn agent(&mut self, audio: &[u8]) {
        if !audio.is_empty() {
            self.queue.push_back(Item::Audio {
                data: audio.to_vec(),
                at: 0,
            });
        }
    }

    /// A mark sent to Twilio: the audio sent after it waits for its echo.
    pub fn mark(&mut self, name: String) {
        self.queue.push_back(Item::Mark(name));
    }

    /// `clear` sent to Twilio. Right after a mark it takes effect when that mark comes back;
    /// otherwise now.
    pub fn clear(&mut self) {
        if matches!(self.queue.back(), Some(Item::Mark(_))) {
            self.queue.push_back(Item::Clear);
        } else {
            self.queue.clear();
            self.held = 0;
        }
    }

    /// Twilio echoed a mark: its clock has reached it. A mark of someone else's is ignored.
    pub fn echo(&mut self, name: &str) {
        let Some(i) = self
            .queue
            .iter()
            .position(|item| matches!(item, Item::Mark(m) if m == name))
        else {
            return;
        };
        if matches!(self.queue.get(i + 1), Some(Item::Clear)) {
            // Twilio has cleared its buffer: what was before the clear is never heard.
            self.queue.drain(..=i + 1);
            self.heard = 0;
        } else {
            // Audio before the mark that the model has not finished plays on: it was heard,
            // a little earlier than placed.
            self.heard = self.queue.range(..i).map(Item::samples).sum();
            self.queue.remove(i);
        }
        if i == 0 {
            self.held = 0;
        }
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

    /// The call is over: what Twilio still held was never played, except what an echoed mark
    /// says was heard (the goodbye, when the call ended on its mark), which is placed now.
    pub fn finish(&mut self, out: &mut Vec<[u8; 2]>) {
        while self.heard > 0 {
            let agent = self.next_agent();
            out.push([SILENCE, agent]);
            self.written += 1;
        }
        self.queue.clear();
    }

    /// The agent's sample at the current position.
    fn next_agent(&mut self) -> u8 {
        loop {
            match self.queue.front_mut() {
                None => return SILENCE,
                Some(Item::Audio { data, at }) => {
                    if let Some(&sample) = data.get(*at) {
                        *at += 1;
                        self.heard = self.heard.saturating_sub(1);
                        return sample;
                    }
                    self.queue.pop_front();
                }
                Some(Item::Mark(_)) => {
                    if self.held < HOLD_MAX {
                        self.held += 1;
                        return SILENCE;
                    }
                    // No echo: play on as if it had come.
                    self.queue.pop_front();
                    self.held = 0;
                }
                // Its mark was given up on: the clear happened by now at the latest.
                Some(Item::Clear) => {
                    self.queue.pop_front();
                }
            }
        }
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
    fn a_reply_waits_for_its_marks_echo_which_says_when_twilio_started_it() {
        let mut p = Playout::new();
        p.mark("r1".into());
        p.agent(&[7; 12]);
        // Twilio has not got the mark yet: nothing plays.
        assert_eq!(agent_side(&run(&mut p, 0, &[1; 8])), [SILENCE; 8]);
        p.echo("r1");
        assert_eq!(agent_side(&run(&mut p, 1, &[1; 8])), [7; 8]);
        // Someone else's mark changes nothing.
        p.echo("dialer-end-call");
        assert_eq!(&agent_side(&run(&mut p, 2, &[1; 8]))[..4], [7; 4]);
    }

    #[test]
    fn a_clear_mid_utterance_drops_only_what_twilio_had_not_played_when_it_got_it() {
        let mut p = Playout::new();
        p.agent(&(100..132).collect::<Vec<u8>>());
        let heard = run(&mut p, 0, &[1; 8]);
        assert_eq!(agent_side(&heard), (100..108).collect::<Vec<u8>>());
        // The callee barges in: a mark, then the clear. Until Twilio says it has cleared, the
        // utterance goes on playing.
        p.mark("c1".into());
        p.clear();
        // The next reply is sent at once, behind the clear.
        p.mark("r2".into());
        p.agent(&[7, 7]);
        assert_eq!(
            agent_side(&run(&mut p, 1, &[1; 8])),
            (108..116).collect::<Vec<u8>>()
        );
        p.echo("c1");
        // What was left of the utterance (16 samples) is never heard; the reply waits for its
        // own mark.
        assert_eq!(p.queued(), 2);
        assert_eq!(agent_side(&run(&mut p, 2, &[1; 8])), [SILENCE; 8]);
        p.echo("r2");
        assert_eq!(&agent_side(&run(&mut p, 3, &[1; 8]))[..3], [7, 7, SILENCE]);
    }

    #[test]
    fn at_the_end_only_what_a_mark_says_was_heard_is_placed() {
        let mut p = Playout::new();
        p.agent(&[3; 20]);
        p.mark("goodbye".into());
        run(&mut p, 0, &[1; 8]);
        // Twilio says the goodbye has played; the model was 12 samples behind.
        p.echo("goodbye");
        let mut out = Vec::new();
        p.finish(&mut out);
        assert_eq!(agent_side(&out), [3; 12]);
        assert_eq!(out.iter().map(|p| p[0]).collect::<Vec<_>>(), [SILENCE; 12]);
        // Without such a mark, what was queued at the end was never heard.
        let mut p = Playout::new();
        p.agent(&[3; 20]);
        run(&mut p, 0, &[1; 8]);
        let mut out = Vec::new();
        p.finish(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_clear_without_a_mark_is_applied_when_sent() {
        let mut p = Playout::new();
        p.agent(&[9; 32]);
        run(&mut p, 0, &[1; 8]);
        p.clear();
        assert_eq!(p.queued(), 0);
        assert_eq!(agent_side(&run(&mut p, 1, &[1; 8])), [SILENCE; 8]);
    }

    #[test]
    fn a_mark_that_never_comes_back_holds_the_audio_only_so_long() {
        let mut p = Playout::new();
        p.mark("lost".into());
        p.agent(&[5; 4]);
        let frames = HOLD_MAX / 8;
        for n in 0..frames {
            assert_eq!(agent_side(&run(&mut p, n, &[1; 8])), [SILENCE; 8]);
        }
        assert_eq!(
            &agent_side(&run(&mut p, frames, &[1; 8]))[..5],
            [5, 5, 5, 5, SILENCE]
        );
        // Its echo, when it finally comes, changes nothing.
        p.echo("lost");
        assert_eq!(p.queued(), 0);
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

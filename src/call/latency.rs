//! How long the callee waits for the agent: for each reply, the time from the end of the
//! callee's turn (`input.speech.stopped`) to the reply's first `reply.audio` frame leaving for
//! Twilio, and once per session the agent's setup time (connection open → `session.ready`).
//!
//! The bridge calls `ReplyClock` on a handful of agent events; on audio frames it only tests
//! a flag, and reads the clock once per reply. Figures are whole milliseconds.

use tokio::time::Instant;

/// One call's reply latencies, measured as the bridge forwards the agent's audio.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReplyClock {
    /// When the callee's last turn ended, until a reply answers it.
    turn_ended: Option<Instant>,
    /// A reply started after that turn ended: its first audio frame is the answer.
    armed: bool,
    /// The latency of the reply under way, until its transcript line takes it.
    current: Option<u32>,
    /// Every reply's latency, in order.
    replies: Vec<u32>,
}

impl ReplyClock {
    /// `input.speech.stopped`: the callee's turn is over (a later stop replaces an earlier
    /// one: the turn went on).
    pub(crate) fn turn_ended(&mut self, at: Instant) {
        self.turn_ended = Some(at);
        self.armed = false;
    }

    /// `reply.started`. Only a reply that follows the end of a turn answers it: the greeting
    /// and a tool's follow-up reply wait for nobody's turn.
    pub(crate) fn reply_started(&mut self) {
        self.armed = self.turn_ended.is_some();
        self.current = None;
    }

    /// A `reply.audio` frame is leaving for Twilio. The clock is read only for the first
    /// frame of a reply that answers a turn.
    #[inline]
    pub(crate) fn audio_out(&mut self) {
        if self.armed {
            self.first_audio(Instant::now());
        }
    }

    #[cold]
    fn first_audio(&mut self, now: Instant) {
        self.armed = false;
        if let Some(ended) = self.turn_ended.take() {
            let ms =
                u32::try_from(now.saturating_duration_since(ended).as_millis()).unwrap_or(u32::MAX);
            self.replies.push(ms);
            self.current = Some(ms);
        }
    }

    /// The latency of the reply whose transcript line is being written, once.
    pub(crate) fn take_for_line(&mut self) -> Option<u32> {
        self.current.take()
    }

    /// Every reply's latency so far, in order.
    pub(crate) fn replies(&self) -> &[u32] {
        &self.replies
    }
}

pub use crate::events::percentile;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_reply_is_timed_from_the_end_of_the_turn_to_its_first_audio() {
        let mut clock = ReplyClock::default();
        // The greeting answers no turn.
        clock.reply_started();
        clock.audio_out();
        assert!(clock.replies().is_empty());
        assert_eq!(clock.take_for_line(), None);

        clock.turn_ended(Instant::now());
        tokio::time::advance(Duration::from_millis(300)).await;
        clock.reply_started();
        tokio::time::advance(Duration::from_millis(340)).await;
        clock.audio_out();
        tokio::time::advance(Duration::from_millis(20)).await;
        // Later frames of the same reply change nothing.
        clock.audio_out();
        assert_eq!(clock.replies(), [640]);
        assert_eq!(clock.take_for_line(), Some(640));
        assert_eq!(clock.take_for_line(), None, "taken once");

        // A tool's follow-up reply answers no new turn.
        clock.reply_started();
        clock.audio_out();
        assert_eq!(clock.replies(), [640]);
    }

    #[tokio::test(start_paused = true)]
    async fn audio_still_playing_from_before_the_turn_ended_is_not_the_answer() {
        let mut clock = ReplyClock::default();
        clock.reply_started();
        // The callee says "uh-huh" over the agent without interrupting it.
        clock.turn_ended(Instant::now());
        tokio::time::advance(Duration::from_millis(100)).await;
        clock.audio_out();
        assert!(clock.replies().is_empty());
        // The callee went on talking: the turn ends at the last stop.
        tokio::time::advance(Duration::from_millis(900)).await;
        clock.turn_ended(Instant::now());
        tokio::time::advance(Duration::from_millis(500)).await;
        clock.reply_started();
        clock.audio_out();
        assert_eq!(clock.replies(), [500]);
    }

    #[test]
    fn percentiles_are_measured_values() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        let v = [500, 100, 400, 200, 300];
        assert_eq!(percentile(&v, 50), Some(300));
        assert_eq!(percentile(&v, 95), Some(500));
        let many: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&many, 50), Some(50));
        assert_eq!(percentile(&many, 95), Some(95));
        assert_eq!(percentile(&many, 100), Some(100));
    }
}

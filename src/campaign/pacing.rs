//! Call-creation pacing: never more than `calls_per_second` creations in any second, retries
//! included. Twilio queues calls created faster than the account's CPS, so a dialer that
//! ignores it builds an invisible backlog of calls that ring late; spacing the creations evenly
//! keeps every second's count within the limit wherever the second starts.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub(crate) struct Pacer {
    spacing: Duration,
    next: Mutex<Option<Instant>>,
}

/// Spacing a little wider than 1/CPS absorbs jitter between our clock and Twilio's, so a
/// request delayed in flight does not land in the same second as its successor.
const MARGIN: f64 = 1.05;

impl Pacer {
    pub(crate) fn new(calls_per_second: f64) -> Self {
        let cps = if calls_per_second > 0.0 {
            calls_per_second
        } else {
            1.0
        };
        Self {
            spacing: Duration::from_secs_f64(MARGIN / cps),
            next: Mutex::new(None),
        }
    }

    /// Wait for this creation's turn. Turns are handed out in order of asking.
    pub(crate) async fn wait_turn(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        let at = next.map_or(now, |t| t.max(now));
        *next = Some(at + self.spacing);
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_second_holds_more_than_the_rate() {
        let pacer = Pacer::new(4.0);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..13 {
            pacer.wait_turn().await;
            times.push(start.elapsed());
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(in_window <= 4, "{in_window} creations within 1 s of {t:?}");
        }
        // And it is not needlessly slow: 13 turns at 4/s take about 3 s.
        assert!(times[12] < Duration::from_millis(3300), "{:?}", times[12]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pacer_does_not_bank_turns() {
        let pacer = Pacer::new(1.0);
        pacer.wait_turn().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        pacer.wait_turn().await;
        pacer.wait_turn().await;
        assert!(start.elapsed() >= Duration::from_secs(1));
    }
}

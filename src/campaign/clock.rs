//! The campaign's wall clock. Calling windows and retry times are wall-clock times, so the
//! runner asks this clock rather than the system: for real campaigns it is the system clock;
//! for simulated ones it starts where the campaign file says (so a demo's calling windows are
//! the same whenever it runs), runs at the simulation's speed, and jumps ahead when nothing is
//! live and the next lead is hours away — nobody wants to watch a simulated night pass.

use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub struct Clock {
    sim: Option<Sim>,
}

struct Sim {
    origin: Instant,
    start: DateTime<Utc>,
    /// Simulated seconds per real second.
    speed: f64,
    /// Time skipped by jumps.
    skipped: Mutex<chrono::Duration>,
}

impl Clock {
    pub fn system() -> Self {
        Self { sim: None }
    }

    pub fn simulated(start: DateTime<Utc>, speed: f64) -> Self {
        Self {
            sim: Some(Sim {
                origin: Instant::now(),
                start,
                speed: if speed > 0.0 { speed } else { 1.0 },
                skipped: Mutex::new(chrono::Duration::zero()),
            }),
        }
    }

    pub fn is_simulated(&self) -> bool {
        self.sim.is_some()
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.sim {
            None => Utc::now(),
            Some(s) => {
                let real = s.origin.elapsed().mul_f64(s.speed);
                let skipped = *s.skipped.lock().unwrap_or_else(|e| e.into_inner());
                s.start + chrono::Duration::from_std(real).unwrap_or_default() + skipped
            }
        }
    }

    /// The real time until `t` on this clock.
    pub fn real_until(&self, t: DateTime<Utc>) -> Duration {
        let ahead = (t - self.now()).to_std().unwrap_or_default();
        match &self.sim {
            None => ahead,
            Some(s) => ahead.div_f64(s.speed),
        }
    }

    /// Simulated clocks only: move straight to `t` if it is ahead. Returns whether it jumped.
    pub fn jump_to(&self, t: DateTime<Utc>) -> bool {
        let Some(s) = &self.sim else { return false };
        let now = self.now();
        if t <= now {
            return false;
        }
        *s.skipped.lock().unwrap_or_else(|e| e.into_inner()) += t - now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_starts_where_told_and_jumps_forward_only() {
        let start = DateTime::parse_from_rfc3339("2026-12-01T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::simulated(start, 10.0);
        let now = clock.now();
        assert!(now >= start && now < start + chrono::Duration::seconds(60));
        let later = start + chrono::Duration::hours(3);
        assert!(clock.jump_to(later));
        assert!(clock.now() >= later);
        assert!(!clock.jump_to(start));
        assert!(clock.now() >= later);
        // Ten simulated seconds are one real second.
        let real = clock.real_until(clock.now() + chrono::Duration::seconds(100));
        assert!(real <= Duration::from_secs(10) && real >= Duration::from_secs(9));
    }

    #[test]
    fn system_clock_never_jumps() {
        let clock = Clock::system();
        assert!(!clock.jump_to(Utc::now() + chrono::Duration::hours(1)));
        assert!(!clock.is_simulated());
    }
}

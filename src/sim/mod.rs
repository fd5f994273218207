//! Faithful local simulators of Twilio and the AssemblyAI Voice Agent API.
//!
//! They are part of the product (`--simulate` shows a whole call or campaign with no accounts)
//! and the test harness. Each is built from the published protocol (see
//! `../shared/reference/`), not from what our client sends, and rejects what the real service
//! rejects. Both listen on loopback, on any port (0 in tests).

pub mod agent;
pub mod personas;
pub mod speech;
pub mod twilio;

use std::time::Duration;

/// How fast simulated time runs: 1.0 is real time (the command line, so a person can watch);
/// tests use a smaller factor. Only waits are scaled; audio content is never changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeScale(pub f64);

impl TimeScale {
    pub const REAL_TIME: TimeScale = TimeScale(1.0);

    /// The wall-clock length of a simulated duration.
    pub fn scale(self, d: Duration) -> Duration {
        d.mul_f64(self.0.max(0.0))
    }

    /// Sleep for a simulated duration.
    pub async fn sleep(self, d: Duration) {
        tokio::time::sleep(self.scale(d)).await;
    }
}

impl Default for TimeScale {
    fn default() -> Self {
        Self::REAL_TIME
    }
}

/// Both simulators, running on loopback.
pub struct Simulation {}

impl Simulation {
    pub async fn start(
        _scale: TimeScale,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<Self> {
        Err(std::io::Error::other("simulators not merged yet"))
    }

    pub fn settings(&self, _raw: crate::settings::RawSettings) -> crate::settings::Settings {
        unreachable!()
    }
}

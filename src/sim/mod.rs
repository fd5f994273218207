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

/// Where running simulators are, and the credentials of their fake accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEndpoints {
    /// `http://127.0.0.1:PORT`; clients append `/2010-04-01/…`.
    pub twilio_api_base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// The fake account's number, in E.164.
    pub from_number: String,
    pub agent_url: String,
    pub api_key: String,
}

/// Both simulators, running on loopback, with the credentials that point a client at them.
pub struct Simulation {
    pub twilio: twilio::FakeTwilio,
    pub agent: agent::FakeAgent,
    pub account_sid: String,
    pub auth_token: String,
    pub from_number: String,
    pub api_key: String,
}

impl Simulation {
    /// Start both simulators; they stop when `shutdown` is cancelled.
    pub async fn start(
        scale: TimeScale,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<Self> {
        let twilio_config = twilio::FakeTwilioConfig {
            time_scale: scale,
            ..twilio::FakeTwilioConfig::default()
        };
        let agent_config = agent::FakeAgentConfig {
            time_scale: scale,
            ..agent::FakeAgentConfig::default()
        };
        Self::start_with(twilio_config, agent_config, shutdown).await
    }

    /// Start both simulators as configured (each with its own time scale and faults); they
    /// stop when `shutdown` is cancelled.
    pub async fn start_with(
        twilio_config: twilio::FakeTwilioConfig,
        agent_config: agent::FakeAgentConfig,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<Self> {
        let account_sid = twilio_config.account_sid.clone();
        let auth_token = twilio_config.auth_token.clone();
        let from_number = twilio_config.numbers.first().cloned().unwrap_or_default();
        let api_key = agent_config.api_key.clone();
        let twilio = twilio::FakeTwilio::start(twilio_config, shutdown.clone()).await?;
        let agent = agent::FakeAgent::start(agent_config, shutdown).await?;
        Ok(Self {
            twilio,
            agent,
            account_sid,
            auth_token,
            from_number,
            api_key,
        })
    }

    /// Where the simulators listen and the fake accounts' credentials: everything a client
    /// needs to be pointed at them. Plain strings, so the simulators need none of the client's
    /// types (settings, secrets, phone numbers) and cannot lean on its parsing.
    pub fn endpoints(&self) -> SimEndpoints {
        SimEndpoints {
            twilio_api_base_url: self.twilio.base_url(),
            account_sid: self.account_sid.clone(),
            auth_token: self.auth_token.clone(),
            from_number: self.from_number.clone(),
            agent_url: self.agent.url(),
            api_key: self.api_key.clone(),
        }
    }
}

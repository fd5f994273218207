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

/// Both simulators, running on loopback, with the settings that point the real client at them.
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

    /// Settings for the simulators: credentials and endpoints are theirs; the rest (region)
    /// comes from `raw`. The public URL is the local server's, set by whoever binds it.
    pub fn settings(&self, raw: crate::settings::RawSettings) -> crate::settings::Settings {
        crate::settings::Settings {
            twilio_account_sid: self.account_sid.clone(),
            twilio_auth_token: crate::secret::Secret::new(self.auth_token.clone()),
            twilio_from_number: crate::phone::E164::parse(&self.from_number)
                .expect("the simulator's own number is valid"),
            assemblyai_api_key: crate::secret::Secret::new(self.api_key.clone()),
            public_url: String::new(),
            port: 0,
            bind_address: [127, 0, 0, 1].into(),
            twilio_api_base_url: self.twilio.base_url(),
            assemblyai_agent_url: self.agent.url(),
            default_region: raw.default_region.filter(|r| !r.trim().is_empty()),
        }
    }
}

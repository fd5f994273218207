//! Shared test harness: the real call stack (server, call service) pointed at the simulators,
//! everything on port 0 and faster than real time.

use dialer::agent::config::AgentConfig;
use dialer::call::dialer::{CallRequest, DialError, Dialer};
use dialer::call::service::{CallService, Endpoints, Timings};
use dialer::call::tools::{NoTools, ToolHandler};
use dialer::events::{CallEvent, Outcome};
use dialer::phone::E164;
use dialer::settings::Settings;
use dialer::shutdown::Shutdown;
use dialer::sim::agent::FakeAgentConfig;
use dialer::sim::twilio::FakeTwilioConfig;
use dialer::sim::{Simulation, TimeScale};
use dialer::startup::{self, App};
use dialer::twilio::TwilioClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Simulated seconds per real second in tests.
pub(crate) const SPEED: f64 = 10.0;

pub(crate) struct TestApp {
    pub app: App,
}

impl TestApp {
    pub(crate) async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    /// Start with settings adjusted by `tweak` (wrong credentials, say).
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        // The test's runtime ends whatever the root would stop.
        let shutdown = Shutdown::new();
        let (mut settings, sim) = startup::simulate(SPEED, None, &shutdown)
            .await
            .expect("simulators start");
        tweak(&mut settings);
        let app = App::start(settings, Some(sim), &shutdown)
            .await
            .expect("app starts");
        TestApp { app }
    }

    /// Start against simulators the test configured (faults, time scales; see
    /// [`twilio_config`] and [`agent_config`]), with settings built from them as
    /// `startup::simulate` builds them, then adjusted by `tweak`.
    pub(crate) async fn start_faulty(
        twilio: FakeTwilioConfig,
        agent: FakeAgentConfig,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestApp {
        let shutdown = Shutdown::new();
        let sim = Simulation::start_with(twilio, agent, shutdown.child())
            .await
            .expect("simulators start");
        let mut settings =
            startup::simulated_settings(&sim.endpoints(), None).expect("simulated settings");
        tweak(&mut settings);
        let app = App::start(settings, Some(sim), &shutdown)
            .await
            .expect("app starts");
        TestApp { app }
    }

    /// The same app with a call service that waits as `timings` say. It is wired as
    /// `App::start` wires it (same Twilio client settings, endpoints and registry).
    pub(crate) fn with_timings(mut self, timings: Timings) -> TestApp {
        let s = &self.app.settings;
        let twilio = TwilioClient::new(
            &s.twilio_api_base_url,
            &s.twilio_account_sid,
            s.twilio_auth_token.clone(),
        );
        let endpoints = Endpoints {
            from: s.twilio_from_number.clone(),
            urls: self.app.urls.clone(),
            agent_url: s.assemblyai_agent_url.clone(),
            agent_key: s.assemblyai_api_key.clone(),
        };
        let service =
            CallService::new(twilio, endpoints, self.app.registry.clone()).with_timings(timings);
        self.app.service = Arc::new(service);
        self
    }

    pub(crate) fn sim(&self) -> &Simulation {
        self.app.simulation.as_ref().expect("simulated")
    }

    pub(crate) fn request(&self, to: &str) -> CallRequest {
        request(to, Arc::new(NoTools))
    }

    /// Place a call and collect its events.
    pub(crate) async fn call(
        &self,
        req: CallRequest,
    ) -> (Result<Outcome, DialError>, Vec<CallEvent>) {
        self.call_with_cancel(req, CancellationToken::new()).await
    }

    pub(crate) async fn call_with_cancel(
        &self,
        req: CallRequest,
        cancel: CancellationToken,
    ) -> (Result<Outcome, DialError>, Vec<CallEvent>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            self.app.service.dial(req, tx, cancel),
        )
        .await
        .expect("call finishes within a minute");
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (result, events)
    }
}

/// The fake Twilio at the tests' speed, with no faults: start from this and add some.
pub(crate) fn twilio_config() -> FakeTwilioConfig {
    FakeTwilioConfig {
        time_scale: TimeScale(1.0 / SPEED),
        ..FakeTwilioConfig::default()
    }
}

/// The fake Voice Agent at the tests' speed, with no faults.
pub(crate) fn agent_config() -> FakeAgentConfig {
    FakeAgentConfig {
        time_scale: TimeScale(1.0 / SPEED),
        ..FakeAgentConfig::default()
    }
}

pub(crate) fn request(to: &str, tools: Arc<dyn ToolHandler>) -> CallRequest {
    CallRequest {
        to: E164::parse(to).expect("valid test number"),
        agent: AgentConfig::default(),
        tools,
        ring_timeout: Duration::from_secs(20),
        time_limit: Duration::from_secs(300),
        machine_detection: true,
        record: false,
        recordings_dir: None,
        late_recording: None,
    }
}

/// Wait until `cond` holds: the simulators record what they received asynchronously, after the
/// client has moved on. Fails the test after five seconds.
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real binary, run in `dir` with no settings from the machine running the tests.
pub(crate) fn command(dir: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("dialer").unwrap();
    cmd.env_clear()
        .current_dir(dir)
        .timeout(Duration::from_secs(120));
    cmd
}

/// `--json` output: every line of stdout one JSON value.
pub(crate) fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(stdout)
        .expect("stdout is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect()
}

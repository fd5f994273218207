//! Shared test harness: the real call stack (server, call service) pointed at the simulators,
//! everything on port 0 and faster than real time.

use dialer::agent::config::AgentConfig;
use dialer::call::dialer::{CallRequest, DialError, Dialer};
use dialer::call::tools::{NoTools, ToolHandler};
use dialer::events::{CallEvent, Outcome};
use dialer::phone::E164;
use dialer::settings::Settings;
use dialer::shutdown::Shutdown;
use dialer::sim::Simulation;
use dialer::startup::{self, App};
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

pub(crate) fn request(to: &str, tools: Arc<dyn ToolHandler>) -> CallRequest {
    CallRequest {
        to: E164::parse(to).expect("valid test number"),
        agent: AgentConfig::default(),
        tools,
        ring_timeout: Duration::from_secs(20),
        time_limit: Duration::from_secs(300),
        machine_detection: true,
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

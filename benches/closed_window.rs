//! How long a large campaign whose calling window is closed takes to reach "waiting", and how
//! long a stop takes while it gets there. Every lead has to be checked and deferred to its
//! window's next opening before the runner knows there is nothing to dial, so this is the work
//! a campaign started at night does before it can sleep.
//!
//! Run: `cargo bench --bench closed_window` (200,000 leads, or `-- 20000` for another size).
//! Under `cargo test` it runs on 2,000 leads as a smoke test.

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use chrono::{DateTime, Utc};
use dialer::agent::config::AgentConfig;
use dialer::call::dialer::{CallRequest, CallSnapshot, DialError, Dialer};
use dialer::campaign::clock::Clock;
use dialer::campaign::config::CampaignConfig;
use dialer::campaign::dnc::DncList;
use dialer::campaign::leads::Lead;
use dialer::campaign::runner::Runner;
use dialer::campaign::store::Store;
use dialer::campaign::{CampaignEvent, LeadStatus};
use dialer::events::CallEvent;
use dialer::phone::E164;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Once the window opens (the simulated clock jumps there) a call may be placed before the
/// bench stops the run: it refuses, as bad credentials would, so nothing rings.
struct Refuses;

impl Dialer for Refuses {
    async fn dial(
        &self,
        _: CallRequest,
        _: mpsc::UnboundedSender<CallEvent>,
        _: CancellationToken,
    ) -> Result<dialer::events::Outcome, DialError> {
        Err(DialError {
            code: Some(20003),
            message: "the bench places no calls".into(),
            transient: false,
        })
    }

    async fn lookup(&self, _: &str) -> Result<Option<CallSnapshot>, DialError> {
        Ok(None)
    }

    async fn hang_up(&self, _: &str) -> Result<(), DialError> {
        Ok(())
    }

    async fn find_calls_to(
        &self,
        _: &E164,
        _: DateTime<Utc>,
    ) -> Result<Vec<CallSnapshot>, DialError> {
        Ok(Vec::new())
    }
}

/// A Tuesday, 03:00 in New York (earlier further west): the default 09:00–20:00 window is closed
/// for every lead.
fn tuesday_night() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
        .expect("a valid instant")
        .with_timezone(&Utc)
}

fn leads(n: usize) -> Vec<Lead> {
    let zones = [
        Some(chrono_tz::America::New_York),
        Some(chrono_tz::America::Chicago),
        Some(chrono_tz::America::Los_Angeles),
        None,
    ];
    (0..n)
        .map(|i| Lead {
            line: i as u64 + 2,
            phone: E164::parse(&format!(
                "+1{}{}{:04}",
                212 + (i / 10_000_000) % 700,
                200 + (i / 10_000) % 800,
                i % 10_000
            ))
            .expect("a valid number"),
            timezone: zones[i % zones.len()],
            vars: vec![("first_name".into(), format!("Lead {i}"))],
        })
        .collect()
}

/// A runner over `n` freshly imported leads, and its events.
fn runner(
    dir: &Path,
    leads: &[Lead],
) -> (Arc<Runner<Refuses>>, mpsc::UnboundedReceiver<CampaignEvent>) {
    let mut store = Store::open(&dir.join("leads.db")).expect("store");
    store.import(leads, tuesday_night()).expect("import");
    let mut config = CampaignConfig::defaults("bench", AgentConfig::default(), dir);
    config.timezone = Some(chrono_tz::America::New_York);
    let dnc = DncList::load(&config.dnc, None).expect("dnc");
    let (tx, rx) = mpsc::unbounded_channel();
    let runner = Runner::new(
        Arc::new(Refuses),
        store,
        config,
        dnc,
        Arc::new(Clock::simulated(tuesday_night(), 1.0)),
        tx,
    );
    (Arc::new(runner), rx)
}

/// From the start of the run to the "waiting" event, how many leads it said wait, and how many
/// transactions the database committed on the way.
async fn to_waiting(dir: &Path, leads: &[Lead]) -> (Duration, u64, u64) {
    let (runner, mut events) = runner(dir, leads);
    let stop = CancellationToken::new();
    let start = Instant::now();
    let run = tokio::spawn(runner.clone().run(stop.clone(), stop.clone()));
    let waiting = loop {
        match events.recv().await.expect("the run reports") {
            CampaignEvent::Waiting { leads, .. } => break leads,
            CampaignEvent::Skipped { status, reason, .. } => {
                panic!("a lead was skipped ({status}: {reason})")
            }
            _ => {}
        }
    };
    let took = start.elapsed();
    let commits = runner.commits();
    stop.cancel();
    let _ = run.await.expect("the run ends");
    (took, waiting, commits)
}

/// How long the run takes to return when stopped `after` its start, and how many leads had
/// been deferred by then.
async fn stop_during_deferral(dir: &Path, leads: &[Lead], after: Duration) -> (Duration, u64) {
    let (runner, _events) = runner(dir, leads);
    let stop = CancellationToken::new();
    let run = tokio::spawn(runner.run(stop.clone(), stop.clone()));
    tokio::time::sleep(after).await;
    let stopped = Instant::now();
    stop.cancel();
    let _ = run.await.expect("the run ends");
    let took = stopped.elapsed();
    let store = Store::open(&dir.join("leads.db")).expect("store");
    let deferred = store
        .leads()
        .expect("leads")
        .iter()
        .filter(|l| l.status == LeadStatus::Pending && l.next_at.is_some())
        .count() as u64;
    (took, deferred)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench");
    let n: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 200_000 } else { 2_000 });
    let leads = leads(n);
    // As the binary runs: tokio's default runtime, one worker per core.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let dir = tempfile::tempdir().expect("temp dir");
    let (took, waiting, commits) = runtime.block_on(to_waiting(dir.path(), &leads));
    assert_eq!(waiting, n as u64, "every lead waits for its window");

    let dir = tempfile::tempdir().expect("temp dir");
    let after = Duration::from_millis(200);
    let (stop_took, deferred) = runtime.block_on(stop_during_deferral(dir.path(), &leads, after));

    println!(
        "closed window: {n} leads: waiting after {:.2} s ({:.0} leads/s, {commits} commits); stopped {} ms into it, the run returned {:.0} ms later ({deferred} deferred by then)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        after.as_millis(),
        stop_took.as_secs_f64() * 1000.0,
    );
}

//! Failing closed (issue 7): a do-not-call list that vanishes, is emptied or cannot be read
//! never lets one of its numbers through; list lines in common US formats are read, and a line
//! that cannot be read stops the campaign before anyone is called; premium-rate and N11 numbers
//! are not dialed unless allowed; results.csv cannot carry a formula. Every claim about who was
//! called is judged from the fake Twilio's own records.

use crate::helpers::{SPEED, TestApp};
use chrono::{DateTime, Utc};
use dialer::campaign::clock::Clock;
use dialer::campaign::runner::{CampaignError, Runner};
use dialer::campaign::store::Store;
use dialer::campaign::{self, CampaignEvent, LeadStatus, Paths, export};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A Tuesday, 10:00 in New York.
const TUESDAY_10_NY: &str = "2026-12-01T15:00:00Z";

/// Leads dialed in this order, one at a time: Ana, then Ben, who is on the list, then Dev.
const LEADS: &str = "phone,first_name\n+12025550100,Ana\n+12025550109,Ben\n+12025550112,Dev\n";
const ANA: &str = "+12025550100";
const BEN: &str = "+12025550109";
const DEV: &str = "+12025550112";

fn campaign_toml(campaign_keys: &str) -> String {
    format!(
        r#"
[agent]
system_prompt = "You are calling {{{{first_name}}}} to confirm an appointment."
greeting = "Hi {{{{first_name}}}}, this is an automated assistant from the clinic about your appointment. Can you make it?"
[campaign]
timezone = "America/New_York"
ring_timeout = 15
concurrency = 1
calls_per_second = 5
{campaign_keys}
[window]
hours = "09:00-20:00"
days = ["mon-sat"]
"#
    )
}

/// A campaign in `dir` whose one do-not-call list is `dnc.txt` there, holding `dnc`.
fn write_campaign(dir: &Path, csv: &str, dnc: &str, keys: &str) -> PathBuf {
    let dnc_path = dir.join("dnc.txt");
    std::fs::write(&dnc_path, dnc).unwrap();
    std::fs::write(dir.join("leads.csv"), csv).unwrap();
    std::fs::write(
        dir.join("leads.toml"),
        campaign_toml(&format!("dnc = [\"dnc.txt\"]\n{keys}")),
    )
    .unwrap();
    dnc_path
}

fn paths(dir: &Path) -> Paths {
    Paths::beside(&dir.join("leads.csv"), None, None, None, false)
}

/// A campaign running in the background; its events arrive as they happen.
struct Running {
    task: tokio::task::JoinHandle<Result<bool, CampaignError>>,
    events: mpsc::UnboundedReceiver<CampaignEvent>,
    seen: Vec<CampaignEvent>,
}

impl Running {
    fn start(app: &TestApp, dir: &Path) -> Running {
        let loaded = campaign::load(&paths(dir), None, Utc::now()).expect("campaign loads");
        let (tx, events) = mpsc::unbounded_channel();
        let start = DateTime::parse_from_rfc3339(TUESDAY_10_NY)
            .unwrap()
            .with_timezone(&Utc);
        let runner = Arc::new(Runner::new(
            app.app.service.clone(),
            loaded.store,
            loaded.config,
            loaded.dnc,
            Arc::new(Clock::simulated(start, SPEED)),
            tx,
        ));
        let task = tokio::spawn(runner.run(CancellationToken::new(), CancellationToken::new()));
        Running {
            task,
            events,
            seen: Vec::new(),
        }
    }

    /// The first event (from now on) that `pick` accepts; fails the test after a minute.
    async fn until(&mut self, what: &str, pick: impl Fn(&CampaignEvent) -> bool) {
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(event) = self.events.recv().await {
                let hit = pick(&event);
                self.seen.push(event);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "no event: {what}; saw {:#?}", self.seen);
    }

    /// Take in the events that have arrived.
    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
    }

    async fn finish(mut self) -> (Result<bool, CampaignError>, Vec<CampaignEvent>) {
        let result = tokio::time::timeout(Duration::from_secs(180), self.task)
            .await
            .expect("the campaign ends within three minutes")
            .expect("the campaign task does not panic");
        while let Some(event) = self.events.recv().await {
            self.seen.push(event);
        }
        (result, self.seen)
    }
}

async fn run(app: &TestApp, dir: &Path) -> (Result<bool, CampaignError>, Vec<CampaignEvent>) {
    Running::start(app, dir).finish().await
}

fn statuses(dir: &Path) -> HashMap<String, LeadStatus> {
    Store::open(&paths(dir).db)
        .unwrap()
        .leads()
        .unwrap()
        .into_iter()
        .map(|l| (l.phone, l.status))
        .collect()
}

/// Numbers the fake Twilio was asked to call, in order.
fn dialed(app: &TestApp) -> Vec<String> {
    app.sim()
        .twilio
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/Calls.json"))
        .filter_map(|r| r.to)
        .collect()
}

fn created(event: &CampaignEvent, to: &str) -> bool {
    matches!(
        event,
        CampaignEvent::Call {
            call: dialer::events::CallEvent::Created { to: t, .. },
            ..
        } if t == to
    )
}

fn finished(event: &CampaignEvent, to: &str) -> bool {
    matches!(event, CampaignEvent::Finished { to: t, .. } if t == to)
}

/// Once the list read as empty the moment its file was gone, and Ben was called.
#[tokio::test]
async fn a_list_that_disappears_mid_campaign_pauses_dialing_until_it_is_back() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dnc = write_campaign(dir.path(), LEADS, &format!("{BEN}\n"), "");
    let moved = dir.path().join("dnc.txt.moved");

    let mut running = Running::start(&app, dir.path());
    running
        .until("Ana's call is created", |e| created(e, ANA))
        .await;
    // Renamed away, as a sync tool or an editor's save may do for a moment.
    std::fs::rename(&dnc, &moved).unwrap();
    running
        .until("dialing pauses", |e| {
            matches!(e, CampaignEvent::DialingPaused { .. })
        })
        .await;
    let Some(CampaignEvent::DialingPaused { file, reason }) = running.seen.last().cloned() else {
        unreachable!()
    };
    assert_eq!(file, dnc.display().to_string());
    assert!(reason.contains("no longer exists"), "{reason}");
    assert!(
        running.seen.iter().any(|e| finished(e, ANA)),
        "Ana's call ended before the next dial: {:#?}",
        running.seen
    );

    // Paused for a while (many rechecks of the simulated clock): nobody else is called.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(dialed(&app), [ANA]);
    running.drain();
    assert!(
        !running.seen.iter().any(|e| matches!(
            e,
            CampaignEvent::Skipped { .. }
                | CampaignEvent::Dialing { .. }
                | CampaignEvent::Waiting { .. }
        ) && !matches!(e, CampaignEvent::Dialing { to, .. } if to == ANA)),
        "Ben and Dev wait, neither skipped nor dialed, and no wait is announced: {:#?}",
        running.seen
    );

    std::fs::rename(&moved, &dnc).unwrap();
    running
        .until("dialing resumes", |e| {
            matches!(e, CampaignEvent::DialingResumed { .. })
        })
        .await;
    let (result, events) = running.finish().await;
    assert!(matches!(result, Ok(true)), "{:?}", result.err());
    assert_eq!(dialed(&app), [ANA, DEV]);
    let statuses = statuses(dir.path());
    assert_eq!(statuses[BEN], LeadStatus::DoNotCall);
    assert_eq!(statuses[DEV], LeadStatus::Completed);
    let pauses = events
        .iter()
        .filter(|e| matches!(e, CampaignEvent::DialingPaused { .. }))
        .count();
    assert_eq!(pauses, 1, "said once: {events:#?}");
}

/// Once a truncate-then-write by another program, read in its window, let Ben through.
#[tokio::test]
async fn a_list_emptied_or_rewritten_mid_campaign_still_blocks_its_numbers() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dnc = write_campaign(dir.path(), LEADS, &format!("{BEN}, asked in May\n"), "");

    let mut running = Running::start(&app, dir.path());
    running
        .until("Ana's call is created", |e| created(e, ANA))
        .await;
    // The first half of a truncate-then-write, left there while Ben's turn comes.
    std::fs::write(&dnc, "").unwrap();
    running
        .until("Ben's turn", |e| {
            matches!(e, CampaignEvent::Skipped { to, .. } if to == BEN)
                || matches!(e, CampaignEvent::Dialing { to, .. } if to == BEN)
        })
        .await;
    // Rewritten without Ben (a list pruned by hand): still blocked for this run.
    std::fs::write(&dnc, "+12025550199\n").unwrap();
    let (result, events) = running.finish().await;
    assert!(matches!(result, Ok(true)), "{:?}", result.err());
    assert_eq!(dialed(&app), [ANA, DEV]);
    assert_eq!(statuses(dir.path())[BEN], LeadStatus::DoNotCall);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, CampaignEvent::DialingPaused { .. })),
        "an empty file is a readable list"
    );
}

/// Once these lines were skipped with a warning (no DEFAULT_REGION), and all five were called.
#[tokio::test]
async fn us_formats_in_a_list_are_read_when_the_campaign_calls_north_america() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_campaign(
        dir.path(),
        "phone,first_name\n+12025550113,A\n+12025550116,B\n+12025550115,C\n+12025550117,D\n+12025550118,E\n+12025550100,Ana\n",
        "# kept by the front desk\n2025550113\n12025550116, by phone\n1-202-555-0115\n202.555.0117\n(202) 555-0118 # letter\n",
        "",
    );
    let (result, _) = run(&app, dir.path()).await;
    assert!(matches!(result, Ok(true)), "{:?}", result.err());
    assert_eq!(dialed(&app), [ANA]);
    let statuses = statuses(dir.path());
    for n in ["13", "15", "16", "17", "18"] {
        assert_eq!(
            statuses[&format!("+120255501{n}")],
            LeadStatus::DoNotCall,
            "{n}"
        );
    }
}

#[tokio::test]
async fn a_list_line_that_cannot_be_read_stops_the_campaign_before_its_first_dial() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dnc = write_campaign(
        dir.path(),
        LEADS,
        &format!("{BEN}\n020 7183 8750\nBen's wife\n"),
        "",
    );
    let e = campaign::load(&paths(dir.path()), None, Utc::now())
        .err()
        .expect("the campaign does not load")
        .to_string();
    assert_eq!(
        e,
        format!(
            "do-not-call list {}, line 2: '020 7183 8750' is a national number; write it as +<country code><number>, or set a default region; correct the line or make it a comment with # (1 more such lines)",
            dnc.display()
        )
    );
    assert!(!paths(dir.path()).db.exists(), "nothing was imported");
    assert!(dialed(&app).is_empty());
}

/// The same through the binary: one line on stderr, exit code 2, nobody called.
#[test]
fn the_command_exits_2_naming_the_list_line() {
    let dir = tempfile::tempdir().unwrap();
    write_campaign(dir.path(), LEADS, "2025550109\nnot a number\n", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dialer"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["campaign", "leads.csv", "--simulate", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("dnc.txt, line 2: 'not a number'"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing ran");
    assert!(!dir.path().join("leads.sim.db").exists());
}

/// Once dialed like any other number.
#[tokio::test]
async fn premium_rate_and_n11_numbers_are_dialed_only_when_allowed() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_campaign(
        dir.path(),
        "phone,first_name,notes\n+19005550100,Pay,=HYPERLINK(\"http://x\")\n+19765550100,Pay2,\n+19115550100,Nine,\n+12024115555,Info,\n+12025550100,Ana,@SUM(A1)\n",
        "",
        "allow_prefixes = [\"+1900\"]",
    );
    let loaded = campaign::load(&paths(dir.path()), None, Utc::now()).unwrap();
    let bad: Vec<(u64, &str)> = loaded
        .bad_rows
        .iter()
        .map(|b| (b.line, b.reason.as_str()))
        .collect();
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert_eq!(
        bad[0],
        (
            3,
            "+19765550100 is a premium-rate number (+1 976), not dialed by default; to call it, add \"+1976\" to campaign.allow_prefixes"
        )
    );
    assert_eq!((bad[1].0, bad[2].0), (4, 5));
    drop(loaded);

    let (result, _) = run(&app, dir.path()).await;
    assert!(matches!(result, Ok(true)), "{:?}", result.err());
    assert_eq!(dialed(&app), ["+19005550100", ANA]);

    // The results: the leads' own `notes` column beside the agent's, formulas defused.
    let store = Store::open(&paths(dir.path()).db).unwrap();
    let written = export::export(&store, &paths(dir.path()).out).unwrap();
    let mut reader = csv::Reader::from_path(&written.results).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[..3], ["phone", "first_name", "lead_notes"]);
    assert_eq!(header.iter().filter(|h| *h == "notes").count(), 1);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(&rows[0][0], "+19005550100");
    assert_eq!(&rows[0][2], "'=HYPERLINK(\"http://x\")");
    assert_eq!(&rows[1][2], "'@SUM(A1)");
}

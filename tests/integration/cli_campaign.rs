//! `dialer campaign` as a user runs it: the real binary, its exit codes and output, Ctrl-C, and
//! `kill -9` in the middle of a campaign followed by a resume, judged against the records of a
//! simulator running in a separate process (so the kill does not take Twilio's memory with it).

use dialer::campaign::LeadStatus;
use dialer::campaign::store::Store;
use dialer::phone::E164;
use dialer::secret::Secret;
use dialer::twilio::TwilioClient;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn dialer(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dialer"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    cmd
}

/// Lines of a child's stdout, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const TOML: &str = r#"
[agent]
greeting = "Hi {{first_name}}, this is an automated assistant from the clinic about your appointment. Can you make it?"
[campaign]
timezone = "America/New_York"
ring_timeout = 15
{keys}
[window]
hours = "00:00-24:00"
days = ["mon-sun"]
[retry]
busy = { attempts = 1, delay = "0s" }
no_answer = { attempts = 1, delay = "0s" }
failed = { attempts = 1, delay = "0s" }
voicemail = { attempts = 1, delay = "0s" }
"#;

fn write_campaign(dir: &Path, csv: &str, keys: &str) {
    std::fs::write(dir.join("leads.csv"), csv).unwrap();
    std::fs::write(dir.join("leads.toml"), TOML.replace("{keys}", keys)).unwrap();
}

#[test]
fn bad_rows_are_reported_by_line_and_a_missing_phone_column_dials_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_campaign(
        dir.path(),
        "phone,first_name\n+12025550100,Ana\n12,Short\n+12025550100,Again\n+12025550109,Ben,extra\n",
        "",
    );
    let out = dialer(dir.path())
        .args([
            "campaign",
            "leads.csv",
            "--simulate",
            "--sim-speed",
            "10",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = crate::helpers::json_lines(&out.stdout);
    let bad: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "bad_row")
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(bad, [3, 5]);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "duplicate" && e["line"] == 4 && e["first_line"] == 2)
    );
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["complete"], true);
    assert_eq!(done["summary"]["leads"], 1);

    // No phone column: one line naming the problem, exit 2, and no database.
    let dir = tempfile::tempdir().unwrap();
    write_campaign(dir.path(), "name,mobile\nAna,+12025550100\n", "");
    let out = dialer(dir.path())
        .args(["campaign", "leads.csv", "--simulate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("phone"), "{stderr}");
    assert!(!dir.path().join("leads.sim.db").exists());

    // A bad campaign file names the key.
    let dir = tempfile::tempdir().unwrap();
    write_campaign(dir.path(), "phone\n+12025550100\n", "concurrency = 0");
    let out = dialer(dir.path())
        .args(["campaign", "leads.csv", "--simulate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("campaign.concurrency"));
}

#[test]
fn the_demo_campaign_runs_to_its_summary_and_its_results_can_be_regenerated() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns");
    for f in ["demo.csv", "demo.toml", "demo-do-not-call.txt"] {
        std::fs::copy(demo.join(f), dir.path().join(f)).unwrap();
    }
    let out = dialer(dir.path())
        .args(["campaign", "demo.csv", "--simulate", "--sim-speed", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = dir.path().join("demo.sim.db");
    let statuses: HashMap<String, LeadStatus> = Store::open(&db)
        .unwrap()
        .leads()
        .unwrap()
        .into_iter()
        .map(|l| (l.phone, l.status))
        .collect();
    let expect = [
        ("+12025550100", LeadStatus::Completed),
        ("+12025550106", LeadStatus::OptedOut),
        ("+12025550105", LeadStatus::VoicemailLeft),
        ("+12025550114", LeadStatus::Transferred),
        ("+12025550115", LeadStatus::Completed),
        ("+12025550113", LeadStatus::Voicemail),
        ("+12025550111", LeadStatus::Completed),
        ("+12025550102", LeadStatus::NoAnswer),
        ("+12025550107", LeadStatus::DoNotCall),
        ("+12135550100", LeadStatus::Completed),
    ];
    for (phone, status) in expect {
        assert_eq!(statuses[phone], status, "{phone}\n{stdout}");
    }
    let opt_outs = std::fs::read_to_string(dir.path().join("demo-opt-outs.txt")).unwrap();
    assert!(opt_outs.contains("+12025550106"));

    // The results folder is rebuilt from the database alone.
    let results = dir.path().join("demo-sim-results");
    let first = std::fs::read_to_string(results.join("results.csv")).unwrap();
    std::fs::remove_dir_all(&results).unwrap();
    let out = dialer(dir.path())
        .args(["campaign", "demo.csv", "--simulate", "--export"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(results.join("results.csv")).unwrap(),
        first
    );
}

/// A simulated campaign of `n` agreeable callees, run with `--json` on a child process.
fn start_simulated(dir: &Path, first: u32, n: u32, keys: &str, speed: &str) -> Child {
    let mut csv = String::from("phone,first_name\n");
    for i in 0..n {
        csv.push_str(&format!("+1202555{:04},P{i}\n", first + i));
    }
    write_campaign(dir, &csv, keys);
    dialer(dir)
        .args([
            "campaign",
            "leads.csv",
            "--simulate",
            "--sim-speed",
            speed,
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Read JSON events until one satisfies `until` (it is included).
fn events_until(rx: &mpsc::Receiver<String>, until: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("events come");
        let event: Value = serde_json::from_str(&line).unwrap();
        let last = until(&event);
        events.push(event);
        if last {
            return events;
        }
    }
}

#[cfg(unix)]
fn ctrl_c(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn first_ctrl_c_stops_new_dials_and_lets_live_calls_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_simulated(
        dir.path(),
        3000,
        8,
        "concurrency = 2\ncalls_per_second = 2",
        "5",
    );
    let rx = lines(&mut child);
    let mut events = events_until(&rx, |e| e["event"] == "dialing");
    ctrl_c(&child);
    let exit = wait(&mut child, Duration::from_secs(120));
    events.extend(
        rx.iter()
            .map(|l| serde_json::from_str::<Value>(&l).unwrap()),
    );
    assert_eq!(exit.code(), Some(130));
    assert!(events.iter().any(|e| e["event"] == "draining"));
    let dialed: HashSet<u64> = events
        .iter()
        .filter(|e| e["event"] == "dialing")
        .map(|e| e["lead"].as_u64().unwrap())
        .collect();
    let finished: HashSet<u64> = events
        .iter()
        .filter(|e| e["event"] == "finished")
        .map(|e| e["lead"].as_u64().unwrap())
        .collect();
    assert_eq!(dialed, finished, "every live call finished");
    assert!(dialed.len() < 8, "no new dials after Ctrl-C");
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["complete"], false);
    let store = Store::open(&dir.path().join("leads.sim.db")).unwrap();
    let leads = store.leads().unwrap();
    assert_eq!(
        leads
            .iter()
            .filter(|l| l.status == LeadStatus::Completed)
            .count(),
        finished.len(),
        "each finished call is saved"
    );
    assert!(store.in_flight().unwrap().is_empty());
}

#[cfg(unix)]
#[test]
fn second_ctrl_c_hangs_the_live_calls_up_and_saves_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_simulated(
        dir.path(),
        5000,
        4,
        "concurrency = 2\ncalls_per_second = 5",
        "2",
    );
    let rx = lines(&mut child);
    // Wait until a conversation is under way, then Ctrl-C twice.
    let mut events = events_until(&rx, |e| {
        e["event"] == "call" && e["call"]["event"] == "connected"
    });
    ctrl_c(&child);
    std::thread::sleep(Duration::from_millis(200));
    ctrl_c(&child);
    let exit = wait(&mut child, Duration::from_secs(60));
    events.extend(
        rx.iter()
            .map(|l| serde_json::from_str::<Value>(&l).unwrap()),
    );
    assert_eq!(exit.code(), Some(130));
    let ended: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "call" && e["call"]["event"] == "ended")
        .map(|e| &e["call"]["outcome"])
        .collect();
    assert!(
        ended.iter().any(|o| o["ended_by"] == "operator"),
        "a live call was hung up by the operator: {ended:?}"
    );
    let store = Store::open(&dir.path().join("leads.sim.db")).unwrap();
    assert!(
        store.in_flight().unwrap().is_empty(),
        "every hung-up call is saved"
    );
    assert!(
        store.leads().unwrap().iter().any(|l| !l.status.is_final()),
        "leads are left for the next run"
    );
}

/// The simulators in a process of their own, so that killing a dialer leaves their records.
struct Simulators {
    child: Child,
    settings: HashMap<String, String>,
}

impl Simulators {
    fn start(dir: &Path) -> Simulators {
        Self::start_at(dir, "10")
    }

    /// At `speed` simulated seconds per real second.
    fn start_at(dir: &Path, speed: &str) -> Simulators {
        let mut child = dialer(dir)
            .args(["simulators", "--sim-speed", speed])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let settings = serde_json::from_str(
            &lines(&mut child)
                .recv_timeout(Duration::from_secs(20))
                .expect("the simulators print their settings"),
        )
        .unwrap();
        Simulators { child, settings }
    }

    /// `dialer campaign leads.csv --json`, not simulated, pointed at these simulators, with
    /// `overrides` on top of their settings. The server takes any free port: with a Twilio on
    /// this machine and no PUBLIC_URL, it is its own public URL.
    fn campaign(&self, dir: &Path, overrides: &[(&str, &str)]) -> Command {
        let mut cmd = dialer(dir);
        cmd.args(["campaign", "leads.csv", "--json"])
            .env("PORT", "0")
            .stdout(Stdio::piped());
        for (k, v) in &self.settings {
            cmd.env(k, v);
        }
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        cmd
    }

    /// Every call to `number` in the fake Twilio's records, asked through its REST API.
    async fn calls_to(&self, number: &str) -> Vec<dialer::twilio::CallResource> {
        let twilio = TwilioClient::new(
            &self.settings["TWILIO_API_BASE_URL"],
            &self.settings["TWILIO_ACCOUNT_SID"],
            Secret::new(self.settings["TWILIO_AUTH_TOKEN"].clone()),
        );
        let since = chrono::Utc::now() - chrono::Duration::days(2);
        twilio
            .list_calls_to(E164::parse(number).unwrap().as_str(), since)
            .await
            .unwrap()
    }
}

impl Drop for Simulators {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_voice_agent_key_stops_the_campaign_before_anyone_is_called() {
    let dir = tempfile::tempdir().unwrap();
    let sims = Simulators::start(dir.path());
    write_campaign(
        dir.path(),
        "phone,first_name\n+12025550100,Ana\n+12025550109,Ben\n",
        "",
    );
    let out = sims
        .campaign(dir.path(), &[("ASSEMBLYAI_API_KEY", "not-the-key")])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ASSEMBLYAI_API_KEY") && stderr.contains("nobody was called"),
        "{stderr}"
    );
    for n in ["+12025550100", "+12025550109"] {
        assert!(sims.calls_to(n).await.is_empty(), "{n} was called");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_campaign_then_resume_dials_nobody_twice_and_loses_no_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let sims = Simulators::start(dir.path());

    // Agreeable callees and a few others; no retries, so every number is called exactly once.
    let mut csv = String::from("phone,first_name\n");
    let mut numbers = Vec::new();
    for i in 0..10 {
        let n = format!("+1202555{:04}", 4000 + i);
        csv.push_str(&format!("{n},P{i}\n"));
        numbers.push(n);
    }
    for n in ["+12025550101", "+12025550106", "+12025550109"] {
        csv.push_str(&format!("{n},X\n"));
        numbers.push(n.to_string());
    }
    write_campaign(dir.path(), &csv, "concurrency = 3\ncalls_per_second = 3");
    let run = || sims.campaign(dir.path(), &[]);

    let mut first = run().spawn().unwrap();
    let rx = lines(&mut first);
    let mut reported: HashMap<String, String> = HashMap::new();
    let mut live: HashSet<String> = HashSet::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the first run makes progress");
        let e: Value = serde_json::from_str(&line).unwrap();
        let to = e["to"].as_str().unwrap_or_default().to_string();
        match e["event"].as_str() {
            Some("dialing") => {
                live.insert(to);
            }
            Some("finished") => {
                live.remove(&to);
                reported.insert(to, e["status"].as_str().unwrap().to_string());
            }
            _ => {}
        }
        if reported.len() >= 3 && !live.is_empty() {
            break;
        }
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let mut second = run().stdout(Stdio::null()).spawn().unwrap();
    let exit = wait(&mut second, Duration::from_secs(180));
    assert_eq!(exit.code(), Some(0));

    // Twilio's own records against the database: every call Twilio has is an attempt the
    // database knows (nothing dialed behind its back, nothing dialed twice at once), and
    // nobody had two conversations.
    let store = Store::open(&dir.path().join("leads.db")).unwrap();
    let leads = store.leads().unwrap();
    for n in &numbers {
        let calls = sims.calls_to(n).await;
        let lead = leads.iter().find(|l| &l.phone == n).unwrap();
        assert_eq!(calls.len() as u32, lead.attempts, "{n}: {calls:?}");
        let answered = calls
            .iter()
            .filter(|c| c.duration_secs().unwrap_or(0) > 0)
            .count();
        assert!(answered <= 1, "{n} was answered {answered} times");
        assert!(!calls.is_empty(), "{n} was never called");
    }
    // Nothing reported before the kill was lost or changed.
    for (to, status) in &reported {
        let lead = leads.iter().find(|l| &l.phone == to).unwrap();
        assert_eq!(lead.status.as_str(), status, "{to}");
    }
    assert!(leads.iter().all(|l| l.status.is_final()));
    assert!(store.in_flight().unwrap().is_empty());
}

#[cfg(unix)]
#[test]
fn ctrl_c_during_a_long_deferral_stops_within_seconds() {
    // A campaign started at 03:00 with every lead's window closed: each one is deferred to
    // 09:00 before the run can wait. Ctrl-C must not queue behind that work.
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("phone,first_name\n");
    for i in 0..N {
        csv.push_str(&format!(
            "+1212{}{:04},P{i}\n",
            200 + i / 10_000,
            i % 10_000
        ));
    }
    std::fs::write(dir.path().join("leads.csv"), csv).unwrap();
    let toml = TOML
        .replace("{keys}", "")
        .replace(r#"hours = "00:00-24:00""#, r#"hours = "09:00-20:00""#)
        + "[simulation]\nclock_start = \"2026-12-01T03:00:00-05:00\"\n";
    std::fs::write(dir.path().join("leads.toml"), toml).unwrap();
    let mut child = dialer(dir.path())
        .args([
            "campaign",
            "leads.csv",
            "--simulate",
            "--sim-speed",
            "50",
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    events_until(&rx, |e| e["event"] == "plan");
    ctrl_c(&child);
    let interrupted = std::time::Instant::now();
    let exit = wait(&mut child, Duration::from_secs(10));
    assert_eq!(exit.code(), Some(130), "after {:?}", interrupted.elapsed());
    let events: Vec<Value> = rx
        .iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let done = events.last().unwrap();
    assert_eq!(
        (&done["event"], &done["complete"]),
        (&"done".into(), &false.into())
    );
    let store = Store::open(&dir.path().join("leads.sim.db")).unwrap();
    let deferred = store
        .leads()
        .unwrap()
        .iter()
        .filter(|l| l.next_at.is_some())
        .count();
    assert!(
        deferred < N,
        "the interrupt came after the deferring ({deferred} of {N}): the test proves nothing"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_conversation_keeps_what_was_said_through_the_resume() {
    let dir = tempfile::tempdir().unwrap();
    // In real time, so that the call is still going a second after its first two lines.
    let sims = Simulators::start_at(dir.path(), "1");
    write_campaign(dir.path(), "phone,first_name\n+12025554200,Ana\n", "");
    let mut first = sims.campaign(dir.path(), &[]).spawn().unwrap();
    let rx = lines(&mut first);
    let mut said: Vec<String> = Vec::new();
    while said.len() < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the conversation goes on");
        let e: Value = serde_json::from_str(&line).unwrap();
        assert_ne!(e["event"], "finished", "the call ended before the kill");
        if e["event"] == "call" && e["call"]["event"] == "line" {
            said.push(e["call"]["line"]["text"].as_str().unwrap().to_string());
        }
    }
    // Lines are saved in batches a fraction of a second apart; a second covers the batch.
    std::thread::sleep(Duration::from_secs(1));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let after: Vec<Value> = rx
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    assert!(
        !after.iter().any(|e| e["event"] == "finished"),
        "the call ended before the kill: {after:?}"
    );
    let texts = |lines: &[dialer::events::TranscriptLine]| -> Vec<String> {
        lines.iter().map(|l| l.text.clone()).collect()
    };
    {
        let store = Store::open(&dir.path().join("leads.db")).unwrap();
        let flying = store.in_flight().unwrap();
        assert_eq!(flying.len(), 1, "the call was live when the run died");
        let saved = texts(&store.lines(flying[0].attempt_id).unwrap());
        assert!(saved.starts_with(&said), "{saved:?} lacks {said:?}");
    }

    let mut second = sims
        .campaign(dir.path(), &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(wait(&mut second, Duration::from_secs(120)).code(), Some(0));
    let store = Store::open(&dir.path().join("leads.db")).unwrap();
    assert!(
        store.in_flight().unwrap().is_empty(),
        "the call was settled"
    );
    let records = store.transcripts().unwrap();
    assert_eq!(records.len(), 1, "settled, not dialed again");
    assert!(
        texts(&records[0].transcript).starts_with(&said),
        "{:?} lacks {said:?}",
        records[0].transcript
    );
    // And the results folder shows them.
    let sid = records[0].call_sid.clone().unwrap();
    let file = dir
        .path()
        .join("leads-results/transcripts")
        .join(format!("{sid}.jsonl"));
    let exported: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(exported.starts_with(&said), "{exported:?} lacks {said:?}");
}

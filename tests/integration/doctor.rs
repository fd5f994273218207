//! `dialer doctor` against the simulators: every check passing, each failing for its own
//! reason with the checks that need it skipped, and the real binary's lines and exit codes.

use crate::helpers::{TestApp, agent_config, twilio_config};
use dialer::agent::config::AgentConfig;
use dialer::doctor::{self, CheckId, Report, Status};
use dialer::phone::E164;
use dialer::secret::Secret;
use dialer::sim::twilio::NumberSetup;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const SECRETS: [&str; 2] = ["sim-twilio-token", "sim-assemblyai-key"];

async fn check(t: &TestApp) -> Report {
    let report = doctor::run(&t.app, &AgentConfig::default()).await;
    let text = serde_json::to_string(&report).unwrap();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    report
}

fn status(report: &Report, id: CheckId) -> Status {
    report.get(id).expect("every check is reported").status
}

/// Point the simulated number's Voice URL at `t`'s server, as a user would in the Console.
fn voice_url_here(t: &TestApp) {
    let set = t.sim().twilio.set_number(
        t.app.settings.twilio_from_number.as_str(),
        NumberSetup {
            voice_url: format!("{}/twilio/voice", t.app.urls.base()),
            ..NumberSetup::default()
        },
    );
    assert!(set, "the simulated account owns its from-number");
}

#[tokio::test]
async fn against_the_simulators_every_check_passes() {
    let t = TestApp::start().await;
    voice_url_here(&t);
    let report = check(&t).await;
    let ids: Vec<CheckId> = report.checks.iter().map(|c| c.check).collect();
    assert_eq!(
        ids,
        [
            CheckId::TwilioAccount,
            CheckId::FromNumber,
            CheckId::Agent,
            CheckId::PublicUrl,
            CheckId::VoiceUrl,
            CheckId::Clock
        ]
    );
    for c in &report.checks {
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }
    assert!(report.passed());
    let account = report.get(CheckId::TwilioAccount).unwrap();
    assert!(account.detail.contains("is active (full)"), "{account:?}");
    let url = report.get(CheckId::PublicUrl).unwrap();
    assert!(url.detail.contains("reaches this process"), "{url:?}");
}

#[tokio::test]
async fn refused_credentials_fail_once_and_what_needs_them_is_skipped() {
    let t = TestApp::start_with(|s| s.twilio_auth_token = Secret::new("not-the-token")).await;
    let report = check(&t).await;
    let account = report.get(CheckId::TwilioAccount).unwrap();
    assert_eq!(account.status, Status::Fail);
    assert_eq!(account.setting, "TWILIO_AUTH_TOKEN");
    assert!(account.detail.contains("20003"), "{account:?}");
    assert_eq!(status(&report, CheckId::FromNumber), Status::Skipped);
    assert_eq!(status(&report, CheckId::VoiceUrl), Status::Skipped);
    // Neither needs Twilio's credentials: a refusal still carries Twilio's time.
    assert_eq!(status(&report, CheckId::Agent), Status::Pass);
    assert_eq!(status(&report, CheckId::PublicUrl), Status::Pass);
    assert_eq!(status(&report, CheckId::Clock), Status::Pass);
    assert!(!report.passed());
    assert_eq!(report.count(Status::Fail), 1);
    let asked: Vec<String> = t
        .sim()
        .twilio
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        asked.len(),
        1,
        "nothing is asked after a refusal: {asked:?}"
    );
}

#[tokio::test]
async fn a_from_number_that_is_not_the_accounts_fails_and_its_voice_url_is_skipped() {
    let t = TestApp::start_with(|s| {
        s.twilio_from_number = E164::parse("+12025550199").unwrap();
    })
    .await;
    let report = check(&t).await;
    let from = report.get(CheckId::FromNumber).unwrap();
    assert_eq!(from.status, Status::Fail);
    assert_eq!(from.setting, "TWILIO_FROM_NUMBER");
    assert!(from.detail.contains("+12025550199"), "{from:?}");
    assert!(from.detail.contains("nor a verified caller ID"), "{from:?}");
    assert_eq!(status(&report, CheckId::VoiceUrl), Status::Skipped);
    assert_eq!(status(&report, CheckId::TwilioAccount), Status::Pass);
    assert!(!report.passed());
}

#[tokio::test]
async fn a_verified_caller_id_is_a_valid_from_number_and_places_calls() {
    let verified = "+12025550150";
    let twilio = dialer::sim::twilio::FakeTwilioConfig {
        verified_caller_ids: vec![verified.into()],
        ..twilio_config()
    };
    let t = TestApp::start_faulty(twilio, agent_config(), |s| {
        s.twilio_from_number = E164::parse(verified).unwrap();
    })
    .await;
    let report = check(&t).await;
    let from = report.get(CheckId::FromNumber).unwrap();
    assert_eq!(from.status, Status::Pass, "{from:?}");
    assert!(from.detail.contains("verified caller ID"), "{from:?}");
    assert_eq!(status(&report, CheckId::VoiceUrl), Status::Skipped);
    assert!(report.passed());
    // What the check promises holds: Twilio takes calls from it.
    let (outcome, _) = t.call(t.request("+12025550100")).await;
    let outcome = outcome.expect("a call from a verified caller ID is placed");
    assert!(outcome.is_success(), "{outcome:?}");
}

#[tokio::test]
async fn a_number_that_cannot_call_fails_and_a_voice_url_elsewhere_only_warns() {
    let t = TestApp::start().await;
    let from = t.app.settings.twilio_from_number.as_str().to_string();
    t.sim().twilio.set_number(
        &from,
        NumberSetup {
            voice_url: "https://demo.twilio.com/welcome/voice/".into(),
            ..NumberSetup::default()
        },
    );
    let report = check(&t).await;
    let voice = report.get(CheckId::VoiceUrl).unwrap();
    assert_eq!(voice.status, Status::Warn, "{voice:?}");
    assert!(voice.detail.contains("demo.twilio.com"), "{voice:?}");
    assert!(
        voice
            .fix
            .as_deref()
            .unwrap()
            .contains(&format!("{}/twilio/voice", t.app.urls.base())),
        "{voice:?}"
    );
    assert!(report.passed(), "a warning is not a failure");

    t.sim().twilio.set_number(
        &from,
        NumberSetup {
            voice: false,
            ..NumberSetup::default()
        },
    );
    let report = check(&t).await;
    assert_eq!(status(&report, CheckId::FromNumber), Status::Fail);
    assert_eq!(status(&report, CheckId::VoiceUrl), Status::Skipped);
    assert!(!report.passed());
}

#[tokio::test]
async fn a_public_url_that_leads_to_another_process_or_nowhere_fails() {
    let other = TestApp::start().await;
    let other_url = other.app.urls.base().to_string();
    let t = TestApp::start_with(|s| s.public_url = other_url.clone()).await;
    let report = check(&t).await;
    let url = report.get(CheckId::PublicUrl).unwrap();
    assert_eq!(url.status, Status::Fail);
    assert!(url.detail.contains("another dialer process"), "{url:?}");

    // A port where nothing listens any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = TestApp::start_with(|s| s.public_url = format!("http://127.0.0.1:{closed}")).await;
    let report = check(&t).await;
    let url = report.get(CheckId::PublicUrl).unwrap();
    assert_eq!(url.status, Status::Fail);
    assert!(url.detail.contains("does not answer"), "{url:?}");
    assert!(url.fix.as_deref().unwrap().contains("tunnel"), "{url:?}");
}

#[tokio::test]
async fn a_refused_agent_key_names_the_key() {
    let t = TestApp::start_with(|s| s.assemblyai_api_key = Secret::new("not-the-key")).await;
    let report = check(&t).await;
    let agent = report.get(CheckId::Agent).unwrap();
    assert_eq!(agent.status, Status::Fail, "{agent:?}");
    assert_eq!(agent.setting, "ASSEMBLYAI_API_KEY");
    assert_eq!(report.count(Status::Fail), 1);
}

fn dialer(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dialer"));
    cmd.env_clear().current_dir(dir);
    cmd
}

#[test]
fn dialer_doctor_simulate_shows_one_line_per_check_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = dialer(dir.path())
        .args(["doctor", "--simulate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "six checks and a summary: {stdout}");
    for (line, setting) in lines.iter().zip([
        "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN",
        "TWILIO_FROM_NUMBER",
        "ASSEMBLYAI_API_KEY",
        "PUBLIC_URL",
        "TWILIO_FROM_NUMBER's Voice URL",
        "this machine's clock",
    ]) {
        assert!(line.contains(&format!(" {setting}: ")), "{line}");
    }
    // The simulated number is as bought, with no Voice URL: inbound is not set up, which
    // outbound calls do not need.
    assert!(lines[4].starts_with("⚠ "), "{}", lines[4]);
    for line in lines.iter().take(6).filter(|l| !l.contains("Voice URL")) {
        assert!(line.starts_with("✔ "), "{line}");
    }
    assert_eq!(lines[6], "ready to call (1 warning)");
    for secret in SECRETS {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
}

/// Wrong credentials, through the real binary against simulators in a process of their own:
/// one ✘, its dependents skipped, exit 7.
#[test]
fn dialer_doctor_with_a_wrong_token_fails_with_exit_7() {
    let dir = tempfile::tempdir().unwrap();
    let mut sims = dialer(dir.path())
        .args(["simulators", "--sim-speed", "10"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(sims.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let settings: std::collections::HashMap<String, String> =
        serde_json::from_str(&first).expect("the simulators print their settings");
    let mut cmd = dialer(dir.path());
    cmd.args(["doctor"]).env("PORT", "0");
    for (k, v) in &settings {
        cmd.env(k, v);
    }
    let out = cmd
        .env("TWILIO_AUTH_TOKEN", "not-the-token")
        .output()
        .unwrap();
    let _ = sims.kill();
    let _ = sims.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("✘ TWILIO_AUTH_TOKEN: Twilio refused the credentials (20003) — "),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("– TWILIO_FROM_NUMBER: skipped"),
        "{stdout}"
    );
    assert!(
        lines[4].starts_with("– TWILIO_FROM_NUMBER's Voice URL: skipped"),
        "{stdout}"
    );
    assert!(lines[2].starts_with("✔ ASSEMBLYAI_API_KEY"), "{stdout}");
    assert!(!stdout.contains("not-the-token"));
    assert_eq!(
        *lines.last().unwrap(),
        "1 check failed, 2 skipped: fix the ✘ lines and run dialer doctor again"
    );
}

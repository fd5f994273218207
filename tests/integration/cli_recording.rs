//! `--record` and `record = true` through the real binary: where the files go, what the JSON
//! says, and the consent check.

use crate::helpers::{command as dialer, json_lines};

#[test]
fn a_recorded_call_writes_its_wav_where_it_is_told_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let call = |extra: &[&str]| {
        let out = dialer(dir.path())
            .env("RECORDINGS_DIR", "from-env")
            .args(["call", "+12025550100", "--simulate", "--sim-speed", "10"])
            .args(["--record", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    };
    for (extra, folder) in [
        (&[][..], "from-env"),
        (&["--recordings-dir", "flag"][..], "flag"),
    ] {
        let events = call(extra);
        let outcome = &events.last().unwrap()["outcome"];
        let sid = outcome["call_sid"].as_str().unwrap();
        let path = format!("{folder}/{sid}.wav");
        assert_eq!(outcome["local_recording"]["path"], path.as_str());
        let (left, right) = dialer::recording::wav::read(&dir.path().join(&path)).unwrap();
        assert!(left.len() > 8000 && left.len() == right.len());
        assert_eq!(outcome["recording"]["status"], "completed", "{outcome}");
        assert!(
            outcome["recording"]["url"]
                .as_str()
                .unwrap()
                .contains("/Recordings/RE")
        );
        assert!(outcome["latency"]["reply_p50_ms"].is_u64(), "{outcome}");
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "line" && e["line"]["latency_ms"].is_u64())
        );
        assert!(events.iter().any(|e| e["event"] == "recording"));
    }
}

#[test]
fn a_recorded_call_must_say_so_in_its_greeting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dialer(dir.path())
        .args(["call", "+12025550100", "--simulate", "--record"])
        .args(["--greeting", "Hi, this is an automated assistant."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("greeting") && stderr.contains("recorded"),
        "{stderr}"
    );
    assert!(!dir.path().join("recordings").exists());
}

const CAMPAIGN: &str = r#"
[agent]
greeting = "{greeting}"
[campaign]
timezone = "America/New_York"
record = true
[window]
hours = "00:00-24:00"
days = ["mon-sun"]
"#;

#[test]
fn a_recorded_campaign_keeps_its_recordings_with_its_results() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leads.csv"), "phone\n+12025550100\n").unwrap();
    // A greeting that does not say the call is recorded is refused before anything starts.
    let silent = "Hi, this is an automated assistant from the clinic. Can you make it?";
    std::fs::write(
        dir.path().join("leads.toml"),
        CAMPAIGN.replace("{greeting}", silent),
    )
    .unwrap();
    let out = dialer(dir.path())
        .args(["campaign", "leads.csv", "--simulate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent.greeting"));

    let told = "Hi, this is an automated assistant from the clinic, and this call is recorded. Can you make it?";
    std::fs::write(
        dir.path().join("leads.toml"),
        CAMPAIGN.replace("{greeting}", told),
    )
    .unwrap();
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
    let events = json_lines(&out.stdout);
    let summary = &events.last().unwrap()["summary"];
    assert!(summary["reply_p50_ms"].is_u64(), "{summary}");
    let results = dir.path().join("leads-sim-results");
    let mut csv = csv::Reader::from_path(results.join("results.csv")).unwrap();
    let header = csv.headers().unwrap().clone();
    let row = csv.records().next().unwrap().unwrap();
    let cell = |name: &str| row[header.iter().position(|h| h == name).unwrap()].to_string();
    let sid = cell("last_call_sid");
    assert!(cell("recording_sid").starts_with("RE"));
    assert!(cell("recording_url").contains(&cell("recording_sid")));
    let wav = results.join("recordings").join(format!("{sid}.wav"));
    assert_eq!(
        cell("local_recording"),
        wav.strip_prefix(dir.path()).unwrap().display().to_string()
    );
    assert!(dialer::recording::wav::read(&wav).is_ok());
}

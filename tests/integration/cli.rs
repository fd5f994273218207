//! The real binary, run as a user would.

use crate::helpers::{command as dialer, json_lines};
use predicates::prelude::*;

#[test]
fn help_lists_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    dialer(dir.path())
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("call"))
        .stdout(predicate::str::contains("campaign"))
        .stdout(predicate::str::contains("serve"))
        .stdout(predicate::str::contains("--simulate"));
}

#[test]
fn missing_setting_is_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    dialer(dir.path())
        .args(["call", "+12025550100"])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::diff(
            "dialer: error: TWILIO_ACCOUNT_SID is not set: copy the Account SID (AC…) from the Twilio Console into .env\n",
        ));
}

#[test]
fn malformed_setting_in_dotenv_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef\nTWILIO_AUTH_TOKEN=t\nTWILIO_FROM_NUMBER=+15005550006\nASSEMBLYAI_API_KEY=k\nPUBLIC_URL=http://example.com\n",
    )
    .unwrap();
    dialer(dir.path())
        .args(["call", "+12025550100"])
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with(
            "dialer: error: PUBLIC_URL is invalid:",
        ))
        .stderr(predicate::str::contains("https://"));
}

#[test]
fn invalid_number_argument_is_rejected_before_dialing() {
    let dir = tempfile::tempdir().unwrap();
    dialer(dir.path())
        .args(["call", "12345", "--simulate"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot call 12345"));
}

#[test]
fn simulated_call_runs_to_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let out = dialer(dir.path())
        .args(["call", "+12025550100", "--simulate", "--sim-speed", "10"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("agent  › "), "{out}");
    assert!(out.contains("callee › Yes, that works for me"), "{out}");
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("✔ completed"), "{last}");
    assert!(last.contains("ended by the agent"), "{last}");
}

#[test]
fn simulated_call_json_and_exit_code_for_busy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dialer(dir.path())
        .args([
            "call",
            "+12025550101",
            "--simulate",
            "--sim-speed",
            "10",
            "--json",
        ])
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    let lines = json_lines(&out);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "ended");
    assert_eq!(last["outcome"]["status"], "busy");
}

/// `dialer … | head -1`: the reader takes one line and goes. The run ends as a normal end —
/// no panic, no backtrace, exit 0 — and nothing is left calling.
fn first_line_then_close(dir: &std::path::Path, args: &[&str]) -> (String, std::process::Output) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dialer"))
        .env_clear()
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        reader.read_line(&mut first).unwrap();
        // Dropping the reader closes the pipe, as `head -1` does when it exits.
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not end after its reader left"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (first, child.wait_with_output().unwrap())
}

#[test]
fn a_closed_stdout_ends_a_call_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (first, out) = first_line_then_close(
        dir.path(),
        &["call", "+12025550100", "--simulate", "--sim-speed", "10"],
    );
    assert!(first.contains("+12025550100"), "{first}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn a_closed_stdout_ends_a_campaign_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns");
    for f in ["demo.csv", "demo.toml", "demo-do-not-call.txt"] {
        std::fs::copy(demo.join(f), dir.path().join(f)).unwrap();
    }
    let (first, out) = first_line_then_close(
        dir.path(),
        &["campaign", "demo.csv", "--simulate", "--sim-speed", "20"],
    );
    assert!(!first.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Bare 32-hex-digit words: the shape of a call's one-time stream token. SIDs (`CA…`, `MZ…`)
/// and session ids (`sess_…`) have a prefix and are not matched.
fn bare_tokens(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let is_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if is_hex(bytes[i]) {
            let start = i;
            while i < bytes.len() && is_hex(bytes[i]) {
                i += 1;
            }
            let before = start.checked_sub(1).map(|j| bytes[j]);
            let glued = before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
            let after = bytes.get(i).copied();
            if i - start == 32 && !glued && !after.is_some_and(|b| b.is_ascii_alphanumeric()) {
                found.push(text[start..i].to_string());
            }
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn no_secret_or_token_reaches_the_output_at_any_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        "sim-twilio-token",
        "sim-assemblyai-key",
        // The Basic credentials of the simulated account, as they travel.
        "QUMwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDpzaW0tdHdpbGlvLXRva2Vu",
    ];
    for level in [
        "trace",
        "debug",
        "dialer=trace,warp=trace,tungstenite=trace",
    ] {
        let out = dialer(dir.path())
            .env("RUST_LOG", level)
            .args([
                "call",
                "+12025550100",
                "--simulate",
                "--sim-speed",
                "20",
                "--json",
            ])
            .assert()
            .success()
            .get_output()
            .clone();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("request"), "{level}: the run was traced");
        for secret in secrets {
            assert!(!text.contains(secret), "{level}: {secret} was printed");
        }
        assert_eq!(bare_tokens(&text), Vec::<String>::new(), "{level}");
    }
}

#[test]
fn the_token_finder_finds_tokens() {
    assert_eq!(
        bare_tokens("path=/twilio/status/02534d211f11e456f8e519d447dd8e76 x"),
        ["02534d211f11e456f8e519d447dd8e76"]
    );
    assert!(
        bare_tokens("CA02534d211f11e456f8e519d447dd8e76 sess_02534d211f11e456f8e519d447dd8e76")
            .is_empty()
    );
}

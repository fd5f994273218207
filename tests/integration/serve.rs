//! `dialer serve`'s inbound half end to end: the fake Twilio rings the server as a caller
//! (signed Voice URL request, TwiML answer run by the fake's interpreter, the Media Stream,
//! the persona speaking through the real bridge to the fake agent, the number's status
//! callback), readiness and metrics, and the drain on SIGTERM with the real binary.

use crate::helpers::{SPEED, TestApp, eventually};
use dialer::agent::config::AgentConfig;
use dialer::campaign::dnc::DncList;
use dialer::events::{CallEvent, Direction, EndedBy, FinalStatus, Outcome, Speaker};
use dialer::inbound::Desk;
use dialer::phone::E164;
use dialer::sim::twilio::{Incoming, SimCall};
use dialer::twilio::signature;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Open the server's reception with an agent whose greeting names the caller.
fn open(app: &TestApp, max_calls: usize, dnc: &Path) -> mpsc::UnboundedReceiver<CallEvent> {
    let (events, rx) = mpsc::unbounded_channel();
    let agent = AgentConfig {
        greeting: "Hello {{caller}}, this is an automated assistant. How can I help?".into(),
        system_prompt: dialer::inbound::DEFAULT_PROMPT.into(),
        ..AgentConfig::default()
    };
    let list = DncList::load(&[dnc.to_path_buf()], None).expect("dnc list");
    let opened = app.app.reception.open(
        Desk {
            service: app.app.service.clone(),
            agent,
            dnc: Arc::new(Mutex::new(list)),
            events,
            max_calls,
            time_limit: Duration::from_secs(300),
        },
        Ok(()),
    );
    assert!(opened);
    rx
}

/// The fake Twilio rings the server from `from`, with the number's status callback set.
fn ring(app: &TestApp, from: &str) -> String {
    app.sim()
        .twilio
        .ring(Incoming {
            url: app.app.urls.voice(),
            from: from.into(),
            to: None,
            status_callback: Some(app.app.urls.number_status()),
        })
        .expect("the fake rings")
}

async fn ended(app: &TestApp, sid: &str) -> SimCall {
    tokio::time::timeout(Duration::from_secs(60), app.sim().twilio.wait_ended(sid))
        .await
        .expect("the call ends within a minute")
        .expect("the fake knows the call")
}

/// Events until the call's outcome.
async fn until_ended(rx: &mut mpsc::UnboundedReceiver<CallEvent>) -> (Vec<CallEvent>, Outcome) {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the call ends within a minute")
            .expect("events flow");
        if let CallEvent::Ended { outcome } = &event {
            let outcome = (**outcome).clone();
            seen.push(event);
            return (seen, outcome);
        }
        seen.push(event);
    }
}

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("server answers");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// The value of one Prometheus sample.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn an_inbound_caller_who_asks_to_be_removed_is_heard_listed_and_the_call_ends_completed() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dnc = dir.path().join("do-not-call.txt");
    let mut rx = open(&app, 10, &dnc);
    let caller = "+12025550106";
    let sid = ring(&app, caller);
    let (events, outcome) = until_ended(&mut rx).await;
    let call = ended(&app, &sid).await;

    // The server's view: an inbound call from the caller, the conversation, the outcome.
    assert!(matches!(
        &events[0],
        CallEvent::Created { to, call_sid, direction: Direction::Inbound } if to == caller && *call_sid == sid
    ));
    assert_eq!(outcome.direction, Direction::Inbound);
    assert_eq!(outcome.to, caller);
    assert_eq!(outcome.call_sid.as_deref(), Some(sid.as_str()));
    assert_eq!(outcome.status, FinalStatus::Completed);
    assert_eq!(outcome.ended_by, EndedBy::Agent, "{outcome:?}");
    assert!(outcome.error.is_none(), "{outcome:?}");
    assert!(outcome.opted_out);
    let greeting = &outcome.transcript[0];
    assert_eq!(greeting.speaker, Speaker::Agent);
    assert!(
        greeting
            .text
            .starts_with("Hello +12025550106, this is an automated"),
        "{greeting:?}"
    );
    assert!(
        outcome
            .transcript
            .iter()
            .any(|l| l.speaker == Speaker::Callee && l.text.contains("take me off your list")),
        "{:?}",
        outcome.transcript
    );
    // On disk, as a campaign's opt-outs are.
    let list = DncList::load(&[dnc], None).unwrap();
    assert!(list.contains(&E164::parse(caller).unwrap()));

    // Twilio's view: the TwiML connected a stream with the token, the caller heard the
    // greeting, the number's status callback was taken.
    let twiml = call.twiml.as_deref().unwrap();
    assert!(twiml.contains("<Connect><Stream"), "{twiml}");
    let stream = call.stream.as_ref().unwrap();
    assert_eq!(stream.handshake_status, Some(101));
    assert!(stream.heard[0].starts_with("Hello +12025550106"));
    assert_eq!(call.direction, "inbound");
    assert_eq!(call.status, "completed");
    assert_eq!(call.ended_by.as_deref(), Some("api"), "the server hung up");
    let completed = call.callbacks.last().expect("the status callback");
    assert_eq!(
        (completed.event.as_str(), completed.http_status),
        ("completed", Some(204))
    );
    assert!(
        completed
            .params
            .iter()
            .any(|(k, v)| k == "Direction" && v == "inbound")
    );

    eventually("the call is released", || app.app.registry.is_empty()).await;
    let metrics = app.app.metrics.render();
    assert_eq!(
        sample(
            &metrics,
            r#"dialer_calls_total{direction="inbound",status="completed"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"dialer_live_calls{direction="inbound"}"#),
        Some(0.0)
    );
    assert!(sample(&metrics, r#"dialer_bridge_frames_total{to="agent"}"#).unwrap() > 0.0);
    assert!(sample(&metrics, r#"dialer_bridge_frames_total{to="phone"}"#).unwrap() > 0.0);
    assert_eq!(
        sample(&metrics, "dialer_agent_setup_seconds_count"),
        Some(1.0)
    );
    // The caller spoke and the agent answered: each answer's latency is in the histogram.
    assert!(
        sample(&metrics, "dialer_agent_reply_latency_seconds_count").unwrap() >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_forged_voice_request_is_refused_and_starts_nothing() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut rx = open(&app, 10, &dir.path().join("dnc.txt"));
    let voice = app.app.urls.voice();
    let form = [
        ("AccountSid", app.sim().account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "+12025550100"),
        ("To", "+15005550006"),
    ];
    let params: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let client = reqwest::Client::new();
    let forgeries = [
        None,
        Some(signature::compute("not-the-token", &voice, &params)),
        // Signed for another host: the signature covers PUBLIC_URL, not what a proxy forwards.
        Some(signature::compute(
            &app.sim().auth_token,
            "https://attacker.example/twilio/voice",
            &params,
        )),
    ];
    for forged in &forgeries {
        let mut req = client.post(&voice).form(&form);
        if let Some(sig) = forged {
            req = req.header("X-Twilio-Signature", sig);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{forged:?}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("<Response"), "{body}");
    }
    assert!(app.app.registry.is_empty(), "nothing started");
    assert!(rx.try_recv().is_err(), "no call event");
    let (_, metrics) = get(&format!("{}/metrics", app.app.urls.base())).await;
    assert_eq!(
        sample(&metrics, "dialer_webhook_signature_rejections_total"),
        Some(forgeries.len() as f64)
    );

    // The same request, signed: answered with TwiML that connects a stream.
    let sig = signature::compute(&app.sim().auth_token, &voice, &params);
    let resp = client
        .post(&voice)
        .form(&form)
        .header("X-Twilio-Signature", sig)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    let twiml = resp.text().await.unwrap();
    assert!(twiml.contains("<Connect><Stream url=\"ws://"), "{twiml}");
    assert!(twiml.contains("<Parameter name=\"token\""), "{twiml}");
    assert_eq!(app.app.registry.len(), 1);
    // No stream will come for this made-up call: hang it up rather than wait for it.
    app.app.reception.hang_up_all();
}

#[tokio::test]
async fn at_the_live_call_limit_an_inbound_caller_hears_a_message_and_the_call_ends() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut rx = open(&app, 1, &dir.path().join("dnc.txt"));
    let first = ring(&app, "+12025550100");
    eventually("the first call is live", || app.app.registry.len() == 1).await;
    let second = ring(&app, "+12025550109");
    let refused = ended(&app, &second).await;
    let twiml = refused.twiml.as_deref().unwrap();
    assert!(
        twiml.contains("<Say>Sorry, all our lines are busy") && twiml.contains("<Hangup/>"),
        "{twiml}"
    );
    assert!(refused.stream.is_none(), "no stream for a refused call");
    assert_eq!(refused.status, "completed");
    assert_eq!(refused.ended_by.as_deref(), Some("twiml"));
    // Only the first call reached the server's view, and it went on to its end.
    let (events, outcome) = until_ended(&mut rx).await;
    assert!(events.iter().all(|e| e.to() == "+12025550100"));
    assert_eq!(outcome.call_sid.as_deref(), Some(first.as_str()));
    assert!(outcome.is_success(), "{outcome:?}");
    let metrics = app.app.metrics.render();
    assert_eq!(
        sample(&metrics, r#"dialer_inbound_refused_total{reason="full"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn ready_says_whether_calls_are_taken_and_metrics_are_prometheus_text() {
    let app = TestApp::start().await;
    let base = app.app.urls.base().to_string();
    let (status, body) = get(&format!("{base}/ready")).await;
    assert_eq!(status, 503);
    assert!(body.contains("does not answer calls"), "{body}");
    // Before serve opens the desk, a caller is not left in silence.
    let sid = ring(&app, "+12025550100");
    let call = ended(&app, &sid).await;
    assert!(call.twiml.unwrap().contains("<Say>"));

    let dir = tempfile::tempdir().unwrap();
    let _rx = open(&app, 10, &dir.path().join("dnc.txt"));
    assert_eq!(get(&format!("{base}/ready")).await.0, 200);
    app.app.reception.drain();
    let (status, body) = get(&format!("{base}/ready")).await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    let sid = ring(&app, "+12025550100");
    let call = ended(&app, &sid).await;
    assert!(
        call.twiml
            .unwrap()
            .contains("<Say>Sorry, we cannot take your call"),
        "draining turns callers away with a message"
    );

    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    for family in [
        "dialer_live_calls gauge",
        "dialer_calls_total counter",
        "dialer_bridge_frames_total counter",
        "dialer_agent_setup_seconds histogram",
        "dialer_agent_reply_latency_seconds histogram",
        "dialer_webhook_signature_rejections_total counter",
        "dialer_api_requests_total counter",
    ] {
        assert!(text.contains(&format!("# TYPE {family}")), "{family}");
    }
    assert_eq!(
        sample(
            &text,
            r#"dialer_inbound_refused_total{reason="not_serving"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"dialer_inbound_refused_total{reason="draining"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn with_the_agent_key_rejected_callers_hear_the_assistant_is_unavailable() {
    let app =
        TestApp::start_with(|s| s.assemblyai_api_key = dialer::secret::Secret::new("wrong-key"))
            .await;
    let check = app
        .app
        .service
        .check_agent(&AgentConfig::default())
        .await
        .map_err(|e| e.to_string());
    assert!(check.is_err());
    let (events, _rx) = mpsc::unbounded_channel();
    let dir = tempfile::tempdir().unwrap();
    app.app.reception.open(
        Desk {
            service: app.app.service.clone(),
            agent: AgentConfig::default(),
            dnc: Arc::new(Mutex::new(
                DncList::load(&[dir.path().join("dnc.txt")], None).unwrap(),
            )),
            events,
            max_calls: 10,
            time_limit: Duration::from_secs(300),
        },
        check,
    );
    let (status, body) = get(&format!("{}/ready", app.app.urls.base())).await;
    assert_eq!(status, 503);
    assert!(body.contains("Voice Agent"), "{body}");
    let sid = ring(&app, "+12025550100");
    let call = ended(&app, &sid).await;
    assert!(
        call.twiml
            .unwrap()
            .contains("<Say>Sorry, our assistant is unavailable"),
    );
    assert!(call.stream.is_none());
    assert!(app.app.registry.is_empty());
    // Once a later check passes, calls are taken again.
    app.app.reception.agent_checked(Ok(()));
    assert_eq!(get(&format!("{}/ready", app.app.urls.base())).await.0, 200);
}

#[tokio::test]
async fn a_key_refused_mid_run_turns_the_next_callers_away_until_a_check_passes() {
    use dialer::sim::agent::{AgentFault, ErrorAt, FakeAgentConfig, FaultRule};
    // The first call's session finds the key refused, as after a revoked key.
    let agent = FakeAgentConfig {
        faults: vec![FaultRule::nth(
            1,
            AgentFault::Error {
                code: "unauthorized",
                at: ErrorAt::Setup,
            },
        )],
        ..crate::helpers::agent_config()
    };
    let app = TestApp::start_faulty(crate::helpers::twilio_config(), agent, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rx = open(&app, 10, &dir.path().join("dnc.txt"));
    let first = ring(&app, "+12025550100");
    let (_, outcome) = until_ended(&mut rx).await;
    assert_eq!(
        outcome.error.as_ref().unwrap().code.as_deref(),
        Some("unauthorized")
    );
    ended(&app, &first).await;
    // Set by the call's task as it finishes, just after the outcome is sent.
    eventually("the reception hears of the refused key", || {
        app.app.reception.readiness().is_err()
    })
    .await;
    let (status, body) = get(&format!("{}/ready", app.app.urls.base())).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("API key"), "{body}");
    let next = ring(&app, "+12025550100");
    let call = ended(&app, &next).await;
    assert!(
        call.twiml
            .unwrap()
            .contains("<Say>Sorry, our assistant is unavailable")
    );
    app.app.reception.agent_checked(Ok(()));
    assert_eq!(get(&format!("{}/ready", app.app.urls.base())).await.0, 200);
}

/// A `dialer` child process whose stdout lines are read on a thread.
struct Process {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    fn spawn(dir: &Path, args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dialer"))
            .args(args)
            .env_clear()
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dialer starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process { child, lines }
    }

    /// The next stdout line that is JSON and satisfies `want`.
    fn wait_for(&self, what: &str, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && want(&v)
            {
                return v;
            }
        }
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Only this test's own child, by its id.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_drains_the_real_server_live_calls_finish_and_new_callers_are_turned_away() {
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that the live call outlasts the refused one's message.
    let speed = (SPEED / 5.0).to_string();
    let mut serve = Process::spawn(
        dir.path(),
        &[
            "serve",
            "--simulate",
            "--sim-speed",
            &speed,
            "--json",
            "--drain",
            "60s",
        ],
    );
    let serving = serve.wait_for("the serving line", |v| v["event"] == "serving");
    let voice = serving["voice_url"].as_str().unwrap().to_string();
    let twilio = serving["twilio_api_base_url"].as_str().unwrap().to_string();
    let ring_args = |persona: &'static str| {
        vec![
            "simulators".to_string(),
            "--json".into(),
            "--twilio".into(),
            twilio.clone(),
            "--ring".into(),
            voice.clone(),
            "--persona".into(),
            persona.into(),
        ]
    };
    let args = ring_args("agrees");
    let live = Process::spawn(
        dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    serve.wait_for("the live call to connect", |v| v["event"] == "connected");

    let term = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());

    // A new caller while draining: a message and a hang-up, no conversation.
    let args = ring_args("reschedules");
    let late = Process::spawn(
        dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let refused = late.wait_for("the refused call's end", |v| v["sid"].is_string());
    assert_eq!(refused["stream_opened"], false, "{refused}");
    assert!(
        refused["twiml"]
            .as_str()
            .unwrap()
            .contains("<Say>Sorry, we cannot take your call right now"),
        "{refused}"
    );

    // The live call went on to its natural end.
    let finished = live.wait_for("the live call's end", |v| v["sid"].is_string());
    assert_eq!(finished["stream_opened"], true, "{finished}");
    assert_eq!(finished["status"], "completed");
    assert!(
        finished["said"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("I'll be there")),
        "{finished}"
    );
    let outcome = serve.wait_for("the outcome", |v| v["event"] == "ended");
    assert_eq!(outcome["outcome"]["direction"], "inbound");
    assert_eq!(outcome["outcome"]["status"], "completed");
    assert_eq!(outcome["outcome"]["ended_by"], "agent", "{outcome}");
    let status = serve
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits once drained");
    assert!(status.success(), "{status:?}");
}

/// Serve (simulated) with `drain`, ring it with a caller who never speaks, send SIGTERM
/// `signals` times once the call is connected: the call must be hung up by the operator and
/// the server must exit 0.
fn silent_caller_hung_up(drain: &str, signals: usize) {
    let dir = tempfile::tempdir().unwrap();
    let speed = SPEED.to_string();
    let mut serve = Process::spawn(
        dir.path(),
        &[
            "serve",
            "--simulate",
            "--sim-speed",
            &speed,
            "--json",
            "--drain",
            drain,
        ],
    );
    let serving = serve.wait_for("the serving line", |v| v["event"] == "serving");
    let live = Process::spawn(
        dir.path(),
        &[
            "simulators",
            "--json",
            "--twilio",
            serving["twilio_api_base_url"].as_str().unwrap(),
            "--ring",
            serving["voice_url"].as_str().unwrap(),
            // Says nothing and stays on the line: only the operator's end stops it.
            "--persona",
            "silent",
        ],
    );
    serve.wait_for("the call to connect", |v| v["event"] == "connected");
    for _ in 0..signals {
        let term = Command::new("kill")
            .args(["-TERM", &serve.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(term.success());
        std::thread::sleep(Duration::from_millis(100));
    }
    let outcome = serve.wait_for("the outcome", |v| v["event"] == "ended");
    assert_eq!(outcome["outcome"]["ended_by"], "operator", "{outcome}");
    assert_eq!(outcome["outcome"]["status"], "completed");
    let ended = live.wait_for("the call's end at Twilio", |v| v["sid"].is_string());
    assert_eq!(ended["ended_by"], "api", "hung up through the API: {ended}");
    let status = serve
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn when_the_drain_runs_out_the_calls_left_are_hung_up_and_the_server_exits() {
    silent_caller_hung_up("1s", 1);
}

#[test]
fn a_second_signal_hangs_up_at_once() {
    // With an hour's drain, an operator's end within the minute `wait_for` allows can only be
    // the second signal's.
    silent_caller_hung_up("60m", 2);
}

#[test]
fn bad_serve_settings_stop_it_with_one_line_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    for (args, starts) in [
        (
            vec!["serve", "--simulate", "--max-calls", "0"],
            "dialer: error: MAX_CALLS is invalid:",
        ),
        (
            vec!["serve", "--simulate", "--drain", "soon"],
            "dialer: error: DRAIN is invalid:",
        ),
        (
            vec!["serve", "--simulate", "--greeting", "Hi {{first_name}}"],
            "dialer: error: agent greeting uses {{first_name}}",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dialer"))
            .args(&args)
            .env_clear()
            .current_dir(dir.path())
            .output()
            .expect("dialer runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with(starts), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

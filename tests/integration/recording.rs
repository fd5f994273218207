//! `--record` and reply latency end to end: Twilio's recording (create parameters, signed
//! callbacks, one that comes after the call is over) and the figures of each reply, against
//! the simulators.

use crate::helpers::{TestApp, eventually};
use dialer::call::service::Timings;
use dialer::events::{CallEvent, Speaker, TwilioRecording};
use dialer::recording::callbacks::LateRecording;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn recorded(app: &TestApp, to: &str) -> dialer::call::dialer::CallRequest {
    let mut req = app.request(to);
    req.agent.record = true;
    req.agent.prepare_recording();
    req.agent
        .validate()
        .expect("the recorded default greeting says so");
    req.record = true;
    req
}

#[tokio::test]
async fn a_recorded_call_asks_twilio_for_a_dual_channel_recording_and_reports_it() {
    let app = TestApp::start().await;
    let (result, events) = app.call(recorded(&app, "+12025550100")).await;
    let outcome = result.unwrap();
    let sid = outcome.call_sid.clone().unwrap();
    let create = app
        .sim()
        .twilio
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/Calls.json"))
        .unwrap();
    let param = |k: &str| -> Vec<&str> {
        create
            .params
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(param("Record"), ["true"]);
    assert_eq!(param("RecordingChannels"), ["dual"]);
    assert_eq!(
        param("RecordingStatusCallbackEvent"),
        ["in-progress", "completed", "absent"]
    );
    let callback = param("RecordingStatusCallback")[0];
    assert!(
        callback.starts_with(&format!("{}/twilio/recording/", app.app.urls.base())),
        "{callback}"
    );
    // The recording token is not the call's: the status callback's differs.
    assert!(!param("StatusCallback")[0].ends_with(callback.rsplit('/').next().unwrap()));

    let recording = outcome.recording.as_ref().expect("Twilio's recording");
    assert_eq!(recording.status, "completed", "{recording:?}");
    assert!(recording.sid.starts_with("RE"));
    assert!(
        recording.url.as_deref().is_some_and(
            |u| u.starts_with(&app.sim().twilio.base_url()) && u.ends_with(&recording.sid)
        ),
        "{recording:?}"
    );
    assert_eq!(recording.channels, Some(2));
    assert_eq!(recording.duration_secs, outcome.duration_secs);
    let sim = app.sim().twilio.call(&sid).unwrap().recording.unwrap();
    assert_eq!(sim.sid, recording.sid);
    assert!(
        sim.callbacks.iter().all(|c| c.http_status == Some(204)),
        "our server took every recording callback: {:?}",
        sim.callbacks
    );
    let said: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Recording { recording, .. } => Some(recording.status.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(said, ["in-progress", "completed"]);
    // The greeting said the call is recorded.
    assert!(
        outcome.transcript[0].text.contains("recorded"),
        "{:?}",
        outcome.transcript[0]
    );
    let json = serde_json::to_value(&outcome).unwrap();
    assert_eq!(json["recording"]["sid"], recording.sid.as_str());
}

#[tokio::test]
async fn a_recording_finished_after_the_call_reaches_the_late_hook() {
    // The call does not wait for the recording at all: Twilio's `completed` comes after the
    // outcome, to a token the server still honours.
    let app = TestApp::start().await.with_timings(Timings {
        recording_wait: Duration::ZERO,
        ..Timings::default()
    });
    let late: Arc<Mutex<Vec<(String, TwilioRecording)>>> = Arc::default();
    let seen = late.clone();
    let hook: LateRecording = Arc::new(move |sid: &str, r: TwilioRecording| {
        seen.lock().unwrap().push((sid.to_string(), r));
    });
    let mut req = recorded(&app, "+12025550100");
    req.late_recording = Some(hook);
    let (result, _) = app.call(req).await;
    let outcome = result.unwrap();
    assert!(
        outcome
            .recording
            .as_ref()
            .is_none_or(|r| r.status == "in-progress"),
        "{:?}",
        outcome.recording
    );
    let sid = outcome.call_sid.unwrap();
    eventually("the late recording", || {
        late.lock()
            .unwrap()
            .iter()
            .any(|(s, r)| *s == sid && r.status == "completed")
    })
    .await;
    app.sim().twilio.wait_idle().await;
    let sim = app.sim().twilio.call(&sid).unwrap().recording.unwrap();
    let completed = sim
        .callbacks
        .iter()
        .find(|c| c.event == "completed")
        .unwrap();
    assert_eq!(completed.http_status, Some(204));
    // A forged callback to the same route is refused before anything reads it.
    let url = completed.url.clone();
    let forged = reqwest::Client::new()
        .post(&url)
        .header("X-Twilio-Signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .form(&[
            ("RecordingSid", "REforged"),
            ("RecordingStatus", "completed"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(late.lock().unwrap().len(), 1, "{:?}", late.lock().unwrap());
}

#[tokio::test]
async fn every_reply_to_the_callee_is_timed() {
    let app = TestApp::start().await;
    let (result, events) = app.call(app.request("+12025550100")).await;
    let outcome = result.unwrap();
    let call_ms = outcome.duration_secs.unwrap() * 1000 + 1000;
    // Every agent line that follows a callee line answered a turn, and carries its figure.
    let mut answers = 0;
    for pair in outcome.transcript.windows(2) {
        if pair[0].speaker == Speaker::Callee && pair[1].speaker == Speaker::Agent {
            let ms = pair[1]
                .latency_ms
                .unwrap_or_else(|| panic!("{:?}", pair[1]));
            assert!(ms > 0 && u64::from(ms) < call_ms, "{ms} ms");
            answers += 1;
        }
    }
    assert!(answers >= 1, "{:?}", outcome.transcript);
    assert_eq!(
        outcome.transcript[0].latency_ms, None,
        "the greeting answers nobody"
    );
    let latency = &outcome.latency;
    assert!(latency.replies_ms.len() >= answers);
    assert!(latency.reply_p50_ms.is_some() && latency.reply_p95_ms >= latency.reply_p50_ms);
    assert!(
        latency
            .agent_setup_ms
            .is_some_and(|ms| u64::from(ms) < call_ms)
    );
    // The JSON events carry them.
    let connected = events
        .iter()
        .find_map(|e| match e {
            CallEvent::Connected { setup_ms, .. } => Some(*setup_ms),
            _ => None,
        })
        .unwrap();
    assert_eq!(Some(connected), latency.agent_setup_ms);
    let line = events
        .iter()
        .find(|e| matches!(e, CallEvent::Line { line, .. } if line.latency_ms.is_some()))
        .unwrap();
    assert!(serde_json::to_value(line).unwrap()["line"]["latency_ms"].is_u64());
    let json = serde_json::to_value(&outcome).unwrap();
    assert!(
        json["latency"]["reply_p95_ms"].is_u64(),
        "{}",
        json["latency"]
    );
}

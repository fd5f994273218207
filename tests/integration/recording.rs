//! `--record` and reply latency end to end: Twilio's recording (create parameters, signed
//! callbacks, one that comes after the call is over) and the figures of each reply, against
//! the simulators.

use crate::helpers::{self, TestApp, eventually};
use dialer::call::service::Timings;
use dialer::events::{CallEvent, Speaker, TwilioRecording};
use dialer::recording::callbacks::LateRecording;
use dialer::recording::wav;
use dialer::sim::twilio::FakeTwilioConfig;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A recorded call to `to`, its WAV written under `dir`.
fn recorded(app: &TestApp, to: &str, dir: &tempfile::TempDir) -> dialer::call::dialer::CallRequest {
    let mut req = app.request(to);
    req.agent.record = true;
    req.agent.prepare_recording();
    req.agent
        .validate()
        .expect("the recorded default greeting says so");
    req.record = true;
    req.recordings_dir = Some(dir.path().join("recordings"));
    req
}

#[tokio::test]
async fn a_recorded_call_asks_twilio_for_a_dual_channel_recording_and_reports_it() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (result, events) = app.call(recorded(&app, "+12025550100", &dir)).await;
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
    let twilio = FakeTwilioConfig {
        recording_delay: Duration::from_secs(5),
        ..helpers::twilio_config()
    };
    let app = TestApp::start_faulty(twilio, helpers::agent_config(), |_| {})
        .await
        .with_timings(Timings {
            recording_wait: Duration::ZERO,
            ..Timings::default()
        });
    let late: Arc<Mutex<Vec<(String, TwilioRecording)>>> = Arc::default();
    let seen = late.clone();
    let hook: LateRecording = Arc::new(move |sid: &str, r: TwilioRecording| {
        seen.lock().unwrap().push((sid.to_string(), r));
    });
    let dir = tempfile::tempdir().unwrap();
    let mut req = recorded(&app, "+12025550100", &dir);
    req.late_recording = Some(hook);
    let (result, _) = app.call(req).await;
    let outcome = result.unwrap();
    assert!(
        outcome
            .recording
            .as_ref()
            .is_some_and(|r| r.status == "in-progress"),
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

/// μ-law codes as the WAV's 16-bit samples.
fn pcm(codes: &[u8]) -> Vec<i16> {
    codes.iter().map(|&c| wav::ulaw_to_pcm(c)).collect()
}

/// The samples that are not silence, in order.
fn sound(samples: &[i16]) -> Vec<i16> {
    samples.iter().copied().filter(|&s| s != 0).collect()
}

#[tokio::test]
async fn the_local_recording_is_what_the_callee_said_and_heard_without_what_a_barge_in_cleared() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let req = recorded(&app, "+12025550108", &dir); // talks over the greeting
    let (result, _) = app.call(req).await;
    let outcome = result.unwrap();
    let sid = outcome.call_sid.clone().unwrap();
    let local = outcome.local_recording.clone().expect("a local recording");
    let path = dir.path().join("recordings").join(format!("{sid}.wav"));
    assert_eq!(local.path, path.display().to_string());
    assert_eq!(local.frames_dropped, 0);
    app.sim().twilio.wait_idle().await;
    let stream = app.sim().twilio.call(&sid).unwrap().stream.unwrap();
    assert!(stream.clears >= 1, "the callee barged in");
    let (left, right) = wav::read(&path).unwrap();
    assert!(left.len() >= 8000, "at least a second: {}", left.len());
    // The callee's side: every sample where Twilio's timestamps put it, bit for bit (the
    // recording ends when the bridge does; Twilio's stream may run a moment longer).
    assert!(left.len() <= stream.audio_sent.len());
    assert!(
        left == pcm(&stream.audio_sent[..left.len()]),
        "callee side differs"
    );
    // The agent's side: what the callee heard, in order, bit for bit, without what the clear
    // dropped. Around the barge-in the model can be a few frames off: the agent's audio comes
    // at real-time pace, so Twilio's buffer runs dry now and then, and the model, which sees
    // Twilio's clock a little late, runs dry less often and plays ahead until the clear's mark
    // comes back (see `recording::playout`). With the simulators ten times faster than real
    // time on a busy machine, a frame of jitter is 2 ms: four frames of slack per clear.
    let heard = pcm(&stream.audio_heard);
    let in_file = sound(&right);
    let played = sound(&heard);
    let received = sound(&pcm(&stream.audio_received));
    let slack = 4 * 160 * stream.clears;
    let prefix = in_file
        .iter()
        .zip(&played)
        .take_while(|(a, b)| a == b)
        .count();
    let suffix = in_file
        .iter()
        .rev()
        .zip(played.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        prefix + suffix + slack >= in_file.len().max(played.len()),
        "the agent's side differs from what the callee heard beyond the barge-in: {} vs {} \
         sounds, {prefix} the same from the start, {suffix} from the end",
        in_file.len(),
        played.len()
    );
    assert!(prefix > 0 && suffix > 0);
    // How much the clear dropped depends on how far ahead of Twilio the agent was (the unit
    // tests pin the rule down); whatever it was, the file holds no more than was heard.
    assert!(received.len() >= played.len());
    assert!(
        in_file.len() <= played.len() + slack,
        "cleared audio in the file: {} sounds in the file, {} heard, {} sent; the same for \
         {prefix} from the start and {suffix} from the end",
        in_file.len(),
        played.len(),
        received.len()
    );
    let start = |s: &[i16]| s.iter().position(|&x| x != 0).unwrap();
    let (file_start, heard_start) = (start(&right), start(&heard));
    assert!(
        file_start <= heard_start && heard_start - file_start <= 160,
        "greeting at {file_start} in the file, heard from {heard_start}"
    );
}

#[tokio::test]
async fn a_recorded_campaign_keeps_both_recordings_in_its_results() {
    use dialer::campaign::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let app = TestApp::start().await;
    let req = recorded(&app, "+12025550100", &dir);
    let (result, _) = app.call(req).await;
    let outcome = result.unwrap();
    // Stored as a campaign stores it, and exported.
    let mut store = Store::open(&db).unwrap();
    let lead = dialer::campaign::leads::parse_with(
        "phone\n+12025550100\n".as_bytes(),
        "leads.csv",
        None,
        &Default::default(),
    )
    .unwrap();
    let now = chrono::Utc::now();
    store.import(&lead.leads, now).unwrap();
    let id = store.due(now, 1, &[]).unwrap()[0].id;
    let (attempt, _) = store.begin_attempt(id, now).unwrap();
    let verdict = dialer::campaign::store::Verdict {
        status: dialer::campaign::LeadStatus::Completed,
        next_at: None,
        reason: String::new(),
    };
    store
        .finish_attempt(attempt, &outcome, &verdict, now)
        .unwrap();
    let written = dialer::campaign::export::export(&store, &dir.path().join("out")).unwrap();
    let mut csv = csv::Reader::from_path(&written.results).unwrap();
    let header = csv.headers().unwrap().clone();
    let row = csv.records().next().unwrap().unwrap();
    let cell = |name: &str| row[header.iter().position(|h| h == name).unwrap()].to_string();
    let recording = outcome.recording.unwrap();
    assert_eq!(cell("recording_sid"), recording.sid);
    assert_eq!(Some(cell("recording_url")), recording.url);
    assert_eq!(
        cell("recording_duration_secs"),
        recording.duration_secs.unwrap().to_string()
    );
    assert_eq!(
        cell("local_recording"),
        outcome.local_recording.unwrap().path
    );
}

#[tokio::test]
async fn a_recorded_call_whose_greeting_does_not_say_so_is_not_placed() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut req = recorded(&app, "+12025550100", &dir);
    req.agent.greeting = "Hi, this is an automated assistant from the clinic.".into();
    let (result, _) = app.call(req.clone()).await;
    let err = result.unwrap_err();
    assert!(err.message.contains("recorded"), "{err}");
    assert!(app.sim().twilio.requests().is_empty(), "nobody was called");
    // Where the law does not ask for it, the check can be turned off.
    req.agent.recording_disclosure = dialer::agent::config::RecordingDisclosure::Off;
    let (result, _) = app.call(req).await;
    assert!(result.unwrap().recording.is_some());
}

#[tokio::test]
async fn a_campaign_saves_a_recording_twilio_finished_after_its_attempt() {
    use dialer::campaign::clock::Clock;
    use dialer::campaign::runner::Runner;
    use dialer::campaign::store::Store;
    use dialer::campaign::{self, Paths};
    // Calls do not wait for their recording, and Twilio finishes each a while after its call:
    // the first call's `completed` comes while the second call is under way.
    let twilio = FakeTwilioConfig {
        recording_delay: Duration::from_secs(3),
        ..helpers::twilio_config()
    };
    let app = TestApp::start_faulty(twilio, helpers::agent_config(), |_| {})
        .await
        .with_timings(Timings {
            recording_wait: Duration::ZERO,
            ..Timings::default()
        });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("leads.csv"),
        "phone\n+12025550100\n+12025550112\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("leads.toml"),
        r#"
[agent]
greeting = "Hi, this is an automated assistant from the clinic, and this call is recorded. Can you make it?"
record = true
[campaign]
timezone = "America/New_York"
concurrency = 1
[window]
hours = "00:00-24:00"
days = ["mon-sun"]
"#,
    )
    .unwrap();
    let paths = Paths::beside(&dir.path().join("leads.csv"), None, None, None, false);
    let loaded = campaign::load(&paths, None, chrono::Utc::now()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = Arc::new(
        Runner::new(
            app.app.service.clone(),
            loaded.store,
            loaded.config,
            loaded.dnc,
            Arc::new(Clock::system()),
            tx,
        )
        .with_recordings_dir(paths.out.join("recordings")),
    );
    let done = runner
        .clone()
        .run(
            tokio_util::sync::CancellationToken::new(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await;
    assert!(matches!(done, Ok(true)), "{:?}", done.err());
    // Late saves are lazy: within the store's commit interval.
    tokio::time::sleep(dialer::campaign::store::LAZY_COMMIT * 2).await;
    drop(runner);
    // When its attempt was saved, Twilio had not finished the first call's recording.
    let mut reported = None;
    while let Ok(event) = rx.try_recv() {
        if let dialer::campaign::CampaignEvent::Call {
            call: CallEvent::Ended { outcome },
            ..
        } = event
            && outcome.to == "+12025550100"
        {
            reported = outcome.recording.map(|r| r.status);
        }
    }
    assert_eq!(reported.as_deref(), Some("in-progress"));
    let store = Store::open(&paths.db).unwrap();
    let first = store
        .leads()
        .unwrap()
        .into_iter()
        .find(|l| l.phone == "+12025550100")
        .unwrap();
    let sid = first.last_call_sid.unwrap();
    let row = &store.recordings().unwrap()[&sid];
    assert_eq!(row.status.as_deref(), Some("completed"), "{row:?}");
    assert!(
        row.url
            .as_deref()
            .is_some_and(|u| u.ends_with(row.sid.as_deref().unwrap()))
    );
    assert!(row.duration_secs.is_some());
    let wav = paths.out.join("recordings").join(format!("{sid}.wav"));
    assert_eq!(
        row.local.as_deref(),
        Some(wav.display().to_string().as_str())
    );
    assert!(wav::read(&wav).is_ok());
}

#[tokio::test]
async fn the_simulated_agent_thinks_as_long_as_it_is_told() {
    // Two simulated seconds before every reply: at the tests' speed, 200 ms of real time, which
    // every figure must show (less the little by which the bridge may read the end of the turn
    // later than the reply's audio: a lower bound, so the machine's load cannot fail it).
    let agent = dialer::sim::agent::FakeAgentConfig {
        reply_latency: dialer::sim::agent::ReplyLatency::fixed(Duration::from_secs(2)),
        ..helpers::agent_config()
    };
    let app = TestApp::start_faulty(helpers::twilio_config(), agent, |_| {}).await;
    let (result, _) = app.call(app.request("+12025550100")).await;
    let latency = result.unwrap().latency;
    assert!(!latency.replies_ms.is_empty());
    let floor = (0.8 * 2000.0 / helpers::SPEED) as u32;
    assert!(
        latency.replies_ms.iter().all(|&ms| ms >= floor),
        "{:?}",
        latency.replies_ms
    );
}

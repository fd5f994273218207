//! Answering machines, keypad entries and transfers end to end: the real call service and
//! bridge against the simulators, judged from the fake Twilio's own records (what it played,
//! when each verdict went out, what it dialed) and the fake agent's.

use crate::campaign::{TUESDAY_10_NY, campaign_toml, run_campaign};
use crate::helpers::TestApp;
use dialer::call::dialer::CallRequest;
use dialer::campaign::LeadStatus;
use dialer::events::{CallEvent, EndedBy, FinalStatus, MachineEnd, Outcome, Speaker};
use dialer::sim::twilio::{SimCall, StreamEvent};

const MESSAGE: &str =
    "Hello, this is Bright Smile Dental calling about your appointment. Please call us back.";

fn with_message(app: &TestApp, to: &str) -> CallRequest {
    let mut req = app.request(to);
    req.agent.voicemail_message = Some(MESSAGE.into());
    req
}

fn with_transfer(app: &TestApp, to: &str, person: &str) -> CallRequest {
    let mut req = app.request(to);
    req.agent.transfer_to = Some(person.into());
    req
}

async fn placed(app: &TestApp, outcome: &Outcome) -> SimCall {
    app.sim().twilio.wait_idle().await;
    app.sim()
        .twilio
        .call(outcome.call_sid.as_deref().expect("a call was placed"))
        .expect("the fake knows the call")
}

#[tokio::test]
async fn the_message_is_left_after_the_beep_with_nothing_said_over_the_greeting() {
    let app = TestApp::start().await;
    let (result, _events) = app.call(with_message(&app, "+12025550105")).await;
    let outcome = result.unwrap();
    assert_eq!(outcome.status, FinalStatus::Completed, "{outcome:?}");
    assert_eq!(
        outcome.machine,
        Some(MachineEnd::VoicemailLeft),
        "{outcome:?}"
    );
    assert_eq!(outcome.ended_by, EndedBy::Agent);
    assert!(outcome.error.is_none(), "{outcome:?}");
    let call = placed(&app, &outcome).await;
    let verdicts: Vec<_> = call
        .amd_callbacks
        .iter()
        .map(|c| c.event.as_str())
        .collect();
    assert_eq!(verdicts, ["machine_start", "machine_end_beep"]);
    // Hung up through the API once the message's mark came back.
    assert_eq!(call.ended_by.as_deref(), Some("api"));
    let stream = call.stream.expect("a stream");
    assert!(
        stream.marks_echoed.iter().any(|m| m == "dialer-voicemail"),
        "{:?}",
        stream.marks_echoed
    );
    assert!(
        stream.heard.iter().any(|h| h == MESSAGE),
        "the machine recorded the message: {:?}",
        stream.heard
    );
    // Between machine_start and the beep's verdict: once Twilio's buffer was cleared (what
    // was in flight when the verdict went out may still arrive before the clear), no agent
    // audio at all. The message comes after the beep, then its mark.
    let t = &stream.timeline;
    let start = t
        .iter()
        .position(|e| *e == StreamEvent::Verdict("machine_start".into()))
        .expect("machine_start on the timeline");
    let beep = t
        .iter()
        .position(|e| *e == StreamEvent::Verdict("machine_end_beep".into()))
        .expect("machine_end_beep on the timeline");
    let clear = start
        + t[start..]
            .iter()
            .position(|e| *e == StreamEvent::Clear)
            .expect("the greeting was cleared");
    assert!(clear < beep, "{t:?}");
    assert!(
        !t[clear..beep]
            .iter()
            .any(|e| matches!(e, StreamEvent::Media(_))),
        "agent audio went out over the machine's greeting: {t:?}"
    );
    let after: Vec<_> = t[beep..]
        .iter()
        .filter(|e| !matches!(e, StreamEvent::Clear | StreamEvent::Verdict(_)))
        .collect();
    assert!(
        matches!(after.first(), Some(StreamEvent::Media(_))),
        "{t:?}"
    );
    assert_eq!(
        after.last(),
        Some(&&StreamEvent::Mark("dialer-voicemail".into())),
        "{t:?}"
    );
    // The agent was asked once, with the message's words.
    let creates: Vec<String> = app
        .sim()
        .agent
        .sessions()
        .into_iter()
        .flat_map(|s| s.reply_creates)
        .collect();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(creates[0].contains(MESSAGE), "{creates:?}");
}

#[tokio::test]
async fn with_no_message_a_machine_is_hung_up_on_at_once() {
    let app = TestApp::start().await;
    let (result, _) = app.call(app.request("+12025550105")).await;
    let outcome = result.unwrap();
    assert_eq!(outcome.machine, Some(MachineEnd::Voicemail), "{outcome:?}");
    assert_eq!(outcome.ended_by, EndedBy::Agent);
    let call = placed(&app, &outcome).await;
    assert_eq!(call.ended_by.as_deref(), Some("api"));
    // At machine_start, long before the beep.
    let verdicts: Vec<_> = call
        .amd_callbacks
        .iter()
        .map(|c| c.event.as_str())
        .collect();
    assert_eq!(verdicts, ["machine_start"]);
}

#[tokio::test]
async fn a_fax_is_hung_up_on() {
    let app = TestApp::start().await;
    let (result, _) = app.call(with_message(&app, "+12025550113")).await;
    let outcome = result.unwrap();
    assert_eq!(outcome.machine, Some(MachineEnd::Fax), "{outcome:?}");
    assert_eq!(
        outcome.answered_by.as_ref().map(|a| a.as_str()),
        Some("fax")
    );
    let call = placed(&app, &outcome).await;
    assert_eq!(call.ended_by.as_deref(), Some("api"));
    // Hung up at the verdict: no message was asked for.
    assert!(
        app.sim()
            .agent
            .sessions()
            .iter()
            .all(|s| s.reply_creates.is_empty())
    );
}

#[tokio::test]
async fn a_caller_who_asks_for_a_person_is_transferred_and_the_person_answers() {
    let app = TestApp::start().await;
    let (result, events) = app
        .call(with_transfer(&app, "+12025550114", "+12025550100"))
        .await;
    let outcome = result.unwrap();
    assert_eq!(outcome.status, FinalStatus::Completed, "{outcome:?}");
    let transfer = outcome.transfer.clone().expect("transferred");
    assert_eq!(transfer.to, "+12025550100");
    assert_eq!(transfer.answered, Some(true), "{transfer:?}");
    assert_eq!(transfer.dial_status.as_deref(), Some("completed"));
    assert!(transfer.dial_duration_secs.is_some_and(|d| d > 0));
    assert!(!transfer.reason.is_empty());
    assert!(
        outcome.reason.starts_with("transferred to a person"),
        "{}",
        outcome.reason
    );
    // The agent announced it before the call left it.
    assert!(
        outcome
            .transcript
            .iter()
            .any(|l| l.speaker == Speaker::Agent && l.text.contains("connecting you")),
        "{:?}",
        outcome.transcript
    );
    assert!(
        events.iter().any(
            |e| matches!(e, CallEvent::Transferring { target, .. } if target == "+12025550100")
        )
    );
    let call = placed(&app, &outcome).await;
    assert_eq!(
        call.dial,
        Some(("+12025550100".to_string(), "completed".to_string()))
    );
    // The action's answer was a plain hang-up.
    let last = call.twiml.unwrap_or_default();
    assert!(
        last.contains("<Hangup/>") && !last.contains("<Say>"),
        "{last}"
    );
    let stream = call.stream.expect("a stream");
    assert!(stream.marks_echoed.iter().any(|m| m == "dialer-transfer"));
    // The agent session was ended, not left open.
    assert!(app.sim().agent.sessions().iter().all(|s| s.ended_by_client));
}

#[tokio::test]
async fn a_transfer_nobody_answers_says_so_and_hangs_up() {
    let app = TestApp::start().await;
    let (result, _) = app
        .call(with_transfer(&app, "+12025550114", "+12025550102"))
        .await;
    let outcome = result.unwrap();
    let transfer = outcome.transfer.clone().expect("transferred");
    assert_eq!(transfer.answered, Some(false), "{transfer:?}");
    assert_eq!(transfer.dial_status.as_deref(), Some("no-answer"));
    let call = placed(&app, &outcome).await;
    assert_eq!(
        call.dial,
        Some(("+12025550102".to_string(), "no-answer".to_string()))
    );
    let last = call.twiml.unwrap_or_default();
    assert!(last.contains("<Say>Sorry, nobody is available"), "{last}");
    assert_eq!(call.ended_by.as_deref(), Some("twiml"));
}

#[tokio::test]
async fn keys_pressed_reach_the_agent_and_the_transcript() {
    let app = TestApp::start().await;
    let (result, events) = app.call(app.request("+12025550115")).await;
    let outcome = result.unwrap();
    assert!(
        outcome
            .transcript
            .iter()
            .any(|l| l.speaker == Speaker::Callee && l.text == "[keypad] 1"),
        "{:?}",
        outcome.transcript
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Keypad { keys, .. } if keys == "1"))
    );
    let creates: Vec<String> = app
        .sim()
        .agent
        .sessions()
        .into_iter()
        .flat_map(|s| s.reply_creates)
        .collect();
    assert!(
        creates.iter().any(|c| c.contains("keypad: 1.")),
        "{creates:?}"
    );
    // The agent took the key as a yes and said goodbye.
    assert_eq!(outcome.ended_by, EndedBy::Agent, "{outcome:?}");
    let call = placed(&app, &outcome).await;
    assert!(
        call.stream
            .unwrap()
            .timeline
            .contains(&StreamEvent::Key('1'))
    );
}

#[tokio::test]
async fn a_campaign_maps_keys_and_transfers_on_a_disposition_and_counts_voicemails() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = "\
phone,first_name,timezone
+12025550115,Kim,America/New_York
+12025550109,Ben,America/New_York
+12025550105,Dev,America/New_York
+12025550113,Fay,America/New_York
";
    let toml = campaign_toml(
        "concurrency = 4\ncalls_per_second = 5",
        "[dtmf]\n\"1\" = \"confirmed\"\n[transfer]\non = [\"reschedule\"]\n[retry]\nvoicemail = { attempts = 1, delay = \"1h\" }\n",
    )
    .replace(
        "[campaign]",
        "voicemail_message = \"Hi {{first_name}}, this is the clinic. Please call us back.\"\ntransfer_to = \"+12025550100\"\n[campaign]",
    );
    let run = run_campaign(&app, dir.path(), csv, &toml, TUESDAY_10_NY).await;
    assert!(matches!(run.result, Ok(true)), "{:?}", run.result.err());
    let statuses = run.statuses();
    assert_eq!(statuses["+12025550115"], LeadStatus::Completed);
    assert_eq!(statuses["+12025550109"], LeadStatus::Transferred);
    assert_eq!(statuses["+12025550105"], LeadStatus::VoicemailLeft);
    assert_eq!(statuses["+12025550113"], LeadStatus::Voicemail);
    let leads = run.store().leads().unwrap();
    let keyed = leads.iter().find(|l| l.phone == "+12025550115").unwrap();
    assert_eq!(keyed.disposition.as_deref(), Some("confirmed"));
    assert_eq!(keyed.notes.as_deref(), Some("pressed 1 on the keypad"));
    let moved = leads.iter().find(|l| l.phone == "+12025550109").unwrap();
    assert_eq!(moved.disposition.as_deref(), Some("reschedule"));
    // The message was filled in for the lead.
    let heard: Vec<String> = app
        .sim()
        .twilio
        .calls()
        .into_iter()
        .filter(|c| c.to == "+12025550105")
        .filter_map(|c| c.stream)
        .flat_map(|s| s.heard)
        .collect();
    assert!(
        heard
            .iter()
            .any(|h| h == "Hi Dev, this is the clinic. Please call us back."),
        "{heard:?}"
    );
    // The summary counts both kinds of voicemail and the transfer.
    let totals = run.store().totals().unwrap();
    for status in [
        LeadStatus::VoicemailLeft,
        LeadStatus::Voicemail,
        LeadStatus::Transferred,
    ] {
        assert!(
            totals.statuses.contains(&(status, 1)),
            "{status}: {:?}",
            totals.statuses
        );
    }
}

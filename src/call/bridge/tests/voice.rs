//! The bridge with answering machines, keypad entries and transfers: verdicts and keys go in,
//! and the test reads what reached Twilio and the agent.

use super::*;
use crate::twilio::AnsweredBy;

const MESSAGE: &str = "Hi, this is Bright Smile Dental. Please call us back.";

fn voicemail_agent() -> AgentConfig {
    AgentConfig {
        voicemail_message: Some(MESSAGE.into()),
        ..AgentConfig::default()
    }
}

fn start_machine(agent: AgentConfig) -> (Outcome, UnboundedSender<AnsweredBy>) {
    let (tx, rx) = unbounded_channel();
    let o = start_full(
        &NoTools,
        Duration::from_secs(3600),
        Duration::from_secs(600),
        0,
        agent,
        Verdicts::new(rx),
    );
    (o, tx)
}

fn audio(o: &Outcome, data: &str) {
    send(&o.agent, json!({"type":"reply.audio","data":data}));
}

/// Wait until the bridge has handled every agent frame sent so far: a partial transcript sent
/// after them comes back as an event.
async fn processed(o: &mut Outcome) {
    send(
        &o.agent,
        json!({"type":"transcript.user.delta","text":"sync"}),
    );
    loop {
        match o.events.recv().await {
            Some(CallEvent::Partial { text, .. }) if text == "sync" => return,
            Some(_) => {}
            None => panic!("the bridge ended"),
        }
    }
}

/// Every frame the bridge sent Twilio so far, without waiting.
fn sent_now(leg: &mut Leg) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Frame::Text(b)) = leg.from_bridge.try_recv() {
        out.push(serde_json::from_slice(&b).unwrap());
    }
    out
}

#[tokio::test]
async fn the_agent_is_quiet_during_the_greeting_and_leaves_the_message_after_the_beep() {
    let (mut o, verdicts) = start_machine(voicemail_agent());
    ready(&mut o).await;
    // The agent's greeting starts before any verdict: it goes out as usual.
    send(&o.agent, json!({"type":"reply.started"}));
    audio(&o, "R1JFRVQ=");
    assert_eq!(
        next_json(&mut o.twilio).await["media"]["payload"],
        "R1JFRVQ="
    );
    verdicts.send(AnsweredBy::MachineStart).unwrap();
    // What Twilio has not played of the greeting is dropped.
    assert_eq!(
        next_json(&mut o.twilio).await,
        json!({"event":"clear","streamSid":"MZ1"})
    );
    // From now on, no agent audio reaches Twilio, and the machine's greeting does not reach
    // the agent.
    audio(&o, "TU9SRQ==");
    send(
        &o.twilio,
        json!({"event":"media","media":{"payload":"TUFDSElORQ=="},"streamSid":"MZ1"}),
    );
    send(&o.agent, json!({"type":"reply.done","status":"completed"}));
    send(&o.agent, json!({"type":"reply.started"}));
    audio(&o, "QUdBSU4=");
    send(&o.agent, json!({"type":"reply.done","status":"completed"}));
    // The verdict and the agent's frames travel apart; the beep comes after all of these.
    processed(&mut o).await;
    verdicts.send(AnsweredBy::MachineEndBeep).unwrap();
    assert_eq!(next_json(&mut o.twilio).await["event"], "clear");
    let create = next_json(&mut o.agent).await;
    assert_eq!(create["type"], "reply.create", "{create}");
    let instructions = create["instructions"].as_str().unwrap();
    assert_eq!(
        crate::call::voicemail::message_in(instructions),
        Some(MESSAGE)
    );
    assert!(
        sent_now(&mut o.twilio).is_empty(),
        "nothing between the verdicts"
    );
    // The message: its audio goes out, then a mark; the mark's echo ends the call.
    send(&o.agent, json!({"type":"reply.started"}));
    audio(&o, "TUVTU0FHRQ==");
    send(
        &o.agent,
        json!({"type":"transcript.agent","text":MESSAGE,"interrupted":false}),
    );
    send(&o.agent, json!({"type":"reply.done","status":"completed"}));
    assert_eq!(
        next_json(&mut o.twilio).await["media"]["payload"],
        "TUVTU0FHRQ=="
    );
    assert_eq!(
        next_json(&mut o.twilio).await,
        json!({"event":"mark","streamSid":"MZ1","mark":{"name":VOICEMAIL_MARK}})
    );
    assert!(!o.handle.is_finished());
    send(
        &o.twilio,
        json!({"event":"mark","streamSid":"MZ1","mark":{"name":VOICEMAIL_MARK}}),
    );
    let report = o.handle.await.unwrap();
    assert_eq!(report.end, BridgeEnd::Machine(MachineEnd::VoicemailLeft));
    assert_eq!(report.transcript.last().unwrap().text, MESSAGE);
    // Only the callee's audio before the verdict reached the agent: none of the machine's.
    let mut to_agent = Vec::new();
    while let Ok(Frame::Text(b)) = o.agent.from_bridge.try_recv() {
        to_agent.push(serde_json::from_slice::<Value>(&b).unwrap());
    }
    assert!(
        to_agent.iter().all(|m| m["audio"] != "TUFDSElORQ=="),
        "{to_agent:?}"
    );
}

#[tokio::test]
async fn a_verdict_before_the_greeting_started_waits_for_it_then_asks_for_the_message() {
    let (mut o, verdicts) = start_machine(voicemail_agent());
    verdicts.send(AnsweredBy::MachineEndSilence).unwrap();
    ready(&mut o).await;
    assert_eq!(next_json(&mut o.twilio).await["event"], "clear");
    // The greeting starts: that start is not the message's.
    send(&o.agent, json!({"type":"reply.started"}));
    let create = next_json(&mut o.agent).await;
    assert_eq!(create["type"], "reply.create");
    audio(&o, "R1JFRVQ=");
    send(
        &o.agent,
        json!({"type":"reply.done","status":"interrupted"}),
    );
    send(&o.agent, json!({"type":"reply.started"}));
    audio(&o, "TUVTU0FHRQ==");
    send(&o.agent, json!({"type":"reply.done","status":"completed"}));
    // The greeting's audio never went out; only the message and its mark.
    let mut frames = Vec::new();
    while frames.last().is_none_or(|f: &Value| f["event"] != "mark") {
        frames.push(next_json(&mut o.twilio).await);
    }
    let media: Vec<_> = frames
        .iter()
        .filter(|f| f["event"] == "media")
        .map(|f| f["media"]["payload"].clone())
        .collect();
    assert_eq!(media, vec![json!("TUVTU0FHRQ==")], "{frames:?}");
    o.cancel.cancel();
    o.handle.await.unwrap();
}

#[tokio::test]
async fn with_no_message_a_machine_is_hung_up_on_at_once() {
    let (mut o, verdicts) = start_machine(AgentConfig::default());
    ready(&mut o).await;
    verdicts.send(AnsweredBy::MachineStart).unwrap();
    let report = o.handle.await.unwrap();
    assert_eq!(report.end, BridgeEnd::Machine(MachineEnd::Voicemail));
}

#[tokio::test]
async fn a_fax_is_hung_up_on_and_a_person_or_unknown_is_talked_to() {
    let (mut o, verdicts) = start_machine(voicemail_agent());
    ready(&mut o).await;
    verdicts.send(AnsweredBy::Unknown).unwrap();
    verdicts.send(AnsweredBy::Human).unwrap();
    send(&o.agent, json!({"type":"reply.audio","data":"SEk="}));
    assert_eq!(next_json(&mut o.twilio).await["media"]["payload"], "SEk=");
    verdicts.send(AnsweredBy::Fax).unwrap();
    let report = o.handle.await.unwrap();
    assert_eq!(report.end, BridgeEnd::Machine(MachineEnd::Fax));
}

#[tokio::test(start_paused = true)]
async fn keys_within_a_pause_are_one_entry_for_the_agent_and_the_transcript() {
    let mut o = start(&NoTools);
    ready(&mut o).await;
    let key = |o: &Outcome, d: &str| {
        send(
            &o.twilio,
            json!({"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":d}}),
        )
    };
    key(&o, "1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    key(&o, "2");
    // Nothing before the pause is over.
    tokio::time::sleep(crate::call::keypad::PAUSE / 2).await;
    assert!(o.agent.from_bridge.try_recv().is_err());
    let create = next_json(&mut o.agent).await;
    assert_eq!(create["type"], "reply.create");
    assert!(
        create["instructions"]
            .as_str()
            .unwrap()
            .contains("keypad: 1 2."),
        "{create}"
    );
    // `#` ends an entry at once.
    key(&o, "3");
    key(&o, "#");
    let create = next_json(&mut o.agent).await;
    assert!(
        create["instructions"]
            .as_str()
            .unwrap()
            .contains("keypad: 3.")
    );
    o.cancel.cancel();
    let report = o.handle.await.unwrap();
    let lines: Vec<_> = report
        .transcript
        .iter()
        .map(|l| (l.speaker, l.text.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (Speaker::Callee, "[keypad] 12"),
            (Speaker::Callee, "[keypad] 3")
        ]
    );
    let mut keys = Vec::new();
    while let Ok(ev) = o.events.try_recv() {
        if let CallEvent::Keypad { keys: k, .. } = ev {
            keys.push(k);
        }
    }
    assert_eq!(keys, ["12", "3"]);
}

struct Keys;
impl ToolHandler for Keys {
    fn specs(&self) -> Vec<ToolSpec> {
        Vec::new()
    }
    fn call(&self, _: &str, _: &Value) -> Option<ToolReply> {
        None
    }
    fn keypad(&self, keys: &str) -> Option<Disposition> {
        (keys == "1").then(|| Disposition {
            name: "confirmed".into(),
            notes: String::new(),
        })
    }
}

#[tokio::test]
async fn a_key_can_record_a_disposition() {
    let mut o = start(&Keys);
    ready(&mut o).await;
    send(
        &o.twilio,
        json!({"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"1"}}),
    );
    send(
        &o.twilio,
        json!({"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"#"}}),
    );
    assert_eq!(next_json(&mut o.agent).await["type"], "reply.create");
    o.cancel.cancel();
    let report = o.handle.await.unwrap();
    assert_eq!(report.disposition.unwrap().name, "confirmed");
}

fn transfer_agent() -> AgentConfig {
    AgentConfig {
        transfer_to: Some("+12025550150".into()),
        ..AgentConfig::default()
    }
}

#[tokio::test]
async fn transfer_call_has_the_agent_announce_it_then_ends_the_bridge_after_the_mark() {
    let mut o = start_full(
        &NoTools,
        Duration::from_secs(3600),
        Duration::from_secs(600),
        0,
        transfer_agent(),
        Verdicts::none(),
    );
    let update = next_json(&mut o.agent).await;
    assert!(
        update["session"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == TRANSFER_CALL),
        "{update}"
    );
    send(
        &o.agent,
        json!({"type":"session.ready","session_id":"sess_1"}),
    );
    send(&o.agent, json!({"type":"reply.started"}));
    send(
        &o.agent,
        json!({"type":"tool.call","call_id":"c1","name":"transfer_call","arguments":{"reason":"asked for a person"}}),
    );
    send(&o.agent, json!({"type":"reply.done","status":"completed"}));
    let result = next_json(&mut o.agent).await;
    assert_eq!(result["type"], "tool.result");
    assert!(result["result"].as_str().unwrap().contains("transferring"));
    // No mark before the hand-off line.
    assert!(sent_now(&mut o.twilio).is_empty());
    send(&o.agent, json!({"type":"reply.started"}));
    audio(&o, "SE9MRA==");
    // An end_call in the hand-off line does not end the call: the transfer does.
    send(
        &o.agent,
        json!({"type":"tool.call","call_id":"c2","name":"end_call","arguments":{}}),
    );
    send(&o.agent, json!({"type":"reply.done","status":"completed"}));
    assert_eq!(next_json(&mut o.twilio).await["event"], "media");
    assert_eq!(
        next_json(&mut o.twilio).await,
        json!({"event":"mark","streamSid":"MZ1","mark":{"name":TRANSFER_MARK}})
    );
    send(
        &o.twilio,
        json!({"event":"mark","streamSid":"MZ1","mark":{"name":TRANSFER_MARK}}),
    );
    let report = o.handle.await.unwrap();
    assert_eq!(
        report.end,
        BridgeEnd::Transferred {
            reason: "asked for a person".into()
        }
    );
    // The session is ended: the call goes on without the agent.
    assert_eq!(next_json(&mut o.agent).await["type"], "session.end");
}

#[tokio::test]
async fn without_a_target_there_is_no_transfer_tool() {
    let mut o = start(&NoTools);
    let update = next_json(&mut o.agent).await;
    assert!(
        !update["session"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == TRANSFER_CALL)
    );
    o.cancel.cancel();
    o.handle.await.unwrap();
}

struct TransferOnConfirm;
impl ToolHandler for TransferOnConfirm {
    fn specs(&self) -> Vec<ToolSpec> {
        Vec::new()
    }
    fn call(&self, name: &str, _: &Value) -> Option<ToolReply> {
        (name == "record_outcome").then(|| ToolReply {
            result: json!({"recorded": "interested"}),
            disposition: Some(Disposition {
                name: "interested".into(),
                notes: String::new(),
            }),
            transfer: Some("disposition interested".into()),
            ..ToolReply::default()
        })
    }
}

#[tokio::test]
async fn a_disposition_that_requires_a_person_transfers_the_call() {
    let mut o = start_full(
        &TransferOnConfirm,
        Duration::from_secs(3600),
        Duration::from_secs(600),
        0,
        transfer_agent(),
        Verdicts::none(),
    );
    ready(&mut o).await;
    send(
        &o.agent,
        json!({"type":"tool.call","call_id":"c1","name":"record_outcome","arguments":{"disposition":"interested"}}),
    );
    send(&o.agent, json!({"type":"reply.done","status":"completed"}));
    let result = next_json(&mut o.agent).await;
    let text = result["result"].as_str().unwrap();
    assert!(
        text.contains("\"recorded\":\"interested\"") && text.contains("transferring"),
        "{text}"
    );
    send(&o.agent, json!({"type":"reply.started"}));
    send(&o.agent, json!({"type":"reply.done","status":"completed"}));
    assert_eq!(
        next_json(&mut o.twilio).await["mark"]["name"],
        TRANSFER_MARK
    );
    send(
        &o.twilio,
        json!({"event":"mark","streamSid":"MZ1","mark":{"name":TRANSFER_MARK}}),
    );
    let report = o.handle.await.unwrap();
    assert_eq!(
        report.end,
        BridgeEnd::Transferred {
            reason: "disposition interested".into()
        }
    );
    assert_eq!(report.disposition.unwrap().name, "interested");
}

#[tokio::test(start_paused = true)]
async fn a_message_that_never_comes_is_given_up_on_as_no_message_left() {
    let (mut o, verdicts) = start_machine(voicemail_agent());
    ready(&mut o).await;
    send(&o.agent, json!({"type":"reply.started"}));
    verdicts.send(AnsweredBy::MachineEndBeep).unwrap();
    assert_eq!(next_json(&mut o.agent).await["type"], "reply.create");
    // The agent never starts the message: after the mark timeout the call is hung up.
    let report = o.handle.await.unwrap();
    assert_eq!(report.end, BridgeEnd::Machine(MachineEnd::Voicemail));
}

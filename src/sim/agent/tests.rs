//! Drives the fake with a raw WebSocket client, as the real service would be driven.

use super::*;
use crate::sim::speech::{self, Heard as Decoded, Listener};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const KEY: &str = "sim-assemblyai-key";
const GREETING: &str = "Hello! This is an automated assistant calling. Is now a good time?";
const LONG_GREETING: &str = "Hello! This is an automated assistant calling on behalf of the dental office of Doctor Alvarez, about the appointment you booked with us for next Tuesday morning at nine thirty. Is now a good time to talk for a moment, so that we can go over the details together?";

async fn fake(resume: ResumeMode) -> (FakeAgent, CancellationToken) {
    let token = CancellationToken::new();
    let config = FakeAgentConfig {
        time_scale: TimeScale(0.05),
        resume,
        ..FakeAgentConfig::default()
    };
    let agent = FakeAgent::start(config, token.clone()).await.unwrap();
    (agent, token)
}

async fn connect_to(url: &str, auth: Option<&str>) -> Ws {
    let mut req = url.into_client_request().unwrap();
    if let Some(a) = auth {
        req.headers_mut()
            .insert("Authorization", HeaderValue::from_str(a).unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn connect(agent: &FakeAgent) -> Ws {
    connect_to(&agent.url(), Some(&format!("Bearer {KEY}"))).await
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

#[derive(Debug)]
enum In {
    Event(Value),
    Closed(Option<u16>),
}

async fn recv(ws: &mut Ws) -> In {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("timed out waiting for the server");
        match msg {
            Some(Ok(Message::Text(t))) => {
                return In::Event(serde_json::from_str(t.as_str()).unwrap());
            }
            Some(Ok(Message::Close(f))) => return In::Closed(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return In::Closed(None),
        }
    }
}

async fn event(ws: &mut Ws) -> Value {
    match recv(ws).await {
        In::Event(v) => {
            assert!(
                v["timestamp"].is_f64(),
                "every event has a float timestamp: {v}"
            );
            v
        }
        In::Closed(c) => panic!("closed ({c:?}) while waiting for an event"),
    }
}

/// Events up to and including the first of type `ty`.
async fn until(ws: &mut Ws, ty: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = event(ws).await;
        let done = v["type"] == ty;
        out.push(v);
        if done {
            return out;
        }
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

async fn expect_error_then_close(ws: &mut Ws, code: &str, close: u16) -> Value {
    let err = event(ws).await;
    assert_eq!(err["type"], "session.error", "{err}");
    assert_eq!(err["code"], code, "{err}");
    match recv(ws).await {
        In::Closed(c) => assert_eq!(c, Some(close)),
        In::Event(v) => panic!("expected close {close}, got {v}"),
    }
    err
}

fn tools() -> Value {
    json!([
        {"type": "function", "name": "end_call", "description": "Hang up.",
         "parameters": {"type": "object", "properties": {}}},
        {"type": "function", "name": "opt_out", "description": "Do not call again.",
         "parameters": {"type": "object", "properties": {}}},
        {"type": "function", "name": "record_outcome", "description": "Record how the call went.",
         "parameters": {"type": "object", "properties": {
             "disposition": {"type": "string", "enum": ["confirmed", "reschedule", "wrong_number", "not_interested", "voicemail", "do_not_call"]},
             "notes": {"type": "string"}},
           "required": ["disposition"]}}
    ])
}

fn pcmu_session() -> Value {
    json!({
        "system_prompt": "You are a reminder agent.",
        "greeting": GREETING,
        "input": {"format": {"encoding": "audio/pcmu"}},
        "output": {"voice": "alba", "format": {"encoding": "audio/pcmu"}},
        "tools": tools(),
    })
}

async fn open(ws: &mut Ws, session: Value) -> Value {
    send(ws, json!({"type": "session.update", "session": session})).await;
    let updated = event(ws).await;
    assert_eq!(updated["type"], "session.updated", "{updated}");
    let ready = event(ws).await;
    assert_eq!(ready["type"], "session.ready", "{ready}");
    ready
}

/// Open a pcmu session and let the greeting play out; returns the greeting's events.
async fn open_and_greet(ws: &mut Ws) -> Vec<Value> {
    open(ws, pcmu_session()).await;
    until(ws, "reply.done").await
}

async fn say(ws: &mut Ws, audio: &[u8]) {
    for chunk in audio.chunks(speech::FRAME_BYTES) {
        send(
            ws,
            json!({"type": "input.audio", "audio": STANDARD.encode(chunk)}),
        )
        .await;
    }
}

fn utterance(text: &str) -> Vec<u8> {
    let mut a = speech::encode(text);
    a.extend(speech::silence(800));
    a
}

fn decode(audio: &[u8]) -> Vec<String> {
    let mut l = Listener::new();
    l.feed(audio)
        .into_iter()
        .filter_map(|h| match h {
            Decoded::Utterance(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn audio_of(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .filter(|e| e["type"] == "reply.audio")
        .flat_map(|e| STANDARD.decode(e["data"].as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn bad_key_is_unauthorized_on_the_first_frame() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect_to(&agent.url(), Some("Bearer wrong-key")).await;
    // Nothing arrives before the client speaks.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), ws.next())
            .await
            .is_err()
    );
    send(
        &mut ws,
        json!({"type": "session.update", "session": pcmu_session()}),
    )
    .await;
    let err = expect_error_then_close(&mut ws, "unauthorized", 1008).await;
    assert!(err["session_id"].is_null() && err["param"].is_null());
    assert!(err["message"].is_string());

    // No credential at all fails the same way.
    let mut ws = connect_to(&agent.url(), None).await;
    send(&mut ws, json!({"type": "session.update", "session": {}})).await;
    expect_error_then_close(&mut ws, "unauthorized", 1008).await;

    let s = agent.sessions();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].close_code, Some(1008));
    assert_eq!(s[0].errors_sent, vec!["unauthorized"]);
    assert!(s[0].first_update.is_some());
    token.cancel();
}

#[tokio::test]
async fn raw_key_and_query_token_are_accepted_and_other_paths_404() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect_to(&agent.url(), Some(KEY)).await;
    open(&mut ws, json!({})).await;
    let mut ws = connect_to(&format!("{}?token={KEY}", agent.url()), None).await;
    let ready = open(&mut ws, json!({})).await;
    // Defaults: PCM 24 kHz both ways, voice alba.
    assert_eq!(ready["config"]["input"]["format"]["sample_rate"], 24000);
    assert_eq!(ready["config"]["output"]["voice"], DEFAULT_VOICE);

    let wrong = agent.url().replace("/v1/ws", "/v1/voice");
    let err = tokio_tungstenite::connect_async(wrong).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 404),
        other => panic!("expected HTTP 404, got {other:?}"),
    }
    token.cancel();
}

#[tokio::test]
async fn fatal_first_updates_close_1008() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let cases = [
        (
            json!({"output": {"voice": "ivy"}}),
            "invalid_value",
            Some("output.voice"),
        ),
        (
            json!({"llm": [{"base_url": "https://x", "model": "m"}]}),
            "invalid_config",
            Some("llm"),
        ),
        (
            json!({"agent_id": "agent_1", "greeting": "hi"}),
            "agent_id_not_first",
            Some("agent_id"),
        ),
        (
            json!({"agent_id": "agent_1"}),
            "agent_not_found",
            Some("agent_id"),
        ),
    ];
    let long_voice = "é".repeat(200);
    let cases = cases.into_iter().chain([(
        json!({"output": {"voice": long_voice}}),
        "invalid_value",
        Some("output.voice"),
    )]);
    for (session, code, param) in cases {
        let mut ws = connect(&agent).await;
        send(
            &mut ws,
            json!({"type": "session.update", "session": session}),
        )
        .await;
        let err = expect_error_then_close(&mut ws, code, 1008).await;
        assert_eq!(err["param"].as_str(), param);
    }
    assert!(agent.sessions().iter().all(|s| s.close_code == Some(1008)));
    token.cancel();
}

#[tokio::test]
async fn schema_violations_are_rejected_and_the_socket_stays_open() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    let bad = [
        (json!({"voice": "alba"}), "voice"),
        (json!({"greeting": null}), "greeting"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "end_call", "parameters": {}}}]}),
            "tools[0].function",
        ),
        (
            json!({"input": {"format": {"encoding": "audio/pcmu", "sample_rate": 8000}}}),
            "input.format.sample_rate",
        ),
        (
            json!({"output": {"format": {"encoding": "audio/mp3"}}}),
            "output.format.encoding",
        ),
        (
            json!({"input": {"turn_detection": {"interruption_delay": 5000}}}),
            "input.turn_detection.interruption_delay",
        ),
    ];
    for (session, param) in bad {
        send(
            &mut ws,
            json!({"type": "session.update", "session": session}),
        )
        .await;
        let err = event(&mut ws).await;
        assert_eq!(err["type"], "session.error");
        assert_eq!(err["code"], "invalid_format", "{err}");
        assert_eq!(err["param"], param);
    }
    // Still open, and a valid update then succeeds.
    let ready = open(&mut ws, pcmu_session()).await;
    assert_eq!(ready["config"]["input"]["format"]["sample_rate"], 8000);
    assert_eq!(ready["config"]["tools"][0]["execution_mode"], "interactive");
    token.cancel();
}

#[tokio::test]
async fn greeting_is_spoken_in_pcmu_at_pace() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    // The clock starts before the greeting can: on a loaded machine this task may read
    // `session.ready` late, after some audio was already paced out.
    let started = std::time::Instant::now();
    let ready = open(&mut ws, pcmu_session()).await;
    let sid = ready["session_id"].as_str().unwrap();
    assert!(sid.starts_with("sess_") && sid.len() == 37, "{sid}");
    assert!(ready["expires_at"].as_f64().unwrap() > 1.7e9);
    assert!(ready["resume_token"].is_string());
    assert_eq!(ready["config"]["output"]["format"]["sample_rate"], 8000);
    assert_eq!(ready["config"]["greeting"], GREETING);

    let events = until(&mut ws, "reply.done").await;
    let elapsed = started.elapsed();
    let t = types(&events);
    assert_eq!(t[0], "reply.started");
    let first_audio = t.iter().position(|t| *t == "reply.audio").unwrap();
    assert!(
        t[1..first_audio]
            .iter()
            .all(|t| *t == "transcript.agent.delta")
    );
    assert_eq!(t[t.len() - 2..], ["transcript.agent", "reply.done"]);

    let reply_id = events[0]["reply_id"].as_str().unwrap();
    assert!(reply_id.starts_with("resp_") && reply_id.len() == 37);
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "transcript.agent.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, GREETING);
    assert_eq!(events[1]["start_ms"], 0);

    let chunks: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "reply.audio")
        .collect();
    assert!(chunks.iter().all(|c| c["reply_id"] == reply_id));
    let sizes: Vec<usize> = chunks
        .iter()
        .map(|c| STANDARD.decode(c["data"].as_str().unwrap()).unwrap().len())
        .collect();
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 300));
    let audio = audio_of(&events);
    assert_eq!(decode(&audio), vec![GREETING.to_string()]);
    assert!(
        audio[..1600].iter().all(|&b| b == speech::SILENCE),
        "200 ms lead-in"
    );
    // Paced at 0.05 × real time, not dumped at once.
    let audio_ms = audio.len() / speech::BYTES_PER_MS;
    let expected = Duration::from_millis(audio_ms as u64).mul_f64(0.05);
    assert!(
        elapsed >= expected.mul_f64(0.8),
        "{elapsed:?} vs {expected:?}"
    );

    let done = events.last().unwrap();
    assert_eq!(done["status"], "completed");
    let transcript = &events[events.len() - 2];
    assert_eq!(transcript["text"], GREETING);
    assert_eq!(transcript["interrupted"], false);

    let rec = &agent.sessions()[0];
    assert_eq!(rec.audio_sent, audio);
    assert_eq!(rec.session_id.as_deref(), Some(sid));
    assert_eq!(rec.agent_transcripts, vec![(GREETING.to_string(), false)]);
    assert_eq!(rec.first_update.as_ref(), Some(&pcmu_session()));
    token.cancel();
}

#[tokio::test]
async fn a_confirmation_records_the_outcome_then_ends_the_call() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    open_and_greet(&mut ws).await;

    let spoken = "Yes, that works for me";
    say(&mut ws, &utterance(spoken)).await;
    let events = until(&mut ws, "transcript.user").await;
    let t = types(&events);
    assert_eq!(t[0], "input.speech.started");
    assert_eq!(
        t[t.len() - 2..],
        ["input.speech.stopped", "transcript.user"]
    );
    let partials: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "transcript.user.delta")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(partials.len() >= 3, "{partials:?}");
    for pair in partials.windows(2) {
        assert!(pair[1].starts_with(pair[0]) && pair[1].len() > pair[0].len());
    }
    assert!(spoken.starts_with(partials[0]));
    let item = events.last().unwrap()["item_id"].as_str().unwrap();
    assert!(item.starts_with("msg_"));
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "transcript.user.delta")
            .all(|e| e["item_id"] == item)
    );
    assert_eq!(events.last().unwrap()["text"], spoken);

    // The outcome is recorded in a tool pre-amble.
    let events = until(&mut ws, "reply.done").await;
    let t = types(&events);
    assert_eq!(t[0], "reply.started");
    assert_eq!(t[t.len() - 2..], ["tool.call", "reply.done"]);
    let call = &events[events.len() - 2];
    assert_eq!(call["name"], "record_outcome");
    assert_eq!(call["arguments"]["disposition"], "confirmed");
    assert!(call["arguments"]["notes"].is_string());
    let call_id = call["call_id"].as_str().unwrap();
    assert!(call_id.starts_with("chatcmpl-tool-") && call_id.len() == 30);

    // A result that is not a string is refused, and the session goes on.
    send(
        &mut ws,
        json!({"type": "tool.result", "call_id": call_id, "result": {"ok": true}}),
    )
    .await;
    let err = event(&mut ws).await;
    assert_eq!(
        (err["code"].as_str(), err["param"].as_str()),
        (Some("invalid_format"), Some("result"))
    );
    send(
        &mut ws,
        json!({"type": "tool.result", "call_id": call_id, "result": "{\"ok\":true}"}),
    )
    .await;

    let events = until(&mut ws, "reply.done").await;
    let t = types(&events);
    assert_eq!(
        t[t.len() - 3..],
        ["transcript.agent", "tool.call", "reply.done"]
    );
    let goodbye = events[events.len() - 3]["text"].as_str().unwrap();
    assert!(goodbye.contains("Goodbye"), "{goodbye}");
    assert_eq!(decode(&audio_of(&events)), vec![goodbye.to_string()]);
    let end = &events[events.len() - 2];
    assert_eq!(
        (end["name"].as_str(), &end["arguments"]),
        (Some("end_call"), &json!({}))
    );

    send(&mut ws, json!({"type": "session.end"})).await;
    let ended = event(&mut ws).await;
    assert_eq!(ended["type"], "session.ended");
    assert!(ended["session_duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(ended["audio_duration_seconds"].as_f64().unwrap() > 2.0);
    assert!(matches!(recv(&mut ws).await, In::Closed(Some(1000))));

    let rec = &agent.sessions()[0];
    assert_eq!(rec.user_transcripts, vec![spoken.to_string()]);
    let names: Vec<&str> = rec.tool_calls.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["record_outcome", "end_call"]);
    assert_eq!(rec.tool_results.len(), 2);
    assert_eq!(rec.audio_received, utterance(spoken).len());
    assert!(rec.ended_by_client);
    assert_eq!(rec.close_code, Some(1000));
    token.cancel();
}

#[tokio::test]
async fn opt_out_calls_the_tools_then_apologises() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    open_and_greet(&mut ws).await;
    say(&mut ws, &utterance("Please take me off your list.")).await;
    until(&mut ws, "transcript.user").await;
    let events = until(&mut ws, "reply.done").await;
    let calls: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool.call").collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["name"], "opt_out");
    assert_eq!(calls[1]["arguments"]["disposition"], "do_not_call");
    for c in &calls {
        send(
            &mut ws,
            json!({"type": "tool.result", "call_id": c["call_id"], "result": "{}"}),
        )
        .await;
    }
    let events = until(&mut ws, "reply.done").await;
    let said = events
        .iter()
        .find(|e| e["type"] == "transcript.agent")
        .unwrap();
    assert_eq!(
        said["text"],
        "I've removed your number. Sorry to bother you. Goodbye."
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "tool.call" && e["name"] == "end_call")
    );
    drop(agent);
    token.cancel();
}

#[tokio::test]
async fn barge_in_stops_the_greeting() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    let mut session = pcmu_session();
    session["greeting"] = json!(LONG_GREETING);
    open(&mut ws, session).await;
    let mut before = Vec::new();
    while before
        .iter()
        .filter(|e: &&Value| e["type"] == "reply.audio")
        .count()
        < 12
    {
        before.push(event(&mut ws).await);
    }
    let reply_id = before[0]["reply_id"].as_str().unwrap().to_string();
    say(&mut ws, &utterance("Sorry, who is this?")).await;

    let mut events = until(&mut ws, "reply.done").await;
    let done = events.last().unwrap().clone();
    assert_eq!(done["status"], "interrupted");
    assert_eq!(done["reply_id"], reply_id.as_str());
    let t = types(&events);
    let started = t.iter().position(|t| *t == "input.speech.started").unwrap();
    let said = t.iter().position(|t| *t == "transcript.agent").unwrap();
    assert!(started < said && said == t.len() - 2);
    let heard = events[said]["text"].as_str().unwrap().to_string();
    assert_eq!(events[said]["interrupted"], true);
    assert!(LONG_GREETING.starts_with(&heard), "{heard:?}");
    assert!(heard.len() < LONG_GREETING.len());

    // No more audio for the interrupted reply; the user's turn runs on, then the agent answers.
    events.extend(until(&mut ws, "transcript.user").await);
    let answer = until(&mut ws, "reply.done").await;
    assert!(
        events
            .iter()
            .skip_while(|e| e["type"] != "reply.done")
            .all(|e| e["type"] != "reply.audio")
    );
    assert!(
        answer
            .iter()
            .filter(|e| e["type"] == "reply.audio")
            .all(|e| e["reply_id"] != reply_id.as_str())
    );
    let said = answer
        .iter()
        .find(|e| e["type"] == "transcript.agent")
        .unwrap();
    assert!(
        said["text"]
            .as_str()
            .unwrap()
            .contains("automated reminder")
    );

    let rec = &agent.sessions()[0];
    let greeting_bytes = speech::silence(200).len() + speech::encode(LONG_GREETING).len();
    let greeting_sent = rec.audio_sent.len() - audio_of(&answer).len();
    assert!(greeting_sent < greeting_bytes);
    assert_eq!(rec.agent_transcripts[0], (heard, true));
    token.cancel();
}

#[tokio::test]
async fn no_barge_in_when_interrupt_response_is_false() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    let mut session = pcmu_session();
    session["input"]["turn_detection"] = json!({"interrupt_response": false});
    open(&mut ws, session).await;
    event(&mut ws).await;
    say(&mut ws, &utterance("Hello?")).await;
    let events = until(&mut ws, "reply.done").await;
    assert_eq!(events.last().unwrap()["status"], "completed");
    assert!(events.iter().any(|e| e["type"] == "input.speech.started"));
    drop(agent);
    token.cancel();
}

#[tokio::test]
async fn immutable_fields_and_bad_frames_keep_the_session_open() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    open_and_greet(&mut ws).await;

    send(
        &mut ws,
        json!({"type": "session.update", "session": {"output": {"voice": "jane"}}}),
    )
    .await;
    let err = event(&mut ws).await;
    assert_eq!(err["code"], "immutable_field");
    assert_eq!(err["param"], "output.voice");
    assert!(err["session_id"].as_str().unwrap().starts_with("sess_"));

    send(&mut ws, json!({"type": "session.update", "session": {"greeting": "Hi", "system_prompt": "Be brief."}})).await;
    let err = event(&mut ws).await;
    assert_eq!(
        (err["code"].as_str(), err["param"].as_str()),
        (Some("immutable_field"), Some("greeting"))
    );
    let updated = event(&mut ws).await;
    assert_eq!(updated["type"], "session.updated");
    assert_eq!(updated["config"]["system_prompt"], "Be brief.");
    assert_eq!(updated["config"]["greeting"], GREETING);
    assert_eq!(updated["config"]["output"]["voice"], "alba");

    ws.send(Message::text("{not json")).await.unwrap();
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    send(&mut ws, json!({"type": "input.text", "text": "hi"})).await;
    send(&mut ws, json!({"no_type": true})).await;
    send(&mut ws, json!({"type": "input.audio", "audio": "***"})).await;
    send(
        &mut ws,
        json!({"type": "tool.result", "call_id": "chatcmpl-tool-0000000000000000", "result": "{}"}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "conversation.message", "role": "user", "content": "My name is Priya"}),
    )
    .await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let e = event(&mut ws).await;
        assert_eq!(e["type"], "session.error", "{e}");
        codes.push(e["code"].as_str().unwrap().to_string());
    }
    assert_eq!(
        codes,
        [
            "invalid_format",
            "invalid_format",
            "invalid_format",
            "invalid_format",
            "invalid_audio",
            "invalid_value"
        ]
    );

    send(&mut ws, json!({"type": "session.end"})).await;
    assert_eq!(event(&mut ws).await["type"], "session.ended");
    assert!(matches!(recv(&mut ws).await, In::Closed(Some(1000))));
    let rec = &agent.sessions()[0];
    assert_eq!(rec.close_code, Some(1000));
    assert_eq!(rec.errors_sent.len(), 8);
    token.cancel();
}

#[tokio::test]
async fn silence_gets_a_check_in_then_a_goodbye() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    open_and_greet(&mut ws).await;
    let silence = speech::silence(6_100);
    for chunk in silence.chunks(1600) {
        send(
            &mut ws,
            json!({"type": "input.audio", "audio": STANDARD.encode(chunk)}),
        )
        .await;
    }
    let events = until(&mut ws, "reply.done").await;
    let said = events
        .iter()
        .find(|e| e["type"] == "transcript.agent")
        .unwrap();
    assert_eq!(said["text"], "Are you still there?");
    for chunk in silence.chunks(1600) {
        send(
            &mut ws,
            json!({"type": "input.audio", "audio": STANDARD.encode(chunk)}),
        )
        .await;
    }
    // No disposition in the enum fits "no response", so straight to the goodbye.
    let events = until(&mut ws, "reply.done").await;
    let said = events
        .iter()
        .find(|e| e["type"] == "transcript.agent")
        .unwrap();
    assert!(said["text"].as_str().unwrap().ends_with("Goodbye."));
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "tool.call" && e["name"] == "end_call")
    );
    drop(agent);
    token.cancel();
}

#[tokio::test]
async fn audio_before_ready_is_discarded_and_resume_follows_the_mode() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    send(
        &mut ws,
        json!({"type": "session.resume", "session_id": "sess_0"}),
    )
    .await;
    let err = expect_error_then_close(&mut ws, "session_not_found", 1008).await;
    assert_eq!(
        err["message"],
        "Session not found or grace window has expired"
    );
    assert!(err["session_id"].is_null());
    token.cancel();

    let (agent, token) = fake(ResumeMode::Accept).await;
    let mut ws = connect(&agent).await;
    say(&mut ws, &speech::silence(100)).await;
    let mut session = pcmu_session();
    session.as_object_mut().unwrap().remove("greeting");
    let ready = open(&mut ws, session).await;
    let sid = ready["session_id"].as_str().unwrap().to_string();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut ws = connect(&agent).await;
    send(
        &mut ws,
        json!({"type": "session.resume", "session_id": sid}),
    )
    .await;
    let again = event(&mut ws).await;
    assert_eq!(again["type"], "session.ready");
    assert_eq!(again["session_id"], sid.as_str());
    let s = agent.sessions();
    assert_eq!(s[0].audio_received, 0);
    assert_eq!(s[1].session_id.as_deref(), Some(sid.as_str()));

    // Shutdown closes live sessions as "going away".
    token.cancel();
    assert!(matches!(recv(&mut ws).await, In::Closed(Some(1001))));
}

// ---- faults ----------------------------------------------------------------------------------

async fn faulty(resume: ResumeMode, faults: Vec<FaultRule>) -> (FakeAgent, CancellationToken) {
    let token = CancellationToken::new();
    let config = FakeAgentConfig {
        time_scale: TimeScale(0.05),
        resume,
        faults,
        ..FakeAgentConfig::default()
    };
    let agent = FakeAgent::start(config, token.clone()).await.unwrap();
    (agent, token)
}

fn without_greeting() -> Value {
    let mut session = pcmu_session();
    session.as_object_mut().unwrap().remove("greeting");
    session
}

/// How the server's side of the connection ended, and the events before that.
#[derive(Debug, PartialEq)]
enum End {
    /// A close frame with this code.
    Frame(Option<u16>),
    /// The connection ended with no close frame.
    Dropped,
}

async fn read_to_end(ws: &mut Ws) -> (Vec<Value>, End) {
    let mut events = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the server neither spoke nor closed");
        match msg {
            Some(Ok(Message::Text(t))) => events.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(f))) => {
                return (events, End::Frame(f.map(|f| u16::from(f.code))));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (events, End::Dropped),
        }
    }
}

/// Nothing arrives for `wait` (real time).
async fn quiet_for(ws: &mut Ws, wait: Duration) {
    if let Ok(msg) = tokio::time::timeout(wait, ws.next()).await {
        panic!("expected silence, got {msg:?}");
    }
}

/// Prove the socket is still open and answering: an unknown event gets `invalid_format`.
async fn still_answers(ws: &mut Ws) {
    send(ws, json!({"type": "no.such.event"})).await;
    let err = event(ws).await;
    assert_eq!(err["type"], "session.error", "{err}");
    assert_eq!(err["code"], "invalid_format", "{err}");
}

#[tokio::test]
async fn a_drop_on_the_second_session_resets_it_without_a_close_frame_and_holds_it() {
    let drop_after = Duration::from_secs(2);
    let (agent, token) = faulty(
        ResumeMode::Accept,
        vec![FaultRule::nth(2, AgentFault::Drop { after: drop_after })],
    )
    .await;
    // The first session is left alone, well past the fault's time.
    let mut first = connect(&agent).await;
    open(&mut first, without_greeting()).await;
    quiet_for(&mut first, TimeScale(0.05).scale(drop_after * 3)).await;
    still_answers(&mut first).await;

    let mut second = connect(&agent).await;
    let ready = open(&mut second, pcmu_session()).await;
    let (events, end) = read_to_end(&mut second).await;
    assert_eq!(end, End::Dropped, "{events:?}");
    assert!(
        events.iter().all(|e| e["type"] != "session.error"),
        "{events:?}"
    );
    let s = agent.sessions();
    assert_eq!(s[0].fault, None);
    assert!(!s[0].fault_fired);
    assert_eq!(s[1].fault, Some(AgentFault::Drop { after: drop_after }));
    assert!(s[1].fault_fired);
    assert_eq!(s[1].close_code, None);

    // Dropped, not ended: the session can be resumed, as the real service holds it.
    let mut third = connect(&agent).await;
    send(
        &mut third,
        json!({"type": "session.resume", "session_id": ready["session_id"]}),
    )
    .await;
    assert_eq!(event(&mut third).await["type"], "session.ready");
    token.cancel();
}

#[tokio::test]
async fn close_1011_mid_session_comes_with_no_error() {
    let (agent, token) = faulty(
        ResumeMode::Reject,
        vec![FaultRule::all(AgentFault::Close1011 {
            after: Duration::from_secs(1),
        })],
    )
    .await;
    let mut ws = connect(&agent).await;
    open(&mut ws, pcmu_session()).await;
    let (events, end) = read_to_end(&mut ws).await;
    assert_eq!(end, End::Frame(Some(1011)));
    // A second of a long greeting: cut off mid-reply.
    assert!(events.iter().any(|e| e["type"] == "reply.audio"));
    assert!(
        events
            .iter()
            .all(|e| e["type"] != "session.error" && e["type"] != "session.ended"),
        "{events:?}"
    );
    let s = &agent.sessions()[0];
    assert!(s.fault_fired);
    assert_eq!(s.close_code, Some(1011));
    token.cancel();
}

#[tokio::test]
async fn a_non_fatal_error_then_close_1000_without_session_ended() {
    let (agent, token) = faulty(
        ResumeMode::Reject,
        vec![FaultRule::all(AgentFault::ErrorThenClose {
            after: Duration::from_secs(1),
            code: "invalid_audio",
        })],
    )
    .await;
    let mut ws = connect(&agent).await;
    open(&mut ws, without_greeting()).await;
    let (events, end) = read_to_end(&mut ws).await;
    assert_eq!(end, End::Frame(Some(1000)));
    assert_eq!(types(&events), vec!["session.error"], "{events:?}");
    assert_eq!(events[0]["code"], "invalid_audio");
    let s = &agent.sessions()[0];
    assert_eq!(s.errors_sent, vec!["invalid_audio"]);
    assert!(!s.events_sent.contains(&"session.ended".to_string()));
    token.cancel();
}

#[tokio::test]
async fn a_silent_session_greets_then_reads_audio_and_never_answers() {
    let (agent, token) = faulty(ResumeMode::Reject, vec![FaultRule::all(AgentFault::Silent)]).await;
    let mut ws = connect(&agent).await;
    let greeting = open_and_greet(&mut ws).await;
    assert_eq!(decode(&audio_of(&greeting)), vec![GREETING]);
    // An unfaulted session answers this within a simulated second (see the tests above).
    say(&mut ws, &utterance("Yes, that works for me.")).await;
    say(&mut ws, &speech::silence(7_000)).await;
    send(&mut ws, json!({"type": "reply.create"})).await;
    send(&mut ws, json!({"type": "session.end"})).await;
    quiet_for(&mut ws, Duration::from_millis(600)).await;
    let s = &agent.sessions()[0];
    assert!(s.fault_fired);
    assert!(s.audio_received > 0, "audio is still read");
    assert_eq!(s.events_sent.last().map(String::as_str), Some("reply.done"));
    assert!(s.user_transcripts.is_empty());
    // The WebSocket layer still completes a close handshake.
    ws.close(None).await.unwrap();
    let (_, end) = read_to_end(&mut ws).await;
    assert!(matches!(end, End::Frame(_)), "{end:?}");
    token.cancel();
}

#[tokio::test]
async fn a_slow_ready_comes_after_its_delay_and_never_past_the_agent_timeout() {
    let (agent, token) = faulty(
        ResumeMode::Reject,
        vec![
            FaultRule::nth(
                1,
                AgentFault::SlowReady {
                    delay: Duration::from_secs(9),
                },
            ),
            FaultRule::nth(
                2,
                AgentFault::SlowReady {
                    delay: Duration::from_secs(30),
                },
            ),
        ],
    )
    .await;
    let mut ws = connect(&agent).await;
    send(
        &mut ws,
        json!({"type": "session.update", "session": pcmu_session()}),
    )
    .await;
    assert_eq!(event(&mut ws).await["type"], "session.updated");
    // 9 s simulated is 450 ms here; a third of it passes with nothing.
    quiet_for(&mut ws, Duration::from_millis(150)).await;
    // Audio before `session.ready` is discarded, and a second update is refused meanwhile.
    say(&mut ws, &speech::silence(100)).await;
    send(
        &mut ws,
        json!({"type": "session.update", "session": pcmu_session()}),
    )
    .await;
    let refused = event(&mut ws).await;
    assert_eq!(refused["code"], "invalid_format", "{refused}");
    let ready = event(&mut ws).await;
    assert_eq!(ready["type"], "session.ready", "{ready}");
    assert_eq!(
        event(&mut ws).await["type"],
        "reply.started",
        "then the greeting"
    );

    // Beyond 10 s the service gives up on the agent.
    let mut ws = connect(&agent).await;
    send(
        &mut ws,
        json!({"type": "session.update", "session": pcmu_session()}),
    )
    .await;
    assert_eq!(event(&mut ws).await["type"], "session.updated");
    let (events, end) = read_to_end(&mut ws).await;
    assert_eq!(types(&events), vec!["session.error"]);
    assert_eq!(events[0]["code"], "agent_timeout");
    assert_eq!(end, End::Frame(Some(1011)));
    let s = agent.sessions();
    assert_eq!(s[0].audio_received, 0);
    assert!(s[0].fault_fired && s[1].fault_fired);
    assert_eq!(s[1].session_id, None);
    token.cancel();
}

#[tokio::test]
async fn every_documented_error_code_is_sent_where_the_reference_shows_it() {
    let mut cases = Vec::new();
    for e in faults::DOCUMENTED_ERRORS {
        if let Some(then) = e.setup {
            cases.push((e.code, ErrorAt::Setup, then));
        }
        if let Some(then) = e.live {
            let at = ErrorAt::Live {
                after: Duration::from_millis(500),
            };
            cases.push((e.code, at, then));
        }
    }
    assert!(cases.len() > 20);
    let rules = cases
        .iter()
        .enumerate()
        .map(|(i, (code, at, _))| FaultRule::nth(i + 1, AgentFault::Error { code, at: *at }))
        .collect();
    let (agent, token) = faulty(ResumeMode::Reject, rules).await;
    for (code, at, then) in &cases {
        let mut ws = connect(&agent).await;
        let what = format!("{code} {at:?}");
        match at {
            ErrorAt::Setup => {
                send(
                    &mut ws,
                    json!({"type": "session.update", "session": without_greeting()}),
                )
                .await
            }
            ErrorAt::Live { .. } => {
                open(&mut ws, without_greeting()).await;
            }
        }
        let err = event(&mut ws).await;
        assert_eq!(err["type"], "session.error", "{what}: {err}");
        assert_eq!(err["code"], *code, "{what}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        match then {
            faults::Then::Close(c) => assert!(
                matches!(recv(&mut ws).await, In::Closed(Some(got)) if got == *c),
                "{what}: expected close {c}"
            ),
            faults::Then::StaysOpen => still_answers(&mut ws).await,
        }
    }
    let s = agent.sessions();
    assert!(s.iter().all(|s| s.fault_fired));
    // Nothing became ready where the error answered the first update.
    for (rec, (_, at, _)) in s.iter().zip(&cases) {
        assert_eq!(rec.session_id.is_some(), *at != ErrorAt::Setup);
    }
    token.cancel();
}

#[tokio::test]
async fn faults_the_real_service_cannot_produce_are_refused() {
    let refused = [
        AgentFault::Error {
            code: "no_such_code",
            at: ErrorAt::Setup,
        },
        AgentFault::Error {
            code: "unauthorized",
            at: ErrorAt::Live {
                after: Duration::ZERO,
            },
        },
        AgentFault::Error {
            code: "immutable_field",
            at: ErrorAt::Setup,
        },
        AgentFault::ErrorThenClose {
            after: Duration::ZERO,
            code: "internal_error",
        },
    ];
    for fault in refused {
        let config = FakeAgentConfig {
            faults: vec![FaultRule::all(fault.clone())],
            ..FakeAgentConfig::default()
        };
        let err = FakeAgent::start(config, CancellationToken::new())
            .await
            .expect_err(&format!("{fault:?}"));
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
    let (agent, token) = fake(ResumeMode::Reject).await;
    assert!(
        agent.inject(1, AgentFault::Silent).is_err(),
        "no session yet"
    );
    let _ws = connect(&agent).await;
    let slow = AgentFault::SlowReady {
        delay: Duration::ZERO,
    };
    assert!(
        agent.inject(1, slow).is_err(),
        "setup faults are not injected"
    );
    token.cancel();
}

#[tokio::test]
async fn a_fault_injected_into_a_live_session_fires_from_then() {
    let (agent, token) = fake(ResumeMode::Reject).await;
    let mut ws = connect(&agent).await;
    open(&mut ws, without_greeting()).await;
    still_answers(&mut ws).await;
    let fault = AgentFault::Error {
        code: "internal_error",
        at: ErrorAt::Live {
            after: Duration::ZERO,
        },
    };
    agent.inject(1, fault.clone()).unwrap();
    expect_error_then_close(&mut ws, "internal_error", 1011).await;
    let s = &agent.sessions()[0];
    assert_eq!(s.fault, Some(fault));
    assert!(s.fault_fired);
    token.cancel();
}

//! One call end to end: the real client (REST, webhooks, Media Stream server, bridge, Voice
//! Agent client) against the Twilio and Voice Agent simulators.

use crate::helpers::{self, TestApp};
use dialer::call::bridge::END_MARK;
use dialer::events::{CallEvent, EndedBy, FinalStatus, Speaker};
use dialer::twilio::{AnsweredBy, signature};
use std::time::Duration;

#[tokio::test]
async fn completed_conversation_has_transcript_and_outcome() {
    let app = TestApp::start().await;
    let (result, events) = app.call(app.request("+12025550100")).await;
    let outcome = result.expect("no campaign-wide error");
    assert_eq!(outcome.status, FinalStatus::Completed, "{outcome:?}");
    assert_eq!(outcome.ended_by, EndedBy::Agent, "{outcome:?}");
    assert!(outcome.error.is_none(), "{outcome:?}");
    assert_eq!(
        outcome.answered_by.as_ref().map(AnsweredBy::as_str),
        Some("human")
    );
    assert!(outcome.duration_secs.is_some_and(|d| d > 0), "{outcome:?}");
    assert!(
        outcome
            .call_sid
            .as_deref()
            .is_some_and(|s| s.starts_with("CA"))
    );
    let agent_first = &outcome.transcript[0];
    assert_eq!(agent_first.speaker, Speaker::Agent);
    assert!(
        agent_first.text.contains("automated"),
        "greeting discloses automation: {agent_first:?}"
    );
    assert!(
        outcome
            .transcript
            .iter()
            .any(|l| l.speaker == Speaker::Callee && l.text.contains("that works for me")),
        "callee's words were recognised from the bridged audio: {:?}",
        outcome.transcript
    );
    // Events tell the story in order.
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            CallEvent::Dialing { .. } => "dialing",
            CallEvent::Created { .. } => "created",
            CallEvent::Connected { .. } => "connected",
            CallEvent::Ended { .. } => "ended",
            _ => "",
        })
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(kinds, vec!["dialing", "created", "connected", "ended"]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Partial { .. })),
        "partials shown live"
    );
}

#[tokio::test]
async fn callee_hears_exactly_the_agents_audio_and_end_call_waits_for_the_mark() {
    let app = TestApp::start().await;
    let (result, _) = app.call(app.request("+12025550100")).await;
    let outcome = result.unwrap();
    assert_eq!(outcome.ended_by, EndedBy::Agent);
    let sessions = app.sim().agent.sessions();
    assert_eq!(sessions.len(), 1);
    let calls = app.sim().twilio.calls();
    let stream = calls[0].stream.as_ref().expect("stream opened");
    assert!(!sessions[0].audio_sent.is_empty());
    assert!(
        stream.audio_received == sessions[0].audio_sent,
        "audio reaching Twilio is bit-exact what the agent sent ({} vs {} bytes)",
        stream.audio_received.len(),
        sessions[0].audio_sent.len()
    );
    assert!(
        sessions[0].audio_received > 0,
        "callee audio reached the agent"
    );
    assert_eq!(stream.marks_received, vec![END_MARK.to_string()]);
    assert_eq!(
        stream.marks_echoed,
        vec![END_MARK.to_string()],
        "the goodbye played before hang-up"
    );
    assert_eq!(
        calls[0].ended_by.as_deref(),
        Some("api"),
        "dialer hung up through the API"
    );
    helpers::eventually("the agent session is ended with session.end", || {
        app.sim().agent.sessions()[0].ended_by_client
    })
    .await;
    assert!(
        stream.rejected.is_empty(),
        "Twilio accepted every message: {:?}",
        stream.rejected
    );
}

#[tokio::test]
async fn busy_and_no_answer() {
    let app = TestApp::start().await;
    let (busy, _) = app.call(app.request("+12025550101")).await;
    let busy = busy.unwrap();
    assert_eq!(
        (busy.status, busy.ended_by),
        (FinalStatus::Busy, EndedBy::Network)
    );
    let mut req = app.request("+12025550102");
    req.ring_timeout = Duration::from_secs(15);
    let (no_answer, _) = app.call(req).await;
    let no_answer = no_answer.unwrap();
    assert_eq!(
        (no_answer.status, no_answer.ended_by),
        (FinalStatus::NoAnswer, EndedBy::Network)
    );
    assert!(no_answer.transcript.is_empty());
    assert!(
        app.sim().agent.sessions().is_empty(),
        "no agent session for unanswered calls"
    );
}

#[tokio::test]
async fn invalid_and_blocked_numbers_are_failed_outcomes_with_twilio_codes() {
    let app = TestApp::start().await;
    for (number, code) in [
        ("+15005550001", "21217"),
        ("+15005550002", "21214"),
        ("+15005550004", "21216"),
    ] {
        let (result, _) = app.call(app.request(number)).await;
        let outcome = result.expect("a per-number failure is an outcome");
        assert_eq!(outcome.status, FinalStatus::Failed, "{number}");
        assert_eq!(
            outcome.error.as_ref().and_then(|e| e.code.as_deref()),
            Some(code),
            "{number}"
        );
        assert!(outcome.call_sid.is_none());
    }
    assert!(app.sim().twilio.calls().is_empty(), "nothing was dialed");
}

#[tokio::test]
async fn bad_twilio_credentials_stop_with_20003() {
    let app =
        TestApp::start_with(|s| s.twilio_auth_token = dialer::secret::Secret::new("wrong")).await;
    let (result, _) = app.call(app.request("+12025550100")).await;
    let err = result.expect_err("bad credentials concern every call");
    assert_eq!(err.code, Some(20003));
    assert!(!err.transient);
    assert!(err.message.contains("TWILIO_AUTH_TOKEN"), "{}", err.message);
}

#[tokio::test]
async fn bad_assemblyai_key_ends_the_call_cleanly_with_the_reason() {
    let app =
        TestApp::start_with(|s| s.assemblyai_api_key = dialer::secret::Secret::new("wrong-key"))
            .await;
    let (result, _) = app.call(app.request("+12025550100")).await;
    let outcome = result.unwrap();
    assert_eq!(outcome.ended_by, EndedBy::Error, "{outcome:?}");
    let error = outcome.error.expect("error recorded");
    assert_eq!(error.code.as_deref(), Some("unauthorized"));
    assert!(
        error.message.contains("ASSEMBLYAI_API_KEY"),
        "{}",
        error.message
    );
    assert_eq!(
        outcome.status,
        FinalStatus::Completed,
        "the callee heard the apology, then Twilio hung up"
    );
    // The call was switched to the apology, which Twilio spoke and then hung up on.
    let calls = app.sim().twilio.calls();
    let twiml = calls[0].twiml.clone().unwrap_or_default();
    assert!(
        twiml.contains("<Say>") && !twiml.contains("<Connect>"),
        "{twiml}"
    );
    assert_eq!(calls[0].ended_by.as_deref(), Some("twiml"));
}

#[tokio::test]
async fn callee_hanging_up_mid_greeting_ends_the_call() {
    let app = TestApp::start().await;
    let (result, _) = app.call(app.request("+12025550104")).await;
    let outcome = result.unwrap();
    assert_eq!(
        (outcome.status, outcome.ended_by),
        (FinalStatus::Completed, EndedBy::Callee),
        "{outcome:?}"
    );
    assert!(outcome.error.is_none());
    helpers::eventually("the agent session is ended when the callee leaves", || {
        app.sim()
            .agent
            .sessions()
            .first()
            .is_some_and(|s| s.ended_by_client)
    })
    .await;
}

#[tokio::test]
async fn barge_in_clears_twilios_buffer() {
    let app = TestApp::start().await;
    let (result, _) = app.call(app.request("+12025550108")).await;
    let outcome = result.unwrap();
    let stream = app.sim().twilio.calls()[0].stream.clone().unwrap();
    assert!(
        stream.clears >= 1,
        "a clear was sent when the callee talked over the agent"
    );
    assert!(
        outcome
            .transcript
            .iter()
            .any(|l| l.speaker == Speaker::Agent && l.interrupted),
        "{:?}",
        outcome.transcript
    );
    assert_eq!(
        outcome.ended_by,
        EndedBy::Agent,
        "the conversation still finished: {outcome:?}"
    );
}

#[tokio::test]
async fn forged_callback_is_refused_and_changes_nothing() {
    let app = TestApp::start().await;
    let public = app.app.urls.base().to_string();
    let req = app.request("+12025550100");
    let call = app.call(req);
    tokio::pin!(call);
    // Wait for the call's TwiML to learn its token, then forge a "completed" callback.
    let token = loop {
        tokio::select! {
            _ = &mut call => panic!("call ended before the forgery was tried"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if let Some(twiml) = app
            .sim()
            .twilio
            .calls()
            .first()
            .and_then(|c| c.twiml.clone())
        {
            let start = twiml.find("value=\"").unwrap() + 7;
            break twiml[start..start + 32].to_string();
        }
    };
    let url = format!("{public}/twilio/status/{token}");
    let form = [
        ("CallSid", "CAforged"),
        ("CallStatus", "completed"),
        ("SequenceNumber", "99"),
    ];
    let client = reqwest::Client::new();
    let unsigned = client.post(&url).form(&form).send().await.unwrap();
    assert_eq!(unsigned.status(), 403);
    let params: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let wrong_key = signature::compute("not-the-token", &url, &params);
    let forged = client
        .post(&url)
        .header("X-Twilio-Signature", wrong_key)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let (result, _) = call.await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome.ended_by,
        EndedBy::Agent,
        "the forged 'completed' did not end the call"
    );
    assert!(outcome.transcript.len() >= 3);
}

/// A Media Stream handshake signed as Twilio signs it, to our server.
async fn signed_media_stream(
    app: &TestApp,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = format!(
        "{}/twilio/media",
        app.app.urls.base().replacen("http://", "ws://", 1)
    );
    let mut req = ws_url.as_str().into_client_request().unwrap();
    let sig = signature::compute(&app.sim().auth_token, &ws_url, &[]);
    req.headers_mut()
        .insert("x-twilio-signature", sig.parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("signed handshake accepted")
        .0
}

#[tokio::test]
async fn forged_or_foreign_media_stream_is_refused() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
    let app = TestApp::start().await;
    let ws_url = format!(
        "{}/twilio/media",
        app.app.urls.base().replacen("http://", "ws://", 1)
    );
    // No signature: refused at the handshake.
    match tokio_tungstenite::connect_async(ws_url.as_str()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!(
            "unsigned handshake must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    // Signed with the wrong key: refused.
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "x-twilio-signature",
        signature::compute("wrong", &ws_url, &[]).parse().unwrap(),
    );
    assert!(
        matches!(tokio_tungstenite::connect_async(req).await, Err(tungstenite::Error::Http(r)) if r.status() == 403)
    );
    // Properly signed but carrying no call's token: accepted, then closed after `start`.
    let mut socket = signed_media_stream(&app).await;
    let start = serde_json::json!({"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{
        "accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],
        "customParameters":{"token":"0123456789abcdef0123456789abcdef"},
        "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}});
    socket
        .send(tungstenite::Message::text(start.to_string()))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("server answers");
    assert!(
        matches!(
            next,
            None | Some(Ok(tungstenite::Message::Close(_))) | Some(Err(_))
        ),
        "{next:?}"
    );
    assert!(app.app.registry.is_empty());
}

#[tokio::test]
async fn operator_cancel_hangs_up_through_the_api() {
    let app = TestApp::start().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.cancel();
    });
    let (result, _) = app
        .call_with_cancel(app.request("+12025550107"), cancel)
        .await;
    let outcome = result.unwrap();
    assert_eq!(outcome.ended_by, EndedBy::Operator, "{outcome:?}");
    assert_eq!(app.sim().twilio.calls()[0].ended_by.as_deref(), Some("api"));
}

#[tokio::test]
async fn an_oversized_media_stream_frame_closes_the_socket_at_once() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite;
    let app = TestApp::start().await;
    let mut socket = signed_media_stream(&app).await;
    // Twilio's frames are a few hundred bytes; this is two megabytes.
    let huge = "x".repeat(2 * 1024 * 1024);
    let _ = socket.send(tungstenite::Message::text(huge)).await;
    // Well before the 10 s the server gives a stream to send `start`.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(tungstenite::Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept reading an oversized frame");
}

//! One fake Voice Agent connection: the session state machine of reference Appendix B. It reads
//! client frames, validates them, runs the brain's replies (paced `reply.audio` on a deadline
//! schedule), turn detection and barge-in, tool-call bookkeeping, the close sequences, and the
//! connection's fault, if it has one (`faults`). A single task owns all of it, so ordering on
//! the wire is exactly the order of decisions here.

use super::brain::{self, Brain, END_CALL, Plan};
use super::ears::{Ears, Heard};
use super::faults::{AGENT_TIMEOUT, AgentFault, ErrorAt, Then, documented_error};
use super::session::{self, Encoding, Settings, Update};
use super::{ResumeMode, SessionRecord, Shared, lock};
use crate::sim::speech;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;
type Stream = SplitStream<WebSocketStream<TcpStream>>;

/// Silence at the start of every reply (live: 0.2–2 s).
const LEAD_MS: usize = 200;
/// Length of a silent tool pre-amble.
const PREAMBLE_MS: usize = 400;
/// The "model" thinking before a reply to a user turn or a tool result.
const THINK: Duration = Duration::from_millis(400);
/// Callee silence after the agent finished speaking before it checks in.
const SILENCE_PROMPT_MS: usize = 6_000;
/// How long a dropped session can be resumed.
const GRACE: Duration = Duration::from_secs(30);
/// How long to wait for the client's close frame after ours.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The connection is over (we closed it, or the peer is gone).
#[derive(Debug)]
struct Gone;

type Step = Result<(), Gone>;

/// A session kept after an unclean disconnect, for `ResumeMode::Accept`.
#[derive(Debug)]
pub(super) struct Held {
    settings: Settings,
    brain: Brain,
    calls: HashMap<String, CallState>,
    until: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Waiting for its `tool.result`.
    Pending,
    /// Answered, or no longer wanted (its reply was interrupted, the user took a new turn, it
    /// timed out, or it is `end_call`, which the client is expected not to answer): a result
    /// is accepted silently.
    Settled,
}

/// A reply whose tool results are outstanding.
#[derive(Debug)]
struct ToolWait {
    pending: Vec<String>,
    any_error: bool,
    then: Option<Plan>,
    on_error: Option<Plan>,
    deadline: Instant,
}

/// A reply being spoken.
#[derive(Debug)]
struct Reply {
    id: String,
    item_id: String,
    plan: Plan,
    audio: Vec<u8>,
    /// Each word and the audio offset where it has been fully sent.
    words: Vec<(String, usize)>,
    sent: usize,
    chunk: usize,
    chunk_time: Duration,
    chunks_sent: u32,
    start: Instant,
}

impl Reply {
    fn next_due(&self, scale: crate::sim::TimeScale) -> Instant {
        self.start + scale.scale(self.chunk_time * self.chunks_sent)
    }

    /// The words whose audio has been sent completely.
    fn heard(&self) -> String {
        self.words
            .iter()
            .filter(|(_, end)| *end <= self.sent)
            .map(|(w, _)| w.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

struct Conn {
    shared: Arc<Shared>,
    record: Arc<Mutex<SessionRecord>>,
    sink: Sink,
    authorized: bool,
    first_frame_seen: bool,
    /// We sent a close frame.
    closed_by_us: bool,
    opened: Instant,
    settings: Option<Settings>,
    brain: Brain,
    ears: Ears,
    user_item: String,
    reply: Option<Reply>,
    queue: VecDeque<Plan>,
    scheduled: Option<(Instant, Plan)>,
    waits: Vec<ToolWait>,
    calls: HashMap<String, CallState>,
    /// Input bytes after `session.ready`.
    audio_in: usize,
    /// Callee silence (bytes) while the agent waits for an answer.
    idle_silence: usize,
    has_spoken: bool,
    /// The fault this connection was given, if any.
    fault: Option<AgentFault>,
    /// When a timed fault fires.
    fault_at: Option<Instant>,
    /// A slow `session.ready`: when it is due, and the session it announces.
    pending_ready: Option<(Instant, Settings)>,
    /// A `Silent` fault took effect: nothing is sent any more.
    silenced: bool,
}

pub(super) async fn run(
    ws: WebSocketStream<TcpStream>,
    shared: Arc<Shared>,
    record: Arc<Mutex<SessionRecord>>,
    authorized: bool,
    fault: Option<AgentFault>,
    mut injected: mpsc::UnboundedReceiver<AgentFault>,
    shutdown: CancellationToken,
) {
    if matches!(fault, Some(AgentFault::Drop { .. })) {
        // Closing a socket with a zero linger resets it: the peer gets no FIN, let alone a
        // close frame. (An injected drop cannot reach the socket any more once it is split, so
        // it only closes without a close frame.)
        let _ = ws.get_ref().set_zero_linger();
    }
    let (sink, mut stream) = ws.split();
    let mut c = Conn {
        shared,
        record,
        sink,
        authorized,
        first_frame_seen: false,
        closed_by_us: false,
        opened: Instant::now(),
        settings: None,
        brain: Brain::new(),
        ears: Ears::new(Encoding::Pcm),
        user_item: new_id("msg_"),
        reply: None,
        queue: VecDeque::new(),
        scheduled: None,
        waits: Vec::new(),
        calls: HashMap::new(),
        audio_in: 0,
        idle_silence: 0,
        has_spoken: false,
        fault,
        fault_at: None,
        pending_ready: None,
        silenced: false,
    };
    loop {
        let deadline = c.next_deadline();
        let step = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = c.close(CloseCode::Away, "server shutting down").await;
                Err(Gone)
            }
            Some(fault) = injected.recv() => {
                c.inject(fault);
                Ok(())
            }
            msg = stream.next() => match msg {
                Some(Ok(m)) => c.on_message(m).await,
                // The peer is gone (or broke the protocol).
                Some(Err(_)) | None => Err(Gone),
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Ok(()),
        };
        let step = match step {
            Ok(()) => c.advance().await,
            Err(g) => Err(g),
        };
        if step.is_err() {
            break;
        }
    }
    if c.closed_by_us {
        drain(&mut stream).await;
    } else {
        c.hold_for_resume();
    }
}

/// Read until the client's close frame (which completes the closing handshake) or a timeout.
async fn drain(stream: &mut Stream) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Conn {
    fn scale(&self) -> crate::sim::TimeScale {
        self.shared.config.time_scale
    }

    fn rec(&self) -> std::sync::MutexGuard<'_, SessionRecord> {
        lock(&self.record)
    }

    // ---- sending ----

    async fn send(&mut self, mut event: Value) -> Step {
        if self.silenced {
            return Ok(());
        }
        if let Some(obj) = event.as_object_mut() {
            obj.insert("timestamp".into(), json!(now_secs()));
        }
        let ty = event["type"].as_str().unwrap_or_default().to_string();
        self.sink
            .send(Message::text(event.to_string()))
            .await
            .map_err(|_| Gone)?;
        let mut rec = self.rec();
        match ty.as_str() {
            "session.error" => {
                let code = event["code"].as_str().unwrap_or_default().to_string();
                rec.errors_sent.push(code);
            }
            "transcript.agent" => {
                let text = event["text"].as_str().unwrap_or_default().to_string();
                let interrupted = event["interrupted"].as_bool().unwrap_or(false);
                rec.agent_transcripts.push((text, interrupted));
            }
            "transcript.user" => {
                let text = event["text"].as_str().unwrap_or_default().to_string();
                rec.user_transcripts.push(text);
            }
            "tool.call" => {
                let name = event["name"].as_str().unwrap_or_default().to_string();
                rec.tool_calls.push((name, event["arguments"].clone()));
            }
            _ => {}
        }
        rec.events_sent.push(ty);
        Ok(())
    }

    async fn error(&mut self, code: &str, message: &str, param: Option<&str>) -> Step {
        let session_id = self.settings.as_ref().map(|s| s.id.clone());
        self.send(json!({
            "type": "session.error",
            "code": code,
            "message": message,
            "session_id": session_id,
            "param": param,
        }))
        .await
    }

    /// `session.error` then close 1008.
    async fn fatal(&mut self, code: &str, message: &str, param: Option<&str>) -> Step {
        self.error(code, message, param).await?;
        self.close(CloseCode::Policy, message).await
    }

    async fn invalid_format(&mut self, message: &str) -> Step {
        self.error("invalid_format", message, None).await
    }

    /// Send a close frame; the connection is over either way.
    async fn close(&mut self, code: CloseCode, reason: &str) -> Step {
        self.rec().close_code = Some(u16::from(code));
        self.closed_by_us = true;
        // Close reasons are limited to 123 bytes, and may quote client input (a voice name).
        let mut cut = reason.len().min(120);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let reason = reason[..cut].to_string();
        let _ = self
            .sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
        Err(Gone)
    }

    // ---- receiving ----

    async fn on_message(&mut self, msg: Message) -> Step {
        if self.silenced {
            self.on_message_silenced(&msg);
            return Ok(());
        }
        let text = match msg {
            Message::Text(t) => Some(t),
            Message::Binary(_) => None,
            // Pings are answered by tungstenite; a close is answered on the next read.
            _ => return Ok(()),
        };
        let first = !self.first_frame_seen;
        self.first_frame_seen = true;
        let parsed: Option<Value> = text
            .as_ref()
            .and_then(|t| serde_json::from_str::<Value>(t.as_str()).ok());
        if let Some(v) = &parsed
            && v["type"] == "session.update"
        {
            let mut rec = self.rec();
            if rec.first_update.is_none() {
                rec.first_update = v.get("session").cloned();
            }
        }
        if first && !self.authorized {
            return self
                .fatal("unauthorized", "Invalid or missing API key or token", None)
                .await;
        }
        let Some(v) = parsed.filter(Value::is_object) else {
            return self.invalid_format("Invalid message format").await;
        };
        let Some(ty) = v["type"].as_str().map(str::to_string) else {
            return self.invalid_format("Invalid message format").await;
        };
        let ready = self.settings.is_some();
        match ty.as_str() {
            "session.update" => self.on_session_update(&v).await,
            "session.resume" if !ready && first => self.on_resume(&v).await,
            "session.resume" => {
                self.invalid_format("session.resume must be the first message")
                    .await
            }
            "input.audio" => self.on_audio(&v).await,
            "session.end" => self.on_end().await,
            "conversation.message" => {
                let role_ok = matches!(v["role"].as_str(), Some("user" | "system"));
                if role_ok && v["content"].is_string() {
                    // Accepted and, as live, without effect or answer.
                    Ok(())
                } else {
                    self.invalid_format(
                        "conversation.message needs role (user|system) and content (string)",
                    )
                    .await
                }
            }
            "tool.result" | "reply.create" | "reply.cancel" if !ready => {
                self.invalid_format("No session: send session.update first")
                    .await
            }
            "tool.result" => self.on_tool_result(v).await,
            "reply.create" => self.on_reply_create(&v).await,
            "reply.cancel" => self.on_reply_cancel(&v).await,
            _ => self.invalid_format("Invalid message format").await,
        }
    }

    async fn on_session_update(&mut self, v: &Value) -> Step {
        if self.pending_ready.is_some() {
            // What the real service does here is unknown (reference §11.19); refusing it
            // keeps a client that relies on it from passing.
            return self
                .invalid_format("session.update while the session is being set up")
                .await;
        }
        let Some(session) = v.get("session") else {
            return self
                .error("invalid_format", "Field required: session", Some("session"))
                .await;
        };
        let up = match session::parse_update(session) {
            Ok(up) => up,
            Err(r) => return self.error(r.code, &r.message, r.param.as_deref()).await,
        };
        if self.settings.is_none() {
            self.first_update(&up).await
        } else {
            self.later_update(&up).await
        }
    }

    async fn first_update(&mut self, up: &Update) -> Step {
        if up.agent_id.is_some() {
            if up.has_inline_fields() {
                return self
                    .fatal(
                        "agent_id_not_first",
                        "agent_id must be the only field of the first session.update",
                        Some("agent_id"),
                    )
                    .await;
            }
            // The fake stores no agents.
            return self
                .fatal("agent_not_found", "Agent not found", Some("agent_id"))
                .await;
        }
        if up.llm {
            return self
                .fatal(
                    "invalid_config",
                    "Inline llm configuration is not allowed; configure it on a stored agent",
                    Some("llm"),
                )
                .await;
        }
        if let Some(voice) = &up.voice
            && !self.shared.config.voices.iter().any(|v| v == voice)
        {
            let message = format!("Invalid voice: {voice}");
            return self
                .fatal("invalid_value", &message, Some("output.voice"))
                .await;
        }
        if let Some(AgentFault::Error {
            code,
            at: ErrorAt::Setup,
        }) = self.fault
        {
            let then = documented_error(code)
                .and_then(|e| e.setup)
                .unwrap_or(Then::StaysOpen);
            return self.injected_error(code, then).await;
        }
        let settings = Settings::from_first(new_id("sess_"), up);
        self.ready(settings, true).await
    }

    /// `session.updated` (for a fresh session) and `session.ready`; then the greeting.
    async fn ready(&mut self, settings: Settings, fresh: bool) -> Step {
        if fresh && let Some(AgentFault::SlowReady { delay }) = self.fault {
            let config = settings.config();
            self.send(json!({"type": "session.updated", "config": config}))
                .await?;
            self.rec().fault_fired = true;
            let wait = self.scale().scale(delay.min(AGENT_TIMEOUT));
            self.pending_ready = Some((Instant::now() + wait, settings));
            return Ok(());
        }
        self.announce(settings, fresh, fresh).await
    }

    /// `session.updated` when asked, `session.ready`, then the greeting (for a fresh
    /// session); timed faults count from here.
    async fn announce(&mut self, settings: Settings, fresh: bool, updated: bool) -> Step {
        let config = settings.config();
        let id = settings.id.clone();
        let greeting = settings.greeting.clone().filter(|g| !g.trim().is_empty());
        self.ears = Ears::new(settings.input_encoding());
        self.settings = Some(settings);
        self.rec().session_id = Some(id.clone());
        if updated {
            self.send(json!({"type": "session.updated", "config": config}))
                .await?;
        }
        let expires_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        let resume_token = format!(
            "eyJ{}",
            URL_SAFE_NO_PAD.encode(json!({"sid": id, "n": new_id("")}).to_string())
        );
        self.send(json!({
            "type": "session.ready",
            "session_id": id,
            "config": config,
            "expires_at": expires_at,
            "resume_token": resume_token,
        }))
        .await?;
        self.arm_fault();
        match greeting {
            Some(g) if fresh => self.start_reply(Plan::say(g)).await?,
            _ => self.maybe_silence(),
        }
        Ok(())
    }

    // ---- faults ----

    /// Start the clock of a timed fault; a silent one waits for the greeting to finish.
    fn arm_fault(&mut self) {
        let after = self.fault.as_ref().and_then(AgentFault::live_after);
        self.fault_at = after.map(|a| Instant::now() + self.scale().scale(a));
    }

    fn inject(&mut self, fault: AgentFault) {
        {
            let mut rec = self.rec();
            rec.fault = Some(fault.clone());
            rec.fault_fired = false;
        }
        self.fault = Some(fault);
        if self.settings.is_some() {
            self.arm_fault();
            self.maybe_silence();
        }
    }

    /// A `Silent` fault takes effect once nothing is being said.
    fn maybe_silence(&mut self) {
        if self.silenced
            || self.fault != Some(AgentFault::Silent)
            || self.settings.is_none()
            || self.reply.is_some()
        {
            return;
        }
        self.silenced = true;
        self.rec().fault_fired = true;
        self.queue.clear();
        self.scheduled = None;
        self.waits.clear();
    }

    /// A silenced session still reads (a hung worker behind a live socket): audio is counted,
    /// nothing is answered.
    fn on_message_silenced(&mut self, msg: &Message) {
        let Message::Text(text) = msg else {
            return;
        };
        if let Ok(v) = serde_json::from_str::<Value>(text.as_str())
            && v["type"] == "input.audio"
            && let Some(Ok(audio)) = v["audio"].as_str().map(|a| STANDARD.decode(a))
        {
            self.audio_in += audio.len();
            self.rec().audio_received += audio.len();
        }
    }

    /// A documented `session.error`, and what the reference says follows it.
    async fn injected_error(&mut self, code: &'static str, then: Then) -> Step {
        self.rec().fault_fired = true;
        let message = documented_error(code).map_or("Error", |e| e.message);
        self.error(code, message, None).await?;
        match then {
            Then::StaysOpen => Ok(()),
            Then::Close(close) => self.close(CloseCode::from(close), message).await,
        }
    }

    async fn fire_fault(&mut self) -> Step {
        self.fault_at = None;
        match self.fault {
            Some(AgentFault::Drop { .. }) => {
                self.rec().fault_fired = true;
                // No close frame: `closed_by_us` stays false, and the socket is dropped.
                Err(Gone)
            }
            Some(AgentFault::Close1011 { .. }) => {
                self.rec().fault_fired = true;
                self.close(CloseCode::Error, "Internal server error").await
            }
            Some(AgentFault::ErrorThenClose { code, .. }) => {
                self.injected_error(code, Then::StaysOpen).await?;
                self.close(CloseCode::Normal, "").await
            }
            Some(AgentFault::Error {
                code,
                at: ErrorAt::Live { .. },
            }) => {
                let then = documented_error(code)
                    .and_then(|e| e.live)
                    .unwrap_or(Then::StaysOpen);
                self.injected_error(code, then).await
            }
            _ => Ok(()),
        }
    }

    /// The slow `session.ready` is due, unless the service gave up on the agent first.
    async fn finish_slow_ready(&mut self) -> Step {
        let Some((_, settings)) = self.pending_ready.take() else {
            return Ok(());
        };
        match self.fault {
            Some(AgentFault::SlowReady { delay }) if delay >= AGENT_TIMEOUT => {
                self.injected_error("agent_timeout", Then::Close(1011))
                    .await
            }
            _ => self.announce(settings, true, false).await,
        }
    }

    async fn later_update(&mut self, up: &Update) -> Step {
        if up.agent_id.is_some() {
            return self
                .error(
                    "agent_id_not_first",
                    "agent_id is only allowed, alone, in the first session.update",
                    Some("agent_id"),
                )
                .await;
        }
        if up.llm {
            return self
                .error(
                    "invalid_config",
                    "Inline llm configuration is not allowed",
                    Some("llm"),
                )
                .await;
        }
        let immutable: Vec<&str> = [
            (up.greeting.is_some(), "greeting"),
            (up.voice.is_some(), "output.voice"),
            (up.output_format.is_some(), "output.format"),
            (up.pre_connect_requests.is_some(), "pre_connect_requests"),
        ]
        .into_iter()
        .filter_map(|(present, name)| present.then_some(name))
        .collect();
        for param in &immutable {
            let message = format!("{param} cannot be changed after the session is established");
            self.error("immutable_field", &message, Some(param)).await?;
        }
        let mutable = up.system_prompt.is_some()
            || up.tools.is_some()
            || !up.input.is_empty()
            || up.input_format.is_some()
            || up.volume.is_some()
            || up.output_type.is_some()
            || up.webhook.is_some();
        if !mutable && !immutable.is_empty() {
            return Ok(());
        }
        let Some(settings) = self.settings.as_mut() else {
            return Ok(());
        };
        settings.apply_mutable(up);
        let config = settings.config();
        self.send(json!({"type": "session.updated", "config": config}))
            .await
    }

    async fn on_resume(&mut self, v: &Value) -> Step {
        let Some(id) = v["session_id"].as_str().map(str::to_string) else {
            return self
                .error(
                    "invalid_format",
                    "Field required: session_id",
                    Some("session_id"),
                )
                .await;
        };
        let held = match self.shared.config.resume {
            ResumeMode::Reject => None,
            ResumeMode::Accept => {
                let mut held = lock(&self.shared.held);
                let now = Instant::now();
                held.retain(|_, h| h.until > now);
                held.remove(&id)
            }
        };
        let Some(held) = held else {
            return self
                .fatal(
                    "session_not_found",
                    "Session not found or grace window has expired",
                    None,
                )
                .await;
        };
        self.brain = held.brain;
        self.calls = held.calls;
        self.has_spoken = true;
        self.ready(held.settings, false).await
    }

    async fn on_audio(&mut self, v: &Value) -> Step {
        let Some(settings) = &self.settings else {
            // Audio before session.ready is discarded (reference §1.4).
            return Ok(());
        };
        let encoding = settings.input_encoding();
        let Some(b64) = v["audio"].as_str() else {
            return self
                .error(
                    "invalid_format",
                    "input.audio needs audio (base64 string)",
                    Some("audio"),
                )
                .await;
        };
        let Ok(audio) = STANDARD.decode(b64) else {
            return self
                .error("invalid_audio", "Audio is not valid base64", Some("audio"))
                .await;
        };
        if encoding == Encoding::Pcm && audio.len() % 2 != 0 {
            return self
                .error(
                    "invalid_audio",
                    "PCM16 audio must have an even number of bytes",
                    Some("audio"),
                )
                .await;
        }
        self.audio_in += audio.len();
        self.rec().audio_received += audio.len();
        self.ears.push(&audio);
        self.listen().await
    }

    /// Run turn detection over the buffered input, frame by frame.
    async fn listen(&mut self) -> Step {
        loop {
            let Some(settings) = &self.settings else {
                return Ok(());
            };
            let turn = settings.turn();
            let bytes_per_ms = settings.input_encoding().bytes_per_ms();
            let Some(frame) = self.ears.next_frame(&turn) else {
                return Ok(());
            };
            for heard in frame.events {
                self.on_heard(heard).await?;
            }
            if self.reply.is_some()
                && self.ears.in_turn()
                && turn.interrupt_response
                && self.ears.turn_ms() >= turn.interruption_delay_ms
            {
                self.end_reply_early("interrupted").await?;
            }
            if self.idle() && !frame.speech {
                self.idle_silence += frame.bytes;
                if self.idle_silence >= SILENCE_PROMPT_MS * bytes_per_ms {
                    self.idle_silence = 0;
                    let tools = self.tools();
                    if let Some(plan) = self.brain.silence(&tools) {
                        self.start_reply(plan).await?;
                    }
                }
            } else {
                self.idle_silence = 0;
            }
        }
    }

    /// Waiting for the callee to answer: nothing said, planned, or outstanding.
    fn idle(&self) -> bool {
        self.settings.is_some()
            && self.has_spoken
            && self.reply.is_none()
            && self.scheduled.is_none()
            && self.queue.is_empty()
            && self.waits.is_empty()
            && !self.ears.in_turn()
            && !self.brain.is_ended()
    }

    fn tools(&self) -> Vec<Value> {
        self.settings
            .as_ref()
            .map(|s| s.tools.clone())
            .unwrap_or_default()
    }

    async fn on_heard(&mut self, heard: Heard) -> Step {
        match heard {
            Heard::SpeechStarted => {
                self.user_item = new_id("msg_");
                // A new turn: the planned reply and outstanding tool follow-ups are moot.
                self.scheduled = None;
                for wait in self.waits.drain(..) {
                    for id in wait.pending {
                        self.calls.insert(id, CallState::Settled);
                    }
                }
                self.send(json!({"type": "input.speech.started"})).await
            }
            Heard::Partial(text) => {
                let item = self.user_item.clone();
                self.send(json!({"type": "transcript.user.delta", "item_id": item, "text": text}))
                    .await
            }
            Heard::SpeechStopped(text) => {
                let item = self.user_item.clone();
                self.send(json!({"type": "input.speech.stopped"})).await?;
                self.send(json!({"type": "transcript.user", "item_id": item, "text": text}))
                    .await?;
                let speaking = self.reply.is_some();
                if speaking && brain::is_backchannel(&text) {
                    return Ok(());
                }
                let tools = self.tools();
                let Some(plan) = self.brain.hear(&text, &tools) else {
                    return Ok(());
                };
                if speaking {
                    self.queue.push_back(plan);
                } else {
                    self.schedule(plan);
                }
                Ok(())
            }
        }
    }

    async fn on_tool_result(&mut self, v: Value) -> Step {
        self.rec().tool_results.push(v.clone());
        let Some(call_id) = v["call_id"].as_str().map(str::to_string) else {
            return self
                .error(
                    "invalid_format",
                    "tool.result needs call_id (string)",
                    Some("call_id"),
                )
                .await;
        };
        if !v["result"].is_string() {
            return self
                .error(
                    "invalid_format",
                    "tool.result result must be a string (JSON-encode objects)",
                    Some("result"),
                )
                .await;
        }
        let is_error = match v.get("is_error") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return self
                    .error(
                        "invalid_format",
                        "is_error must be a boolean",
                        Some("is_error"),
                    )
                    .await;
            }
        };
        match self.calls.get(&call_id) {
            None => {
                return self
                    .error("invalid_value", "Unknown call_id", Some("call_id"))
                    .await;
            }
            Some(CallState::Settled) => return Ok(()),
            Some(CallState::Pending) => {}
        }
        self.calls.insert(call_id.clone(), CallState::Settled);
        let Some(i) = self.waits.iter().position(|w| w.pending.contains(&call_id)) else {
            return Ok(());
        };
        let wait = &mut self.waits[i];
        wait.pending.retain(|id| *id != call_id);
        wait.any_error |= is_error;
        // The client is handing the call to a person: the next words are the hand-off line,
        // not the goodbye the plan had.
        if !is_error
            && serde_json::from_str::<Value>(v["result"].as_str().unwrap_or_default())
                .is_ok_and(|r| r["transferring"] == true)
        {
            wait.then = Some(Plan::say(super::brain::HAND_OFF_LINE));
        }
        if wait.pending.is_empty() {
            let wait = self.waits.remove(i);
            let next = if wait.any_error {
                wait.on_error.or(wait.then)
            } else {
                wait.then
            };
            if let Some(plan) = next {
                self.schedule(plan);
            }
        }
        Ok(())
    }

    async fn on_reply_create(&mut self, v: &Value) -> Step {
        let instructions = match v.get("instructions") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return self
                    .error(
                        "invalid_format",
                        "instructions must be a string",
                        Some("instructions"),
                    )
                    .await;
            }
        };
        self.rec()
            .reply_creates
            .push(instructions.clone().unwrap_or_default());
        let tools = self.tools();
        let plan = self.brain.reply_create(instructions.as_deref(), &tools);
        if self.reply.is_some() {
            self.queue.push_back(plan);
            Ok(())
        } else {
            self.start_reply(plan).await
        }
    }

    async fn on_reply_cancel(&mut self, v: &Value) -> Step {
        let matches = match (v.get("reply_id").and_then(Value::as_str), &self.reply) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(id), Some(r)) => r.id == id,
        };
        if matches {
            self.end_reply_early("cancelled").await?;
        }
        Ok(())
    }

    async fn on_end(&mut self) -> Step {
        self.rec().ended_by_client = true;
        let scale = self.scale().0;
        let wall = self.opened.elapsed().as_secs_f64();
        // Report simulated time, like every other duration the fake deals in.
        let duration = if scale > 0.0 { wall / scale } else { wall };
        let audio = self.settings.as_ref().and_then(|s| {
            (self.audio_in > 0)
                .then(|| self.audio_in as f64 / s.input_encoding().bytes_per_ms() as f64 / 1000.0)
        });
        self.send(json!({
            "type": "session.ended",
            "session_duration_seconds": duration,
            "audio_duration_seconds": audio,
        }))
        .await?;
        self.close(CloseCode::Normal, "session ended").await
    }

    // ---- replies ----

    fn schedule(&mut self, plan: Plan) {
        self.scheduled = Some((Instant::now() + self.scale().scale(THINK), plan));
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.silenced {
            return None;
        }
        let scale = self.scale();
        let reply = self.reply.as_ref().map(|r| r.next_due(scale));
        let scheduled = self.scheduled.as_ref().map(|(at, _)| *at);
        let waits = self.waits.iter().map(|w| w.deadline).min();
        let ready = self.pending_ready.as_ref().map(|(at, _)| *at);
        [reply, scheduled, waits, self.fault_at, ready]
            .into_iter()
            .flatten()
            .min()
    }

    /// Do whatever is due: a fault, a slow `session.ready`, audio chunks, a planned reply, tool
    /// timeouts, queued replies.
    async fn advance(&mut self) -> Step {
        if self.silenced {
            return Ok(());
        }
        let now = Instant::now();
        if self.fault_at.is_some_and(|at| at <= now) {
            self.fire_fault().await?;
        }
        if self
            .pending_ready
            .as_ref()
            .is_some_and(|(at, _)| *at <= now)
        {
            self.finish_slow_ready().await?;
        }
        self.pump_audio(now).await?;
        let timed_out: Vec<ToolWait> = {
            let (late, waiting) = self.waits.drain(..).partition(|w| w.deadline <= now);
            self.waits = waiting;
            late
        };
        for wait in timed_out {
            for id in &wait.pending {
                self.calls.insert(id.clone(), CallState::Settled);
            }
            if let Some(mut plan) = wait.then {
                plan.speech = Some(format!(
                    "Sorry, that took too long. {}",
                    plan.speech.unwrap_or_default()
                ));
                self.schedule(plan);
            }
        }
        if self.scheduled.as_ref().is_some_and(|(at, _)| *at <= now)
            && let Some((_, plan)) = self.scheduled.take()
        {
            self.queue.push_back(plan);
        }
        if self.reply.is_none()
            && let Some(plan) = self.queue.pop_front()
        {
            self.start_reply(plan).await?;
        }
        Ok(())
    }

    async fn start_reply(&mut self, plan: Plan) -> Step {
        let Some(settings) = &self.settings else {
            return Ok(());
        };
        let encoding = settings.output_encoding();
        let muted = settings.muted();
        let bpm = encoding.bytes_per_ms();
        let silence_byte = match encoding {
            Encoding::Pcmu => speech::SILENCE,
            Encoding::Pcma => 0xD5,
            Encoding::Pcm => 0,
        };
        let mut audio = vec![silence_byte; LEAD_MS * bpm];
        let mut words = Vec::new();
        match &plan.speech {
            Some(text) => {
                let spoken = speech::encode(text);
                // Only μ-law carries simulated speech; other encodings get silence of the
                // same duration.
                let factor = bpm / speech::BYTES_PER_MS;
                if encoding == Encoding::Pcmu && !muted {
                    audio.extend_from_slice(&spoken);
                } else {
                    audio.resize(audio.len() + spoken.len() * factor, silence_byte);
                }
                let char_bytes = speech::MS_PER_CHAR * speech::BYTES_PER_MS;
                let mut offset = 0;
                for word in text.split(' ') {
                    let end = offset + word.len();
                    if !word.is_empty() {
                        // +1: the utterance's start marker.
                        let end_byte = LEAD_MS * bpm + (1 + end * char_bytes) * factor;
                        words.push((word.to_string(), end_byte, offset, end));
                    }
                    offset = end + 1;
                }
            }
            None => audio.resize(PREAMBLE_MS * bpm, silence_byte),
        }
        let chunk = if encoding == Encoding::Pcm { 480 } else { 300 };
        let reply = Reply {
            id: new_id("resp_"),
            item_id: new_id("msg_"),
            audio,
            words: words.iter().map(|(w, e, _, _)| (w.clone(), *e)).collect(),
            sent: 0,
            chunk,
            chunk_time: Duration::from_secs_f64(chunk as f64 / bpm as f64 / 1000.0),
            chunks_sent: 0,
            start: Instant::now(),
            plan,
        };
        let (id, item) = (reply.id.clone(), reply.item_id.clone());
        self.reply = Some(reply);
        self.send(json!({"type": "reply.started", "reply_id": id, "item_id": item}))
            .await?;
        let count = words.len();
        for (i, (word, _, start, end)) in words.into_iter().enumerate() {
            let delta = if i + 1 < count {
                format!("{word} ")
            } else {
                word
            };
            self.send(json!({
                "type": "transcript.agent.delta",
                "reply_id": id,
                "item_id": item,
                "delta": delta,
                "start_ms": start * speech::MS_PER_CHAR,
                "end_ms": end * speech::MS_PER_CHAR,
            }))
            .await?;
        }
        self.pump_audio(Instant::now()).await
    }

    /// Send every chunk that is due by `now`; finish the reply after its last chunk.
    async fn pump_audio(&mut self, now: Instant) -> Step {
        let scale = self.scale();
        loop {
            let Some(r) = &mut self.reply else {
                return Ok(());
            };
            if r.sent >= r.audio.len() {
                return self.finish_reply().await;
            }
            if r.next_due(scale) > now {
                return Ok(());
            }
            let end = (r.sent + r.chunk).min(r.audio.len());
            let data = r.audio[r.sent..end].to_vec();
            r.sent = end;
            r.chunks_sent += 1;
            let id = r.id.clone();
            self.send(
                json!({"type": "reply.audio", "reply_id": id, "data": STANDARD.encode(&data)}),
            )
            .await?;
            self.rec().audio_sent.extend_from_slice(&data);
        }
    }

    /// All audio sent: transcript, tool calls, `reply.done`, then what the plan says next.
    async fn finish_reply(&mut self) -> Step {
        let Some(r) = self.reply.take() else {
            return Ok(());
        };
        self.has_spoken = true;
        self.idle_silence = 0;
        if let Some(text) = &r.plan.speech {
            self.send(json!({
                "type": "transcript.agent",
                "reply_id": r.id,
                "item_id": r.item_id,
                "text": text,
                "interrupted": false,
            }))
            .await?;
        }
        let mut pending = Vec::new();
        let mut timeout: f64 = 0.0;
        for (name, arguments) in &r.plan.calls {
            let call_id = format!("chatcmpl-tool-{:016x}", rand::random::<u64>());
            self.send(json!({
                "type": "tool.call",
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
            }))
            .await?;
            if name == END_CALL {
                self.calls.insert(call_id, CallState::Settled);
            } else {
                if let Some(s) = &self.settings {
                    timeout = timeout.max(s.tool_timeout_secs(name));
                }
                self.calls.insert(call_id.clone(), CallState::Pending);
                pending.push(call_id);
            }
        }
        if !r.plan.calls.is_empty() {
            self.brain.calls_sent();
        }
        self.send(json!({"type": "reply.done", "reply_id": r.id, "status": "completed"}))
            .await?;
        self.maybe_silence();
        if r.plan.ends {
            self.brain.end();
        }
        let then = r.plan.then.map(|p| *p);
        if pending.is_empty() {
            if let Some(plan) = then {
                self.schedule(plan);
            }
        } else {
            let deadline = Instant::now() + self.scale().scale(Duration::from_secs_f64(timeout));
            self.waits.push(ToolWait {
                pending,
                any_error: false,
                then,
                on_error: r.plan.on_error.map(|p| *p),
                deadline,
            });
        }
        Ok(())
    }

    /// Barge-in (`interrupted`) or `reply.cancel` (`cancelled`): stop the audio now; the
    /// reply's tool calls and follow-up are dropped.
    async fn end_reply_early(&mut self, status: &str) -> Step {
        let Some(r) = self.reply.take() else {
            return Ok(());
        };
        self.has_spoken = true;
        if r.plan.speech.is_some() {
            self.send(json!({
                "type": "transcript.agent",
                "reply_id": r.id,
                "item_id": r.item_id,
                "text": r.heard(),
                "interrupted": true,
            }))
            .await?;
        }
        self.send(json!({"type": "reply.done", "reply_id": r.id, "status": status}))
            .await?;
        self.maybe_silence();
        Ok(())
    }

    fn hold_for_resume(&mut self) {
        if self.shared.config.resume != ResumeMode::Accept || self.rec().ended_by_client {
            return;
        }
        let Some(settings) = self.settings.take() else {
            return;
        };
        let held = Held {
            until: Instant::now() + self.scale().scale(GRACE),
            settings,
            brain: std::mem::take(&mut self.brain),
            calls: std::mem::take(&mut self.calls),
        };
        let mut map = lock(&self.shared.held);
        let now = Instant::now();
        map.retain(|_, h| h.until > now);
        map.insert(held.settings.id.clone(), held);
    }
}

//! The live audio of one answered call, from answer to hang-up: a 20 ms clock (deadline-based,
//! time-scaled, so it does not drift) that each frame plays buffered server audio to the
//! callee, lets the callee speak, and — while a `<Connect><Stream>` is open — sends the frame
//! as a `media` message. It owns the media stream session: the signed handshake, `connected`
//! and `start`, echoing marks as playback reaches them, `clear`, and `stop` when the call ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::sim::personas::Persona;
use crate::sim::speech;

use super::callee::{Callee, Ears, FRAME_MS};
use super::media::{self, Playback, ServerMessage, Ws};
use super::signing::sign;
use super::webhook::{self, Hook};
use super::{ActiveGuard, Callback, Shared, StreamRecord};

/// A validated `<Stream>` to open.
#[derive(Debug, Clone)]
pub(super) struct StreamSpec {
    /// As written in the TwiML (what the handshake signature covers).
    pub url: String,
    pub connect_url: String,
    pub name: Option<String>,
    pub parameters: Vec<(String, String)>,
    pub status_callback: Option<Hook>,
}

/// How a stream ended, for the TwiML executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    /// The handshake failed; the stream never started.
    Failed,
    /// Our server closed the socket.
    ServerClosed,
    /// New TwiML replaced the stream.
    Replaced,
    /// The call ended.
    CallEnded,
}

pub(super) enum LineCmd {
    Connect(StreamSpec, oneshot::Sender<StreamEnd>),
    /// Stop the open stream (the call is redirected).
    Disconnect,
}

pub(super) struct LineHandle {
    pub cmd: mpsc::UnboundedSender<LineCmd>,
    end: CancellationToken,
    join: JoinHandle<()>,
}

impl LineHandle {
    /// End the line: `stop` and close an open stream, then wait for that to be done.
    pub(super) async fn finish(self) {
        self.end.cancel();
        let _ = self.join.await;
    }
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    call_sid: String,
    persona: &'static Persona,
) -> LineHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let end = CancellationToken::new();
    let line = Line {
        shared,
        call_sid,
        callee: Callee::new(persona),
        listener: speech::Listener::new(),
        quiet_ms: 0,
        session: None,
    };
    let join = tokio::spawn(line.run(rx, end.clone()));
    LineHandle { cmd: tx, end, join }
}

struct Line {
    shared: Arc<Shared>,
    call_sid: String,
    callee: Callee,
    /// Decodes what the callee hears, across streams.
    listener: speech::Listener,
    quiet_ms: u64,
    session: Option<Session>,
}

struct Session {
    ws: Ws,
    stream_sid: String,
    spec: StreamSpec,
    /// `sequenceNumber` of the next message (`start` was 1).
    seq: u64,
    /// `chunk` of the next media message.
    chunk: u64,
    playback: Playback,
    done: Option<oneshot::Sender<StreamEnd>>,
}

type Pending = (
    JoinHandle<Result<Ws, media::HandshakeFailed>>,
    StreamSpec,
    oneshot::Sender<StreamEnd>,
);

/// How long Twilio waits for a handshake (simulated), and for the close handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

impl Line {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<LineCmd>, end: CancellationToken) {
        // Below ~0.1 ms a frame the clock would only spin; simulated time that fast is
        // meaningless anyway.
        let period = self
            .shared
            .scale()
            .scale(Duration::from_millis(FRAME_MS))
            .max(Duration::from_micros(100));
        let mut next_tick = Instant::now() + period;
        let mut pending: Option<Pending> = None;
        loop {
            tokio::select! {
                biased;
                _ = end.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(LineCmd::Connect(spec, done)) => {
                        self.close_session(StreamEnd::Replaced).await;
                        if let Some((h, _, d)) = pending.take() {
                            h.abort();
                            let _ = d.send(StreamEnd::Replaced);
                        }
                        pending = Some(self.begin_connect(spec, done));
                    }
                    Some(LineCmd::Disconnect) => {
                        self.close_session(StreamEnd::Replaced).await;
                        if let Some((h, _, d)) = pending.take() {
                            h.abort();
                            let _ = d.send(StreamEnd::Replaced);
                        }
                    }
                    // The call task is gone without ending the line: end it (a closed channel
                    // would otherwise be ready forever and spin this loop).
                    None => break,
                },
                res = async { (&mut pending.as_mut().expect("guarded").0).await }, if pending.is_some() => {
                    let (_, spec, done) = pending.take().expect("guarded");
                    match res {
                        Ok(Ok(ws)) => self.open_session(ws, spec, done).await,
                        Ok(Err(failed)) => self.handshake_failed(&spec, failed, done),
                        Err(_) => {
                            let _ = done.send(StreamEnd::Failed);
                        }
                    }
                }
                // Server messages before an overdue frame: when the clock falls behind, a `clear`
                // must not wait for the catch-up frames.
                msg = async { self.session.as_mut().expect("guarded").ws.next().await }, if self.session.is_some() => {
                    self.on_server_frame(msg).await;
                }
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick += period;
                    self.tick().await;
                }
            }
        }
        if let Some((h, _, d)) = pending.take() {
            h.abort();
            let _ = d.send(StreamEnd::CallEnded);
        }
        self.close_session(StreamEnd::CallEnded).await;
    }

    fn begin_connect(&self, spec: StreamSpec, done: oneshot::Sender<StreamEnd>) -> Pending {
        let signature = sign(&self.shared.config.auth_token, &spec.url, &[]);
        let url = spec.connect_url.clone();
        let timeout = self
            .shared
            .scale()
            .scale(HANDSHAKE_TIMEOUT)
            .max(Duration::from_secs(1));
        let handle = tokio::spawn(async move { media::connect(&url, &signature, timeout).await });
        (handle, spec, done)
    }

    fn handshake_failed(
        &self,
        spec: &StreamSpec,
        failed: media::HandshakeFailed,
        done: oneshot::Sender<StreamEnd>,
    ) {
        self.shared.with_stream(&self.call_sid, |s| {
            s.handshake_status = failed.status;
        });
        self.shared
            .note_error(&self.call_sid, failed.code, failed.message.clone());
        self.stream_callback(spec, None, "stream-error", Some(failed.message));
        let _ = done.send(StreamEnd::Failed);
    }

    async fn open_session(&mut self, ws: Ws, spec: StreamSpec, done: oneshot::Sender<StreamEnd>) {
        let stream_sid = super::sid("MZ");
        self.shared.with_stream(&self.call_sid, |s| {
            s.handshake_status = Some(101);
            s.stream_sid = Some(stream_sid.clone());
        });
        let mut session = Session {
            ws,
            stream_sid: stream_sid.clone(),
            spec,
            seq: 1,
            chunk: 1,
            playback: Playback::default(),
            done: Some(done),
        };
        let account = self.shared.config.account_sid.clone();
        let start = media::start(
            session.seq,
            &stream_sid,
            &account,
            &self.call_sid,
            &session.spec.parameters,
        );
        session.seq += 1;
        let ok =
            send(&mut session.ws, &media::connected()).await && send(&mut session.ws, &start).await;
        let spec = session.spec.clone();
        self.session = Some(session);
        if ok {
            self.stream_callback(&spec, Some(&stream_sid), "stream-started", None);
        } else {
            self.server_gone().await;
        }
    }

    /// One 20 ms frame.
    async fn tick(&mut self) {
        let (played, marks) = match self.session.as_mut() {
            Some(s) => s.playback.play(speech::FRAME_BYTES),
            None => (Vec::new(), Vec::new()),
        };
        for name in marks {
            self.echo_mark(name).await;
        }
        let mut ears = Ears::default();
        if !played.is_empty() && speech::energy(&played) > 1000 {
            ears.agent_audible_ms = (played.len() / speech::BYTES_PER_MS) as u64;
        }
        for heard in self.listener.feed(&played) {
            if let speech::Heard::Utterance(text) = heard {
                ears.utterances_finished += 1;
                self.shared
                    .with_stream(&self.call_sid, |s| s.heard.push(text));
            }
        }
        if ears.agent_audible_ms > 0 || self.listener.in_utterance() {
            self.quiet_ms = 0;
        } else {
            self.quiet_ms = self.quiet_ms.saturating_add(FRAME_MS);
        }
        ears.agent_quiet_ms = self.quiet_ms;

        let frame = self.callee.frame(ears);
        if let (Some(line), true) = (frame.started_line, self.session.is_some()) {
            self.shared
                .with_stream(&self.call_sid, |s| s.said.push(line.to_string()));
        }
        if frame.hang_up {
            self.shared.request_end(&self.call_sid, "callee");
        }
        if let (Some(key), Some(s)) = (frame.key, self.session.as_mut()) {
            let msg = media::dtmf(s.seq, &s.stream_sid, key);
            s.seq += 1;
            self.shared
                .with_stream(&self.call_sid, |r| r.log(super::StreamEvent::Key(key)));
            if !send(&mut s.ws, &msg).await {
                self.server_gone().await;
                return;
            }
        }
        if let Some(s) = self.session.as_mut() {
            let msg = media::media(
                s.seq,
                &s.stream_sid,
                s.chunk,
                (s.chunk - 1) * FRAME_MS,
                &frame.audio,
            );
            s.seq += 1;
            s.chunk += 1;
            if !send(&mut s.ws, &msg).await {
                self.server_gone().await;
            }
        }
    }

    async fn echo_mark(&mut self, name: String) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let msg = media::mark(s.seq, &s.stream_sid, &name);
        s.seq += 1;
        if send(&mut s.ws, &msg).await {
            self.shared
                .with_stream(&self.call_sid, |r| r.marks_echoed.push(name));
        } else {
            self.server_gone().await;
        }
    }

    async fn on_server_frame(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(b))) => {
                let note = format!(
                    "31950 binary frame of {} bytes (only text JSON is accepted)",
                    b.len()
                );
                self.shared
                    .with_stream(&self.call_sid, |s| s.rejected.push(note));
                return;
            }
            // tungstenite answers pings itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                self.server_gone().await;
                return;
            }
        };
        match media::parse_server_text(&text, &session.stream_sid) {
            Ok(ServerMessage::Media(bytes)) => {
                self.shared.with_stream(&self.call_sid, |s| {
                    s.audio_received.extend_from_slice(&bytes);
                    s.log(super::StreamEvent::Media(bytes.len()));
                });
                session.playback.push_audio(bytes);
            }
            Ok(ServerMessage::Mark(name)) => {
                let name_copy = name.clone();
                self.shared.with_stream(&self.call_sid, |s| {
                    s.log(super::StreamEvent::Mark(name_copy.clone()));
                    s.marks_received.push(name_copy);
                });
                for reached in session.playback.push_mark(name) {
                    self.echo_mark(reached).await;
                }
            }
            Ok(ServerMessage::Clear) => {
                let pending = session.playback.clear();
                // Whatever was half-heard is cut off, not finished.
                self.listener.cut_off();
                self.shared.with_stream(&self.call_sid, |s| {
                    s.clears += 1;
                    s.log(super::StreamEvent::Clear);
                });
                for name in pending {
                    self.echo_mark(name).await;
                }
            }
            Err(reason) => {
                let note = format!("31951 {reason}: {}", media::clip(&text));
                self.shared
                    .with_stream(&self.call_sid, |s| s.rejected.push(note));
            }
        }
    }

    /// Our server closed the socket (or it broke): the `<Connect>` is over.
    async fn server_gone(&mut self) {
        let Some(mut s) = self.session.take() else {
            return;
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, s.ws.close(None)).await;
        self.shared
            .with_stream(&self.call_sid, |r| r.closed_by_server = true);
        // Twilio logs a server-side close as 31921; informational.
        self.shared.note_error(
            &self.call_sid,
            31921,
            "Stream - WebSocket - Close Error: closed by the server",
        );
        self.listener.cut_off();
        self.stream_callback(&s.spec, Some(&s.stream_sid), "stream-stopped", None);
        if let Some(done) = s.done.take() {
            let _ = done.send(StreamEnd::ServerClosed);
        }
    }

    /// Twilio stops the stream: `stop`, then close.
    async fn close_session(&mut self, why: StreamEnd) {
        let Some(mut s) = self.session.take() else {
            return;
        };
        let account = self.shared.config.account_sid.clone();
        let msg = media::stop(s.seq, &s.stream_sid, &account, &self.call_sid);
        s.seq += 1;
        if send(&mut s.ws, &msg).await {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, s.ws.close(None)).await;
            // The server's half of the close handshake is awaited in the background: the call
            // is over whether or not it answers.
            let mut ws = s.ws;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            });
        }
        self.listener.cut_off();
        self.stream_callback(&s.spec, Some(&s.stream_sid), "stream-stopped", None);
        if let Some(done) = s.done.take() {
            let _ = done.send(why);
        }
    }

    /// `<Stream statusCallback>`, sent in the background so a slow webhook never holds up the
    /// call (but counted for `FakeTwilio::wait_idle`).
    fn stream_callback(
        &self,
        spec: &StreamSpec,
        stream_sid: Option<&str>,
        event: &str,
        error: Option<String>,
    ) {
        let Some(hook) = spec.status_callback.clone() else {
            return;
        };
        let stream_sid = stream_sid.unwrap_or_default().to_string();
        let mut params = vec![
            (
                "AccountSid".to_string(),
                self.shared.config.account_sid.clone(),
            ),
            ("CallSid".to_string(), self.call_sid.clone()),
            ("StreamSid".to_string(), stream_sid.clone()),
            (
                "StreamName".to_string(),
                spec.name.clone().unwrap_or(stream_sid),
            ),
            ("StreamEvent".to_string(), event.to_string()),
            (
                "Timestamp".to_string(),
                self.shared
                    .now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
        ];
        if let Some(e) = error {
            params.push(("StreamError".to_string(), e));
        }
        let shared = self.shared.clone();
        let sid = self.call_sid.clone();
        let event = event.to_string();
        let guard = ActiveGuard::new(shared.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let http_status = webhook::send(&shared, &hook, &params).await;
            shared.with_stream(&sid, |s| {
                s.status_callbacks.push(Callback {
                    event,
                    sequence_number: None,
                    url: hook.url,
                    params,
                    http_status,
                })
            });
        });
    }
}

async fn send(ws: &mut Ws, msg: &Value) -> bool {
    ws.send(Message::text(msg.to_string())).await.is_ok()
}

/// The stream record a `<Connect><Stream>` starts with.
pub(super) fn new_record(url: &str, parameters: &[(String, String)]) -> StreamRecord {
    StreamRecord {
        url: url.to_string(),
        custom_parameters: parameters.iter().cloned().collect::<BTreeMap<_, _>>(),
        ..StreamRecord::default()
    }
}

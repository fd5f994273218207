//! An echo Voice Agent that speaks the real protocol (assemblyai-voice-agent.md): the upgrade
//! with `Authorization: Bearer`, nothing before the client's `session.update`, then
//! `session.updated` and `session.ready`, a greeting (one `reply.audio` the generator can tell
//! from an echo), every `input.audio` sent straight back as `reply.audio`, and `session.end`
//! answered with `session.ended` and a 1000 close.

use crate::audio::{self, FRAME_B64, Stamp};
use crate::wire::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub(crate) const API_KEY: &str = "load-bench-agent-key";

/// What the coordinator sees of the agent.
#[derive(Default)]
pub(crate) struct AgentShared {
    /// The campaign's trial session (the first connection) has sent `session.update`.
    pub preflight_seen: AtomicBool,
    /// The coordinator has measured the idle dialer: the trial session may be answered.
    pub preflight_go: AtomicBool,
    pub sessions: AtomicUsize,
    /// Connections refused or broken by protocol errors.
    pub errors: AtomicUsize,
}

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<AgentShared>,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        let socket = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
        };
        let _ = socket.set_nodelay(true);
        let preflight = std::mem::take(&mut first);
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                r = session(socket, preflight, &shared) => if r.is_err() {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                },
            }
        });
    }
}

const SESSION_UPDATE: &[u8] = br#""type":"session.update""#;
const INPUT_AUDIO: &[u8] = br#""type":"input.audio""#;
const SESSION_END: &[u8] = br#""type":"session.end""#;
const REPLY_AUDIO_HEAD: &[u8] = br#"{"type":"reply.audio","reply_id":"resp_0","data":""#;

async fn session(
    mut socket: TcpStream,
    preflight: bool,
    shared: &AgentShared,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let head_len = wire::read_head(&mut socket, &mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let authorized = wire::header(&head, "authorization")
        .is_some_and(|v| v.trim_start_matches("Bearer ").trim() == API_KEY);
    let key = wire::header(&head, "sec-websocket-key").unwrap_or_default();
    if !head.starts_with("GET /v1/ws") || key.is_empty() {
        socket
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Err(std::io::Error::other("not a Voice Agent handshake"));
    }
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        wire::accept_key(key)
    );
    socket.write_all(answer.as_bytes()).await?;
    buf.drain(..head_len);
    let mut filled = buf.len();
    buf.resize(16 * 1024, 0);
    let mut out = Vec::with_capacity(4096);
    let mut greeting = [0u8; FRAME_B64];
    audio::encode(
        Stamp {
            call: audio::GREETING,
            seq: 0,
            sent_ns: 0,
        },
        &mut greeting,
    );
    let mut ready = false;
    loop {
        let n = socket.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut at = 0;
        let mut closing = false;
        while let Some((op, range, len)) = wire::parse_frame(&mut buf[at..filled]) {
            let payload = &buf[at + range.start..at + range.end];
            match op {
                OP_TEXT if wire::find(payload, INPUT_AUDIO).is_some() => {
                    // Audio before `session.ready` is discarded, as the service does.
                    if let (true, Some(data)) =
                        (ready, wire::string_after(payload, b"\"audio\":\""))
                    {
                        wire::put_header(
                            &mut out,
                            OP_TEXT,
                            REPLY_AUDIO_HEAD.len() + data.len() + 2,
                            false,
                        );
                        out.extend_from_slice(REPLY_AUDIO_HEAD);
                        out.extend_from_slice(data);
                        out.extend_from_slice(b"\"}");
                    }
                }
                OP_TEXT if !ready && wire::find(payload, SESSION_UPDATE).is_some() => {
                    if !authorized {
                        let error = br#"{"type":"session.error","code":"unauthorized","message":"Invalid API key","session_id":null,"param":null}"#;
                        wire::put_frame(&mut out, OP_TEXT, error, false);
                        wire::put_close(&mut out, 1008, false);
                        closing = true;
                    } else {
                        if preflight {
                            shared.preflight_seen.store(true, Ordering::SeqCst);
                            while !shared.preflight_go.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                        }
                        ready = true;
                        let n = shared.sessions.fetch_add(1, Ordering::Relaxed);
                        wire::put_frame(
                            &mut out,
                            OP_TEXT,
                            br#"{"type":"session.updated","config":{}}"#,
                            false,
                        );
                        let ready_msg = format!(
                            r#"{{"type":"session.ready","session_id":"sess_{n:032x}","config":{{}},"expires_at":0,"resume_token":""}}"#
                        );
                        wire::put_frame(&mut out, OP_TEXT, ready_msg.as_bytes(), false);
                        wire::put_frame(
                            &mut out,
                            OP_TEXT,
                            br#"{"type":"reply.started","reply_id":"resp_0","item_id":"msg_0"}"#,
                            false,
                        );
                        wire::put_header(
                            &mut out,
                            OP_TEXT,
                            REPLY_AUDIO_HEAD.len() + greeting.len() + 2,
                            false,
                        );
                        out.extend_from_slice(REPLY_AUDIO_HEAD);
                        out.extend_from_slice(&greeting);
                        out.extend_from_slice(b"\"}");
                    }
                }
                OP_TEXT if wire::find(payload, SESSION_END).is_some() => {
                    wire::put_frame(
                        &mut out,
                        OP_TEXT,
                        br#"{"type":"session.ended","session_duration_seconds":1.0,"audio_duration_seconds":null}"#,
                        false,
                    );
                    wire::put_close(&mut out, 1000, false);
                    closing = true;
                }
                OP_TEXT => {}
                OP_PING => {
                    let payload = payload.to_vec();
                    wire::put_frame(&mut out, OP_PONG, &payload, false);
                }
                OP_CLOSE => {
                    if !closing {
                        wire::put_close(&mut out, 1000, false);
                    }
                    socket.write_all(&out).await?;
                    return Ok(());
                }
                _ => {}
            }
            at += len;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if filled == buf.len() {
            return Err(std::io::Error::other("a frame larger than the read buffer"));
        }
        if !out.is_empty() {
            socket.write_all(&out).await?;
            out.clear();
        }
        if closing {
            // The client answers our close and drops the connection.
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await;
            return Ok(());
        }
    }
}

//! WebSocket frames as the bridge sees them, and the RFC 6455 framing that carries them on both
//! legs of a call once the handshake is done (the server upgrades the Media Stream itself in
//! `server::convert`; the agent client does its own upgrade in `agent::client`).
//!
//! The framing is ours rather than tokio-tungstenite's because a call is 50 small frames a
//! second each way on each leg, and the library's cost per poll (waker proxies registered on
//! every poll, a read buffer zero-filled before every read, its message conversions and the
//! stream adapters around it) was a measurable share of the dialer's time at 200 calls
//! (BENCHMARKS.md). Here a read goes into the spare capacity of one small buffer, every complete
//! frame in it is parsed before reading again, and a text payload is handed out as `Bytes` split
//! off that buffer; a write encodes the frame straight into one buffer that a flush writes out.
//!
//! Extensions (permessage-deflate) and subprotocols are never negotiated, so frames with RSV
//! bits are refused.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(test)]
mod tests;

/// The least room made in the read buffer before a read. Frames on both legs are a few hundred
/// bytes (20 ms of audio in base64 inside JSON), so a read takes in half a dozen; a larger frame
/// still arrives whole, as the buffer grows for it (up to the leg's message limit).
const READ_BUFFER: usize = 2 * 1024;
/// Queued bytes past which `poll_ready` flushes before taking another frame. The bridge feeds
/// up to 16 frames that arrived together and flushes once: 16 Media Stream or `input.audio`
/// frames (~350 bytes each) fit under this, so a batch leaves in one write, while a peer that
/// stops reading holds back at most this much (plus one frame) per leg.
const WRITE_BUFFER: usize = 8 * 1024;
/// What the write buffer starts with: a few frames. It grows only for a batch or a large
/// frame; room held by every leg of every call from the start is memory per call.
const WRITE_START: usize = 1024;
/// Control replies (pongs) are not queued past this: a peer that sends pings but does not read
/// must not grow our buffer. RFC 6455 §5.5.3 allows answering only the most recent ping.
const MAX_PENDING_CONTROL: usize = 4 * WRITE_BUFFER;
/// A control frame's payload limit (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// One frame. Ping and pong are answered here and never reach the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole text message, checked to be UTF-8 when received.
    Text(Bytes),
    Binary(Bytes),
    Close(Option<(u16, String)>),
}

impl Frame {
    pub fn text(s: String) -> Self {
        Frame::Text(Bytes::from(s))
    }
}

/// The error a leg's sink reports: the peer is gone.
#[derive(Debug, thiserror::Error)]
#[error("websocket closed: {0}")]
pub struct SendError(pub String);

pub type FrameStream = Pin<Box<dyn Stream<Item = Frame> + Send>>;
pub type FrameSink = Pin<Box<dyn Sink<Frame, Error = SendError> + Send>>;

/// Which end of the connection we are: it decides which direction is masked (RFC 6455 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// We accepted the connection (the Media Stream): frames we receive are masked.
    Server,
    /// We opened the connection (the agent): frames we send are masked.
    Client,
}

/// Frame halves over a stream whose handshake is done. `leftover` is what was read past the
/// handshake (it may already hold frames); `max_message` bounds each message and each frame the
/// peer may send, so a peer cannot make us buffer more than that.
pub(crate) fn frames<S>(
    io: S,
    role: Role,
    leftover: &[u8],
    max_message: usize,
) -> (FrameStream, FrameSink)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut read = BytesMut::with_capacity(READ_BUFFER.max(leftover.len()));
    read.extend_from_slice(leftover);
    let conn = Conn {
        io,
        role,
        max_message,
        read,
        need: 0,
        partial: None,
        write: BytesMut::with_capacity(WRITE_START),
        reading: Reading::Open,
        close_sent: false,
        failed: None,
    };
    // One task polls both halves, so this lock is never contended; a mutex rather than
    // `StreamExt::split`'s BiLock saves the split sink's extra slot and its waker bookkeeping,
    // and stays sound (if briefly blocking) should two tasks ever poll the halves.
    let shared = Arc::new(Mutex::new(conn));
    (Box::pin(Reader(shared.clone())), Box::pin(Writer(shared)))
}

/// Opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Close codes we send (RFC 6455 §7.4.1).
const NORMAL: u16 = 1000;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const TOO_BIG: u16 = 1009;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Open,
    /// Nothing more to read: the peer's close was handed out, or its input ended or broke the
    /// protocol.
    Done,
}

struct Conn<S> {
    io: S,
    role: Role,
    max_message: usize,
    /// Bytes read and not yet parsed.
    read: BytesMut,
    /// The size the frame at the front of `read` needs, once its header is known.
    need: usize,
    /// A fragmented message so far: its opcode and payload.
    partial: Option<(u8, BytesMut)>,
    /// Whole encoded frames not yet written.
    write: BytesMut,
    reading: Reading,
    /// A close frame is queued or sent: nothing more may be sent (RFC 6455 §5.5.1).
    close_sent: bool,
    /// The write error that ended the sink, reported again on every later use.
    failed: Option<String>,
}

/// Why the peer's input ends the connection: the close code we answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Violation(u16);

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn poll_next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        // Answers to pings (and a close) queued by an earlier read go out now, even when the
        // bridge only reads this leg; a write that would block waits for the next poll.
        self.write_control(cx);
        loop {
            if self.reading == Reading::Done {
                return Poll::Ready(None);
            }
            match self.parse() {
                Ok(Some(frame)) => {
                    self.write_control(cx);
                    return Poll::Ready(Some(frame));
                }
                // A pong queued on the way goes out before we wait for more.
                Ok(None) => self.write_control(cx),
                Err(Violation(code)) => {
                    self.queue_close(code, "");
                    self.reading = Reading::Done;
                    self.write_control(cx);
                    return Poll::Ready(None);
                }
            }
            // Room for the rest of the frame at the front, or for a read's worth of frames.
            let want = self
                .need
                .saturating_sub(self.read.len())
                .max(READ_BUFFER / 4);
            if self.read.capacity() - self.read.len() < want {
                // Asking for no more than the buffer's own size lets `reserve` move what is
                // left to the front of the same allocation rather than double it.
                self.read
                    .reserve(want.max(READ_BUFFER.saturating_sub(self.read.len())));
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => {}
                // The peer went away without a close, or the socket failed: reading ends.
                Poll::Ready(_) => {
                    self.reading = Reading::Done;
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// The next message, control frames handled on the way; `None` when `read` holds no
    /// complete frame.
    fn parse(&mut self) -> Result<Option<Frame>, Violation> {
        loop {
            let Some(header) = Header::parse(&self.read)? else {
                self.need = 0;
                return Ok(None);
            };
            if !matches!(
                header.opcode,
                CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG
            ) {
                return Err(Violation(PROTOCOL_ERROR));
            }
            let masked_in = self.role == Role::Server;
            if header.mask.is_some() != masked_in {
                return Err(Violation(PROTOCOL_ERROR));
            }
            let control = header.opcode >= CLOSE;
            if control {
                if !header.fin || header.len > MAX_CONTROL as u64 {
                    return Err(Violation(PROTOCOL_ERROR));
                }
            } else {
                // Refused from the header alone, before any of its payload is buffered.
                let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len()) as u64;
                if header.len.saturating_add(so_far) > self.max_message as u64 {
                    return Err(Violation(TOO_BIG));
                }
            }
            // Fits in usize: bounded by `max_message` or `MAX_CONTROL` above.
            let len = header.len as usize;
            let total = header.size + len;
            if self.read.len() < total {
                self.need = total;
                return Ok(None);
            }
            self.read.advance(header.size);
            let mut payload = self.read.split_to(len);
            if let Some(key) = header.mask {
                apply_mask(&mut payload, key, 0);
            }
            match (header.opcode, self.partial.take()) {
                (TEXT | BINARY, None) if header.fin => {
                    return message(header.opcode, payload).map(Some);
                }
                (TEXT | BINARY, None) => self.partial = Some((header.opcode, payload)),
                (CONTINUATION, Some((opcode, mut so_far))) => {
                    so_far.extend_from_slice(&payload);
                    if header.fin {
                        return message(opcode, so_far).map(Some);
                    }
                    self.partial = Some((opcode, so_far));
                }
                // A continuation with nothing to continue, or a new message inside one.
                (TEXT | BINARY | CONTINUATION, _) => return Err(Violation(PROTOCOL_ERROR)),
                (PING, partial) => {
                    self.partial = partial;
                    if !self.close_sent && self.write.len() < MAX_PENDING_CONTROL {
                        encode(&mut self.write, self.role, PONG, &[&payload]);
                    }
                }
                (PONG, partial) => self.partial = partial,
                (CLOSE, _) => {
                    let close = close_payload(&payload)?;
                    // Echo the peer's code (RFC 6455 §5.5.1); our own close, if already sent,
                    // was the first half of this handshake.
                    let code = close.as_ref().map_or(NORMAL, |(code, _)| *code);
                    self.queue_close(code, "");
                    self.reading = Reading::Done;
                    return Ok(Some(Frame::Close(close)));
                }
                _ => return Err(Violation(PROTOCOL_ERROR)),
            }
        }
    }

    /// Queues a close frame unless one has been queued already.
    fn queue_close(&mut self, code: u16, reason: &str) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        // A control frame holds 125 bytes: the code and at most 123 of the reason.
        let mut end = reason.len().min(MAX_CONTROL - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        encode(
            &mut self.write,
            self.role,
            CLOSE,
            &[&code.to_be_bytes(), &reason.as_bytes()[..end]],
        );
    }

    /// Writes what is queued without waiting: the reader's way of sending control replies.
    fn write_control(&mut self, cx: &mut Context<'_>) {
        if !self.write.is_empty() && self.failed.is_none() {
            // Pending leaves the rest for the next poll of either half (this task is woken
            // when the socket can take more); an error is kept for the sink to report.
            let _ = self.poll_flush_all(cx);
        }
    }

    /// Writes everything queued and flushes the stream (TLS holds the last record otherwise).
    fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        if let Some(e) = &self.failed {
            return Poll::Ready(Err(SendError(e.clone())));
        }
        let result = loop {
            if self.write.is_empty() {
                break ready!(Pin::new(&mut self.io).poll_flush(cx));
            }
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.write)) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.write.advance(n),
                Err(e) => break Err(e),
            }
        };
        // Once all is written, the next frame's `reserve` reuses the buffer from its start.
        Poll::Ready(result.map_err(|e| self.fail(e.to_string())))
    }

    fn fail(&mut self, detail: String) -> SendError {
        self.write.clear();
        self.failed = Some(detail.clone());
        SendError(detail)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        if let Some(e) = &self.failed {
            return Poll::Ready(Err(SendError(e.clone())));
        }
        if self.write.len() >= WRITE_BUFFER {
            ready!(self.poll_flush_all(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(&mut self, frame: Frame) -> Result<(), SendError> {
        if let Some(e) = &self.failed {
            return Err(SendError(e.clone()));
        }
        if self.close_sent {
            // Closing again changes nothing (the bridge closes a leg whose peer closed first,
            // and our reply is already queued); anything else may not follow a close.
            return match frame {
                Frame::Close(_) => Ok(()),
                _ => Err(SendError("a close frame was already sent".into())),
            };
        }
        match frame {
            // Only our own code builds text frames, from `String`s: not checked again here.
            Frame::Text(text) => encode(&mut self.write, self.role, TEXT, &[&text]),
            Frame::Binary(data) => encode(&mut self.write, self.role, BINARY, &[&data]),
            Frame::Close(None) => {
                self.close_sent = true;
                encode(&mut self.write, self.role, CLOSE, &[]);
            }
            Frame::Close(Some((code, reason))) => self.queue_close(code, &reason),
        }
        Ok(())
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        if self.failed.is_none() {
            self.queue_close(NORMAL, "");
        }
        ready!(self.poll_flush_all(cx))?;
        Pin::new(&mut self.io)
            .poll_shutdown(cx)
            .map_err(|e| self.fail(e.to_string()))
    }
}

/// A frame header (RFC 6455 §5.2).
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// Bytes the header itself takes.
    size: usize,
}

impl Header {
    /// The header at the front of `buf`; `None` until all of it has arrived.
    fn parse(buf: &[u8]) -> Result<Option<Header>, Violation> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        // No extension was negotiated, so no RSV bit may be set.
        if b0 & 0x70 != 0 {
            return Err(Violation(PROTOCOL_ERROR));
        }
        let (len, ext) = match b1 & 0x7F {
            126 => match rest {
                [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
                _ => return Ok(None),
            },
            127 => match rest.get(..8) {
                Some(bytes) => {
                    let mut be = [0; 8];
                    be.copy_from_slice(bytes);
                    let len = u64::from_be_bytes(be);
                    // The most significant bit must be 0.
                    if len >> 63 != 0 {
                        return Err(Violation(PROTOCOL_ERROR));
                    }
                    (len, 8)
                }
                None => return Ok(None),
            },
            len => (u64::from(len), 0),
        };
        let mask = if b1 & 0x80 != 0 {
            match rest.get(ext..ext + 4) {
                Some(key) => Some([key[0], key[1], key[2], key[3]]),
                None => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some(Header {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0F,
            mask,
            len,
            size: 2 + ext + if mask.is_some() { 4 } else { 0 },
        }))
    }
}

/// A whole message out of its payload; text must be UTF-8 (RFC 6455 §8.1).
fn message(opcode: u8, payload: BytesMut) -> Result<Frame, Violation> {
    if opcode == TEXT {
        if std::str::from_utf8(&payload).is_err() {
            return Err(Violation(INVALID_DATA));
        }
        Ok(Frame::Text(payload.freeze()))
    } else {
        Ok(Frame::Binary(payload.freeze()))
    }
}

/// A close frame's code and reason (RFC 6455 §5.5.1, §7.4).
fn close_payload(payload: &[u8]) -> Result<Option<(u16, String)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation(PROTOCOL_ERROR)),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            // 1004-1006 and 1015 are never sent on the wire; below 1000 and 1016-2999 are
            // unassigned or reserved for the protocol itself.
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(Violation(PROTOCOL_ERROR));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Violation(INVALID_DATA))?;
            Ok(Some((code, reason.to_string())))
        }
    }
}

/// Appends one unfragmented frame: the header, then the payload (its parts in order), masked
/// while it is copied when we are the client, with a fresh key per frame (RFC 6455 §5.3).
fn encode(out: &mut BytesMut, role: Role, opcode: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mask_bit = if role == Role::Client { 0x80 } else { 0 };
    out.reserve(14 + len);
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(mask_bit | 126);
        out.put_u16(len);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(len as u64);
    }
    if role == Role::Client {
        let key: [u8; 4] = rand::random();
        out.put_slice(&key);
        let mut offset = 0;
        for part in parts {
            let start = out.len();
            out.put_slice(part);
            apply_mask(&mut out[start..], key, offset);
            offset += part.len();
        }
    } else {
        for part in parts {
            out.put_slice(part);
        }
    }
}

/// XORs `data` with the key, as if `data` started `offset` bytes into the payload.
fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    // Eight bytes at a time: the key repeats every four, so twice over is the same mask.
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

type Shared<S> = Arc<Mutex<Conn<S>>>;

/// The connection, or `None` if a panic while it was held left it in an unknown state.
fn lock<S>(shared: &Shared<S>) -> Option<MutexGuard<'_, Conn<S>>> {
    shared.lock().ok()
}

struct Reader<S>(Shared<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Reader<S> {
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        match lock(&self.0) {
            Some(mut conn) => conn.poll_next_frame(cx),
            None => Poll::Ready(None),
        }
    }
}

struct Writer<S>(Shared<S>);

fn poisoned() -> SendError {
    SendError("the connection failed".into())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Frame> for Writer<S> {
    type Error = SendError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        lock(&self.0).map_or(Poll::Ready(Err(poisoned())), |mut c| c.poll_ready(cx))
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), SendError> {
        lock(&self.0).map_or(Err(poisoned()), |mut c| c.start_send(frame))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        lock(&self.0).map_or(Poll::Ready(Err(poisoned())), |mut c| c.poll_flush_all(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        lock(&self.0).map_or(Poll::Ready(Err(poisoned())), |mut c| c.poll_close(cx))
    }
}

//! WebSocket frames as the bridge sees them, independent of the library that carried them
//! (tokio-tungstenite on both legs: the server upgrades the Media Stream itself, the agent
//! client connects). Text stays as the bytes that arrived, so nothing is copied on the way.

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::pin::Pin;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// Bytes read from a socket at once. Frames on both legs are a few hundred bytes (20 ms of
/// audio in base64 inside JSON), so this holds half a dozen; a larger frame still arrives
/// whole, as the buffer grows for it. tungstenite zero-fills this much before each read.
const READ_BUFFER: usize = 2 * 1024;
/// Frames written without a flush are held up to this much before going out.
const WRITE_BUFFER: usize = 2 * 1024;

/// Socket settings for both legs of every call. A call holds its two sockets for its whole
/// life, so their buffers are paid per call. tungstenite's defaults are sized for bulk
/// transfers: 128 KiB of read buffer, zero-filled before every read, which under load was a
/// quarter of the dialer's time and most of its memory per call (BENCHMARKS.md).
pub(crate) fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
}

/// One frame. Ping and pong are answered by the libraries and never reach the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (UTF-8 checked by the library that received it).
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

/// A sink whose errors become [`SendError`]s, every time. futures' `sink_map_err` (and
/// `sink_err_into`, built on it) maps one error and then panics if the sink is used again, as
/// the bridge does when it closes a leg whose last send failed.
pub(crate) struct SendErrors<S>(pub(crate) S);

impl<S, T> Sink<T> for SendErrors<S>
where
    S: Sink<T> + Unpin,
    S::Error: std::fmt::Display,
{
    type Error = SendError;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), SendError>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(send_error)
    }

    fn start_send(mut self: Pin<&mut Self>, item: T) -> Result<(), SendError> {
        Pin::new(&mut self.0).start_send(item).map_err(send_error)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), SendError>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(send_error)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), SendError>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(send_error)
    }
}

fn send_error(e: impl std::fmt::Display) -> SendError {
    SendError(e.to_string())
}

pub type FrameStream = Pin<Box<dyn Stream<Item = Frame> + Send>>;
pub type FrameSink = Pin<Box<dyn Sink<Frame, Error = SendError> + Send>>;

/// Split a tokio-tungstenite socket into frame halves. Reading ends (`None`) after an error.
pub fn from_tungstenite<S>(
    socket: tokio_tungstenite::WebSocketStream<S>,
) -> (FrameStream, FrameSink)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = socket.split();
    let stream = stream
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(|r| {
            std::future::ready(match r {
                Ok(Message::Text(t)) => Some(Frame::Text(Bytes::from(t))),
                Ok(Message::Binary(b)) => Some(Frame::Binary(b)),
                Ok(Message::Close(c)) => Some(Frame::Close(
                    c.map(|c| (u16::from(c.code), c.reason.as_str().to_string())),
                )),
                _ => None,
            })
        });
    let sink =
        SendErrors(sink).with(|f: Frame| std::future::ready(Ok::<_, SendError>(to_tungstenite(f))));
    (Box::pin(stream), Box::pin(sink))
}

fn to_tungstenite(frame: Frame) -> Message {
    match frame {
        Frame::Text(b) => match tungstenite::Utf8Bytes::try_from(b) {
            Ok(t) => Message::Text(t),
            // Only our own code builds text frames, from `String`s: this cannot happen.
            Err(_) => Message::Close(None),
        },
        Frame::Binary(b) => Message::Binary(b),
        Frame::Close(c) => {
            Message::Close(c.map(|(code, reason)| tungstenite::protocol::CloseFrame {
                code: code.into(),
                reason: reason.into(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn a_sink_used_again_after_an_error_fails_again_without_panicking() {
        let (ours, theirs) = tokio::io::duplex(64);
        let socket = WebSocketStream::from_raw_socket(ours, Role::Client, None).await;
        let (_stream, mut sink) = from_tungstenite(socket);
        drop(theirs);
        let mut failures = 0;
        for _ in 0..3 {
            if sink.send(Frame::text("x".repeat(256))).await.is_err() {
                failures += 1;
            }
        }
        assert!(failures >= 2, "{failures}");
        assert!(sink.send(Frame::Close(None)).await.is_err());
    }
}

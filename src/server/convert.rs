//! warp's WebSocket messages ⇄ the bridge's frames. The only place that names warp's type.

use crate::ws::{Frame, FrameSink, FrameStream, SendError, SendErrors};
use futures_util::{SinkExt, StreamExt};
use warp::ws::{Message, WebSocket};

pub(crate) fn split(socket: WebSocket) -> (FrameStream, FrameSink) {
    let (sink, stream) = socket.split();
    let stream = stream
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(|r| std::future::ready(r.ok().and_then(from_warp)));
    let sink = SendErrors(sink).with(|f: Frame| std::future::ready(Ok::<_, SendError>(to_warp(f))));
    (Box::pin(stream), Box::pin(sink))
}

fn from_warp(m: Message) -> Option<Frame> {
    if m.is_text() {
        Some(Frame::Text(m.into_bytes()))
    } else if m.is_binary() {
        Some(Frame::Binary(m.into_bytes()))
    } else if m.is_close() {
        Some(Frame::Close(
            m.close_frame().map(|(c, r)| (c, r.to_string())),
        ))
    } else {
        None
    }
}

fn to_warp(f: Frame) -> Message {
    match f {
        // Frames we send were built from `String`s, so this reuses the buffer.
        Frame::Text(b) => match String::from_utf8(Vec::from(b)) {
            Ok(s) => Message::text(s),
            Err(_) => Message::close(),
        },
        Frame::Binary(b) => Message::binary(b),
        Frame::Close(Some((code, reason))) => Message::close_with(code, reason),
        Frame::Close(None) => Message::close(),
    }
}

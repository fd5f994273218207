//! The framing against tokio-tungstenite as the independent peer, and against raw bytes for
//! what tungstenite will not send (protocol violations).

use super::*;
use crate::props;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rand::Rng;
use rand::rngs::StdRng;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{self as tprotocol, CloseFrame};
use tokio_tungstenite::tungstenite::{self, Message};

const MAX: usize = 64 * 1024;

fn peer_role(role: Role) -> tprotocol::Role {
    match role {
        Role::Server => tprotocol::Role::Client,
        Role::Client => tprotocol::Role::Server,
    }
}

/// Our halves in `role` and a tungstenite peer in the other role.
async fn pair(role: Role) -> (FrameStream, FrameSink, WebSocketStream<DuplexStream>) {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (stream, sink) = frames(ours, role, &[], MAX);
    let peer = WebSocketStream::from_raw_socket(theirs, peer_role(role), None).await;
    (stream, sink, peer)
}

/// Our halves in `role` and the raw other end.
fn raw(role: Role) -> (FrameStream, FrameSink, DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (stream, sink) = frames(ours, role, &[], MAX);
    (stream, sink, theirs)
}

/// A frame as the peer of `role` must send it (masked towards a server), written by hand.
fn raw_frame(role: Role, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask = if role == Role::Server { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if role == Role::Server {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The first frame in `bytes` (opcode and unmasked payload), read by hand.
fn first_frame(bytes: &[u8]) -> (u8, Vec<u8>) {
    let opcode = bytes[0] & 0x0F;
    let masked = bytes[1] & 0x80 != 0;
    let (len, mut at) = match bytes[1] & 0x7F {
        126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
        127 => panic!("no test expects a frame this long"),
        n => (n as usize, 2),
    };
    let mut key = [0; 4];
    if masked {
        key.copy_from_slice(&bytes[at..at + 4]);
        at += 4;
    }
    let payload = bytes[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| if masked { b ^ key[i % 4] } else { *b })
        .collect();
    (opcode, payload)
}

/// What our side wrote until it stopped: all of it, once the sink is gone.
async fn written(mut theirs: DuplexStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        theirs.read_to_end(&mut out),
    )
    .await;
    out
}

/// The close code in the first frame `bytes` holds, which must be a close.
fn close_code(bytes: &[u8]) -> u16 {
    let (opcode, payload) = first_frame(bytes);
    assert_eq!(opcode, CLOSE, "{bytes:?}");
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Sends `bytes` from the raw peer and returns what our reader yields until it ends, and the
/// close code it answered with.
async fn violation(role: Role, bytes: &[u8]) -> (Vec<Frame>, u16) {
    let (mut stream, sink, mut theirs) = raw(role);
    theirs.write_all(bytes).await.unwrap();
    let mut seen = Vec::new();
    while let Some(frame) = stream.next().await {
        seen.push(frame);
    }
    drop((stream, sink));
    let out = written(theirs).await;
    (seen, close_code(&out))
}

#[tokio::test]
async fn text_and_binary_go_both_ways_in_both_roles() {
    for role in [Role::Server, Role::Client] {
        let (mut stream, mut sink, mut peer) = pair(role).await;
        sink.send(Frame::text("hello".into())).await.unwrap();
        sink.send(Frame::Binary(Bytes::from_static(&[0, 1, 2, 255])))
            .await
            .unwrap();
        let long = "é".repeat(30_000);
        sink.send(Frame::text(long.clone())).await.unwrap();
        assert_eq!(peer.next().await.unwrap().unwrap(), Message::text("hello"));
        assert_eq!(
            peer.next().await.unwrap().unwrap(),
            Message::binary(vec![0, 1, 2, 255])
        );
        assert_eq!(
            peer.next().await.unwrap().unwrap(),
            Message::text(long.clone())
        );

        peer.send(Message::text("from the peer")).await.unwrap();
        peer.send(Message::binary(vec![9; 300])).await.unwrap();
        peer.send(Message::text(long.clone())).await.unwrap();
        assert_eq!(
            stream.next().await,
            Some(Frame::Text(Bytes::from_static(b"from the peer")))
        );
        assert_eq!(
            stream.next().await,
            Some(Frame::Binary(vec![9; 300].into()))
        );
        assert_eq!(stream.next().await, Some(Frame::text(long)));
    }
}

fn fragment(opcode: OpCode, payload: &str, fin: bool) -> Message {
    Message::Frame(tungstenite::protocol::frame::Frame::message(
        payload.as_bytes().to_vec(),
        opcode,
        fin,
    ))
}

#[tokio::test]
async fn a_fragmented_message_arrives_whole_with_a_ping_between_its_fragments() {
    for role in [Role::Server, Role::Client] {
        let (mut stream, _sink, mut peer) = pair(role).await;
        peer.feed(fragment(OpCode::Data(Data::Text), "{\"event\":", false))
            .await
            .unwrap();
        peer.feed(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        peer.feed(fragment(OpCode::Data(Data::Continue), "\"média\"", false))
            .await
            .unwrap();
        peer.feed(fragment(OpCode::Data(Data::Continue), "}", true))
            .await
            .unwrap();
        peer.send(Message::binary(vec![7])).await.unwrap();
        assert_eq!(
            stream.next().await,
            Some(Frame::text("{\"event\":\"média\"}".into()))
        );
        assert_eq!(stream.next().await, Some(Frame::Binary(vec![7].into())));
    }
}

#[tokio::test]
async fn a_ping_is_answered_with_its_payload_while_only_the_read_half_is_polled() {
    for role in [Role::Server, Role::Client] {
        let (mut stream, _sink, mut peer) = pair(role).await;
        let reading = tokio::spawn(async move { stream.next().await });
        peer.send(Message::Ping(Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        let pong = tokio::time::timeout(std::time::Duration::from_secs(2), peer.next())
            .await
            .expect("no pong while the bridge only reads");
        assert_eq!(
            pong.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"are you there"))
        );
        peer.send(Message::text("then text")).await.unwrap();
        assert_eq!(
            reading.await.unwrap(),
            Some(Frame::Text(Bytes::from_static(b"then text")))
        );
    }
}

#[tokio::test]
async fn a_frame_masked_the_wrong_way_is_a_protocol_error() {
    // A client's frame that is not masked, to our server.
    let (seen, code) = violation(Role::Server, &raw_frame(Role::Client, true, TEXT, b"hi")).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(code, PROTOCOL_ERROR);
    // A server's frame that is masked, to our client.
    let (seen, code) = violation(Role::Client, &raw_frame(Role::Server, true, TEXT, b"hi")).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(code, PROTOCOL_ERROR);
}

#[tokio::test]
async fn rsv_bits_unknown_opcodes_and_bad_control_frames_are_protocol_errors() {
    let mut rsv = raw_frame(Role::Server, true, TEXT, b"hi");
    rsv[0] |= 0x40;
    let fragmented_ping = raw_frame(Role::Server, false, PING, b"x");
    let long_ping = raw_frame(Role::Server, true, PING, &[0; 126]);
    let unknown = raw_frame(Role::Server, true, 0x3, b"x");
    let orphan = raw_frame(Role::Server, true, CONTINUATION, b"x");
    let mut interleaved = raw_frame(Role::Server, false, TEXT, b"a");
    interleaved.extend(raw_frame(Role::Server, true, TEXT, b"b"));
    let bad_close_code = raw_frame(Role::Server, true, CLOSE, &1005u16.to_be_bytes());
    for bytes in [
        rsv,
        fragmented_ping,
        long_ping,
        unknown,
        orphan,
        interleaved,
        bad_close_code,
    ] {
        let (seen, code) = violation(Role::Server, &bytes).await;
        assert!(seen.is_empty(), "{bytes:?}: {seen:?}");
        assert_eq!(code, PROTOCOL_ERROR, "{bytes:?}");
    }
}

#[tokio::test]
async fn text_that_is_not_utf8_is_refused_with_1007() {
    for role in [Role::Server, Role::Client] {
        let mut bytes = raw_frame(role, false, TEXT, b"ok \xC3");
        bytes.extend(raw_frame(role, true, CONTINUATION, b"\x28"));
        let (seen, code) = violation(role, &bytes).await;
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(code, INVALID_DATA);
    }
}

#[tokio::test]
async fn an_oversized_frame_is_refused_with_1009_from_its_header_alone() {
    // The header claims a megabyte; none of it follows, so ending proves it was not awaited.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let (seen, code) = violation(Role::Server, &header).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(code, TOO_BIG);
    // Fragments that are each small but together too big.
    let mut bytes = raw_frame(Role::Server, false, BINARY, &vec![0; MAX / 2]);
    bytes.extend(raw_frame(
        Role::Server,
        false,
        CONTINUATION,
        &vec![0; MAX / 2],
    ));
    bytes.extend(raw_frame(Role::Server, true, CONTINUATION, &[0]));
    let (seen, code) = violation(Role::Server, &bytes).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(code, TOO_BIG);
    // A message of exactly the limit is fine.
    let (mut stream, _sink, mut theirs) = raw(Role::Server);
    theirs
        .write_all(&raw_frame(Role::Server, true, BINARY, &vec![5; MAX]))
        .await
        .unwrap();
    assert_eq!(
        stream.next().await,
        Some(Frame::Binary(vec![5; MAX].into()))
    );
}

#[tokio::test]
async fn a_close_from_the_peer_is_answered_once_handed_out_and_ends_the_stream() {
    for role in [Role::Server, Role::Client] {
        let (mut stream, mut sink, mut peer) = pair(role).await;
        peer.close(Some(CloseFrame {
            code: 1001.into(),
            reason: "going away".into(),
        }))
        .await
        .unwrap();
        assert_eq!(
            stream.next().await,
            Some(Frame::Close(Some((1001, "going away".into()))))
        );
        assert_eq!(stream.next().await, None);
        // Our reply went out with the read; the bridge's own close after it changes nothing.
        sink.send(Frame::Close(Some((1000, "call ended".into()))))
            .await
            .unwrap();
        assert!(sink.send(Frame::text("late".into())).await.is_err());
        let _ = sink.close().await;
        let mut replies = Vec::new();
        while let Some(Ok(message)) = peer.next().await {
            replies.push(message);
        }
        assert_eq!(replies.len(), 1, "{replies:?}");
        let Message::Close(Some(reply)) = &replies[0] else {
            panic!("{replies:?}");
        };
        assert_eq!(u16::from(reply.code), 1001);
    }
}

#[tokio::test]
async fn a_close_we_send_is_answered_by_the_peer_and_ends_our_stream() {
    for role in [Role::Server, Role::Client] {
        let (mut stream, mut sink, mut peer) = pair(role).await;
        sink.send(Frame::Close(Some((1000, "call ended".into()))))
            .await
            .unwrap();
        let Some(Ok(Message::Close(Some(close)))) = peer.next().await else {
            panic!("the peer did not see our close");
        };
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (1000, "call ended")
        );
        // tungstenite replies on its next read (or flush).
        let _ = peer.flush().await;
        assert_eq!(
            stream.next().await,
            Some(Frame::Close(Some((1000, "call ended".into()))))
        );
        assert_eq!(stream.next().await, None);
    }
}

#[tokio::test]
async fn closing_the_sink_sends_a_normal_close_and_shuts_down() {
    let (_stream, mut sink, theirs) = raw(Role::Server);
    sink.close().await.unwrap();
    // The close and then the end of the stream: the write side was shut down.
    let out = written(theirs).await;
    assert_eq!(close_code(&out), NORMAL);
    assert_eq!(out.len(), 4, "{out:?}");
}

/// A stream that counts its writes.
struct CountWrites<S> {
    inner: S,
    writes: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn frames_fed_together_leave_in_order_in_one_write_on_flush() {
    for role in [Role::Server, Role::Client] {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = CountWrites {
            inner: ours,
            writes: writes.clone(),
        };
        let (_stream, mut sink) = frames(counted, role, &[], MAX);
        let mut peer = WebSocketStream::from_raw_socket(theirs, peer_role(role), None).await;
        // The bridge's batch: 16 Media Stream frames of about 350 bytes.
        let sent: Vec<String> = (0..16)
            .map(|i| format!("{i:02}{}", "m".repeat(348)))
            .collect();
        for text in &sent {
            sink.feed(Frame::text(text.clone())).await.unwrap();
        }
        assert_eq!(writes.load(Ordering::Relaxed), 0, "feed wrote");
        sink.flush().await.unwrap();
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        for text in &sent {
            assert_eq!(
                peer.next().await.unwrap().unwrap(),
                Message::text(text.clone())
            );
        }
    }
}

#[tokio::test]
async fn bytes_read_past_the_handshake_are_parsed_first() {
    for role in [Role::Server, Role::Client] {
        let mut leftover = raw_frame(role, true, TEXT, b"first");
        let second = raw_frame(role, true, TEXT, b"second");
        // The second frame split between the leftover and the socket.
        leftover.extend_from_slice(&second[..3]);
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let (mut stream, _sink) = frames(ours, role, &leftover, MAX);
        theirs.write_all(&second[3..]).await.unwrap();
        assert_eq!(
            stream.next().await,
            Some(Frame::Text(Bytes::from_static(b"first")))
        );
        assert_eq!(
            stream.next().await,
            Some(Frame::Text(Bytes::from_static(b"second")))
        );
    }
}

#[tokio::test]
async fn a_sink_used_again_after_an_error_fails_again_without_panicking() {
    let (ours, theirs) = tokio::io::duplex(64);
    let (_stream, mut sink) = frames(ours, Role::Client, &[], MAX);
    drop(theirs);
    let mut failures = 0;
    for _ in 0..3 {
        if sink.send(Frame::text("x".repeat(256))).await.is_err() {
            failures += 1;
        }
    }
    assert!(failures >= 2, "{failures}");
    assert!(sink.send(Frame::Close(None)).await.is_err());
    assert!(sink.close().await.is_err());
}

#[tokio::test]
async fn a_peer_that_stops_reading_holds_back_the_sink() {
    let (ours, _theirs) = tokio::io::duplex(1024);
    let (_stream, mut sink) = frames(ours, Role::Server, &[], MAX);
    let mut fed = 0;
    let filled = tokio::time::timeout(std::time::Duration::from_millis(300), async {
        loop {
            sink.feed(Frame::text("y".repeat(500))).await.unwrap();
            fed += 1;
        }
    })
    .await;
    assert!(filled.is_err());
    // The duplex takes 1 KiB; the rest waits in our buffer, which stays near its threshold.
    assert!(fed * 502 < 1024 + WRITE_BUFFER + 1024, "{fed} frames fed");
}

/// Frames as a peer of `role` might send them, valid or damaged.
fn hostile_input(rng: &mut StdRng, role: Role) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(0..6) {
        let opcode =
            [TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE, 0x3, 0xB][rng.random_range(0..8)];
        let payload = match rng.random_range(0..4) {
            0 => props::random_text(rng, &["{\"event\":\"media\"}"], 40).into_bytes(),
            1 => props::random_bytes(rng, 200),
            2 => vec![b'z'; rng.random_range(120..300)],
            _ => 1000u16.to_be_bytes().to_vec(),
        };
        // Usually as the peer must send it, sometimes masked the wrong way.
        let sender = if rng.random_bool(0.9) {
            role
        } else if role == Role::Server {
            Role::Client
        } else {
            Role::Server
        };
        out.extend(raw_frame(sender, rng.random_bool(0.7), opcode, &payload));
    }
    match rng.random_range(0..4) {
        0 => props::random_bytes(rng, 300),
        1 => props::mutate_bytes(rng, &out),
        _ => out,
    }
}

/// Everything our reader yields for `input` followed by the end of the stream.
fn read_all(role: Role, input: &[u8]) -> Vec<Frame> {
    let (ours, theirs) = tokio::io::duplex(1024);
    drop(theirs);
    let (mut stream, _sink) = frames(ours, role, input, MAX);
    let mut out = Vec::new();
    // The peer is gone, so nothing is ever pending: each poll is ready.
    while let Some(Some(frame)) = stream.next().now_or_never() {
        out.push(frame);
    }
    out
}

#[test]
fn arbitrary_input_never_panics_the_reader() {
    for (seed, role) in [(0x5753_0001, Role::Server), (0x5753_0002, Role::Client)] {
        props::check(
            seed,
            props::cases(),
            |rng| props::Lossy(hostile_input(rng, role)),
            |input| {
                for frame in read_all(role, &input.0) {
                    if let Frame::Text(text) = frame {
                        assert!(std::str::from_utf8(&text).is_ok());
                    }
                }
            },
        );
    }
}

/// A message sequence for the round trips: text and binary of every length class (up to the
/// 16-bit length field and past it), ending with a close.
fn messages(rng: &mut StdRng) -> Vec<Frame> {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(0..8) {
        let len = match rng.random_range(0..6) {
            0 => rng.random_range(0..126),
            1 => rng.random_range(120..130),
            2 => rng.random_range(126..4000),
            3 => rng.random_range(65_530..=MAX),
            _ => rng.random_range(0..600),
        };
        if rng.random_bool(0.5) {
            let mut text = props::random_text(rng, &["{\"media\":", "é", "😀"], len);
            while text.len() > MAX {
                text.pop();
            }
            out.push(Frame::text(text));
        } else {
            out.push(Frame::Binary(
                (0..len).map(|_| rng.random()).collect::<Vec<u8>>().into(),
            ));
        }
    }
    let code = [1000, 1001, 1011, 4000][rng.random_range(0..4)];
    out.push(Frame::Close(Some((code, props::random_text(rng, &[], 20)))));
    out
}

fn to_message(frame: &Frame) -> Message {
    match frame {
        Frame::Text(t) => Message::text(std::str::from_utf8(t).unwrap()),
        Frame::Binary(b) => Message::Binary(b.clone()),
        Frame::Close(c) => Message::Close(c.as_ref().map(|(code, reason)| CloseFrame {
            code: (*code).into(),
            reason: reason.as_str().into(),
        })),
    }
}

/// What a close's reason becomes once it has gone through a frame (at most 123 bytes).
fn as_sent(frame: &Frame) -> Frame {
    match frame {
        Frame::Close(Some((code, reason))) => {
            let mut reason = reason.clone();
            while reason.len() > MAX_CONTROL - 2 {
                reason.pop();
            }
            Frame::Close(Some((*code, reason)))
        }
        other => other.clone(),
    }
}

#[test]
fn message_sequences_round_trip_with_tungstenite_in_both_directions_and_roles() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = tprotocol::WebSocketConfig::default()
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    for (seed, role) in [(0x5753_0003, Role::Server), (0x5753_0004, Role::Client)] {
        props::check(seed, (props::cases() / 10).max(1), messages, |sent| {
            runtime.block_on(async {
                // Ours → tungstenite.
                let (ours, theirs) = tokio::io::duplex(16 * 1024);
                let (_stream, mut sink) = frames(ours, role, &[], MAX);
                let mut peer =
                    WebSocketStream::from_raw_socket(theirs, peer_role(role), Some(config)).await;
                let writing = async {
                    for frame in sent {
                        sink.feed(frame.clone()).await.unwrap();
                    }
                    sink.flush().await.unwrap();
                };
                let reading = async {
                    let mut got = Vec::new();
                    for _ in sent {
                        got.push(peer.next().await.unwrap().unwrap());
                    }
                    got
                };
                let ((), got) = tokio::join!(writing, reading);
                let expected: Vec<Message> = sent.iter().map(|f| to_message(&as_sent(f))).collect();
                assert_eq!(got, expected);

                // Tungstenite → ours.
                let (ours, theirs) = tokio::io::duplex(16 * 1024);
                let (mut stream, _sink) = frames(ours, role, &[], MAX);
                let mut peer =
                    WebSocketStream::from_raw_socket(theirs, peer_role(role), Some(config)).await;
                let writing = async {
                    for frame in sent {
                        peer.feed(to_message(&as_sent(frame))).await.unwrap();
                    }
                    peer.flush().await.unwrap();
                };
                let reading = async {
                    let mut got = Vec::new();
                    while let Some(frame) = stream.next().await {
                        got.push(frame);
                    }
                    got
                };
                let ((), got) = tokio::join!(writing, reading);
                let expected: Vec<Frame> = sent.iter().map(as_sent).collect();
                assert_eq!(got, expected);
            });
        });
    }
}

#[test]
fn masking_matches_a_byte_at_a_time_at_every_offset() {
    let key = [0x12, 0x34, 0x56, 0x78];
    let data: Vec<u8> = (0..37).collect();
    for offset in 0..8 {
        let mut fast = data.clone();
        apply_mask(&mut fast, key, offset);
        let slow: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[(i + offset) % 4])
            .collect();
        assert_eq!(fast, slow, "offset {offset}");
    }
}

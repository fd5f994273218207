//! The generator's Twilio: the Calls REST API as the dialer uses it (create, fetch, hang up,
//! list), status callbacks signed with `X-Twilio-Signature`, and for each answered call the
//! signed `<Connect><Stream>` WebSocket carrying the call's token as its `<Parameter>`, as
//! twilio.md describes them.
//!
//! It is not `sim::twilio`: that simulator keeps every byte of audio a call received and runs a
//! speaking callee, which at a thousand calls would cost more than the dialer under test. Here
//! a call answers at once, and its callee sends a 20 ms frame every 20 ms that says when it was
//! sent. One ticker task writes every call's frames (a call's frames go out in its own 1 ms
//! slot of the 20 ms cycle, so the calls are spread evenly), and each call's task reads what
//! the dialer sends back and checks it bit for bit.

use crate::audio::{self, FRAME_B64, Stamp};
use crate::wire::{self, OP_CLOSE, OP_PING, OP_TEXT};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use sha1::Sha1;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const AUTH_TOKEN: &str = "load-bench-twilio-token";
pub(crate) const FROM: &str = "+15005550006";

/// Sent frames remembered per call, to check an echo against: 10 s at 50 frames/s.
const RING: usize = 512;
/// Slots of the 20 ms cycle (one per millisecond).
const SLOTS: usize = 20;

/// Everything the coordinator reads and sets.
pub(crate) struct TwilioShared {
    pub epoch: Instant,
    /// Frames sent inside `[window_start, window_end)` have their round trip recorded.
    pub window_start: AtomicU64,
    pub window_end: AtomicU64,
    /// Callees send audio while this is set.
    pub sending: AtomicBool,
    pub created: AtomicUsize,
    /// Calls that heard the agent's greeting: the whole path is up.
    pub greeted: AtomicUsize,
    /// Streams the dialer closed, or that broke, before the callee hung up.
    pub dropped: AtomicUsize,
    /// Requests or callbacks that went wrong.
    pub errors: Mutex<Vec<String>>,
    /// Cancelled to hang every call up (the callee's side).
    pub hang_up_all: CancellationToken,
    calls: Mutex<HashMap<String, CallEntry>>,
    media: Mutex<Vec<Arc<CallMedia>>>,
    ticker: mpsc::UnboundedSender<Arc<CallMedia>>,
    http: reqwest::Client,
}

struct CallEntry {
    to: String,
    status: &'static str,
    created: String,
    hang_up: CancellationToken,
}

impl TwilioShared {
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn error(&self, what: String) {
        let mut errors = lock(&self.errors);
        if errors.len() < 20 {
            errors.push(what);
        }
    }

    /// Every call's media state, for the figures.
    pub(crate) fn media(&self) -> Vec<Arc<CallMedia>> {
        lock(&self.media).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One call's stream, shared by the ticker (which writes) and the call's task (which reads).
pub(crate) struct CallMedia {
    pub index: u32,
    pub state: Mutex<MediaState>,
}

pub(crate) struct MediaState {
    writer: Option<OwnedWriteHalf>,
    /// Bytes the socket did not take yet.
    pending: Vec<u8>,
    stream_sid: String,
    next_seq: u32,
    message_seq: u64,
    ring: Box<[(u32, u64, bool)]>,
    pub start_sent_ns: u64,
    /// When the greeting arrived: start → first agent audio.
    pub first_audio_ns: Option<u64>,
    /// Frames from this one on must all come back.
    pub counted_from: Option<u32>,
    pub received: u64,
    pub corrupted: u64,
    pub duplicates: u64,
    /// Echoes of frames sent before the agent was ready (the bridge may drop those).
    pub early: u64,
    /// Times the socket would not take a whole frame at once.
    pub backpressure: u64,
    pub rtts: Vec<u64>,
    /// The stream ended; `hung_up` when it was the callee's doing.
    pub closed: bool,
    pub hung_up: bool,
}

impl MediaState {
    pub(crate) fn sent(&self) -> u32 {
        self.next_seq
    }

    /// Frames that had to come back and did not.
    pub(crate) fn lost(&self) -> u64 {
        match self.counted_from {
            Some(from) => u64::from(self.next_seq - from).saturating_sub(self.received),
            None => 0,
        }
    }
}

/// Serve the REST API and run the ticker until `stop`.
pub(crate) async fn start(
    epoch: Instant,
    stop: CancellationToken,
) -> std::io::Result<(std::net::SocketAddr, Arc<TwilioShared>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(TwilioShared {
        epoch,
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        sending: AtomicBool::new(true),
        created: AtomicUsize::new(0),
        greeted: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
        hang_up_all: CancellationToken::new(),
        calls: Mutex::new(HashMap::new()),
        media: Mutex::new(Vec::new()),
        ticker: tx,
        http: reqwest::Client::builder()
            .user_agent("TwilioProxy/1.1")
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(std::io::Error::other)?,
    });
    tokio::spawn(ticker(shared.clone(), rx, stop.clone()));
    let s = shared.clone();
    tokio::spawn(async move {
        loop {
            let socket = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(_) => continue,
                },
            };
            let s = s.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| rest(s.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok((addr, shared))
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Reply {
    reply(
        status,
        serde_json::json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status.as_u16()}),
    )
}

fn rfc2822(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

fn resource(sid: &str, e: &CallEntry) -> serde_json::Value {
    serde_json::json!({
        "sid": sid, "account_sid": ACCOUNT_SID, "to": e.to, "from": FROM, "status": e.status,
        "direction": "outbound-api", "api_version": "2010-04-01", "answered_by": null,
        "date_created": e.created, "date_updated": rfc2822(chrono::Utc::now()),
        "start_time": null, "end_time": null, "duration": null, "price": null,
        "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json"),
    })
}

async fn rest(
    shared: Arc<TwilioShared>,
    req: Request<Incoming>,
) -> Result<Reply, std::convert::Infallible> {
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
    );
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == basic.as_bytes());
    if !authorized {
        return Ok(twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authenticate",
        ));
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(twilio_error(StatusCode::BAD_REQUEST, 20001, "bad body")),
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(rest) = path.strip_prefix(&format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls")) else {
        return Ok(twilio_error(StatusCode::NOT_FOUND, 20404, "not found"));
    };
    Ok(match (method.as_str(), rest) {
        ("POST", ".json") => create(
            &shared,
            &form,
            get("To"),
            get("Twiml"),
            get("StatusCallback"),
        ),
        ("GET", ".json") => {
            let to: Option<String> = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "To")
                .map(|(_, v)| v.into_owned());
            let calls = lock(&shared.calls);
            let list: Vec<serde_json::Value> = calls
                .iter()
                .filter(|(_, e)| to.as_deref().is_none_or(|t| t == e.to))
                .map(|(sid, e)| resource(sid, e))
                .collect();
            reply(
                StatusCode::OK,
                serde_json::json!({"calls": list, "page": 0, "page_size": 50, "next_page_uri": null}),
            )
        }
        (m, sid_json) if sid_json.starts_with('/') && sid_json.ends_with(".json") => {
            let sid = &sid_json[1..sid_json.len() - 5];
            let mut calls = lock(&shared.calls);
            let Some(entry) = calls.get_mut(sid) else {
                return Ok(twilio_error(
                    StatusCode::NOT_FOUND,
                    20404,
                    "The requested resource was not found",
                ));
            };
            if m == "POST" && matches!(get("Status"), Some("completed" | "canceled")) {
                if entry.status == "completed" {
                    return Ok(twilio_error(
                        StatusCode::BAD_REQUEST,
                        21220,
                        "Call is not in-progress. Cannot redirect.",
                    ));
                }
                entry.hang_up.cancel();
            }
            reply(StatusCode::OK, resource(sid, entry))
        }
        _ => twilio_error(StatusCode::NOT_FOUND, 20404, "not found"),
    })
}

/// `<Stream url="…">` and its `<Parameter>`s, from the inline TwiML.
fn stream_of(twiml: &str) -> Option<(String, Vec<(String, String)>)> {
    let attr = |s: &str, name: &str| -> Option<String> {
        let start = s.find(&format!("{name}=\""))? + name.len() + 2;
        let len = s[start..].find('"')?;
        Some(unescape(&s[start..start + len]))
    };
    let at = twiml.find("<Stream ")?;
    let stream = &twiml[at..];
    let url = attr(stream, "url")?;
    let end = stream.find("</Stream>").unwrap_or(stream.len());
    let params = stream[..end]
        .split("<Parameter ")
        .skip(1)
        .filter_map(|p| Some((attr(p, "name")?, attr(p, "value")?)))
        .collect();
    Some((url, params))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn create(
    shared: &Arc<TwilioShared>,
    form: &[(String, String)],
    to: Option<&str>,
    twiml: Option<&str>,
    status_callback: Option<&str>,
) -> Reply {
    let (Some(to), Some(twiml)) = (to, twiml) else {
        return twilio_error(StatusCode::BAD_REQUEST, 21201, "No 'To' or 'Twiml' given");
    };
    let Some((stream_url, params)) = stream_of(twiml) else {
        return twilio_error(StatusCode::BAD_REQUEST, 12100, "Document parse failure");
    };
    let events: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "StatusCallbackEvent")
        .map(|(_, v)| v.clone())
        .collect();
    let index = shared.created.fetch_add(1, Ordering::SeqCst) as u32;
    let sid = format!("CA{:032x}", rand::random::<u128>());
    let hang_up = shared.hang_up_all.child_token();
    let entry = CallEntry {
        to: to.to_string(),
        status: "queued",
        created: rfc2822(chrono::Utc::now()),
        hang_up: hang_up.clone(),
    };
    let body = resource(&sid, &entry);
    lock(&shared.calls).insert(sid.clone(), entry);
    let call = Call {
        shared: shared.clone(),
        index,
        sid,
        to: to.to_string(),
        status_callback: status_callback.map(str::to_string),
        events,
        stream_url,
        params,
        sequence: 0,
    };
    tokio::spawn(call.run(hang_up));
    reply(StatusCode::CREATED, body)
}

struct Call {
    shared: Arc<TwilioShared>,
    index: u32,
    sid: String,
    to: String,
    status_callback: Option<String>,
    events: Vec<String>,
    stream_url: String,
    params: Vec<(String, String)>,
    sequence: u32,
}

impl Call {
    async fn run(mut self, hang_up: CancellationToken) {
        let answered_at = Instant::now();
        self.callback("initiated", "initiated").await;
        self.set_status("ringing");
        self.callback("ringing", "ringing").await;
        self.set_status("in-progress");
        self.callback("answered", "in-progress").await;
        match self.stream(&hang_up).await {
            Ok(()) => {}
            Err(_) if hang_up.is_cancelled() => {}
            Err(e) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                self.shared.error(format!("call {}: {e}", self.index));
            }
        }
        self.set_status("completed");
        let secs = answered_at.elapsed().as_secs().max(1);
        self.callback_with(
            "completed",
            "completed",
            &[
                ("CallDuration", secs.to_string()),
                ("Duration", secs.div_ceil(60).to_string()),
                ("SipResponseCode", "200".into()),
            ],
        )
        .await;
    }

    fn set_status(&self, status: &'static str) {
        if let Some(e) = lock(&self.shared.calls).get_mut(&self.sid) {
            e.status = status;
        }
    }

    async fn callback(&mut self, event: &str, status: &str) {
        self.callback_with(event, status, &[]).await;
    }

    async fn callback_with(&mut self, event: &str, status: &str, extra: &[(&str, String)]) {
        // Without StatusCallbackEvent only `completed` is sent.
        let wanted = self.events.iter().any(|e| e == event) || event == "completed";
        let Some(url) = self.status_callback.clone().filter(|_| wanted) else {
            return;
        };
        let mut params: Vec<(&str, String)> = vec![
            ("AccountSid", ACCOUNT_SID.into()),
            ("ApiVersion", "2010-04-01".into()),
            ("CallSid", self.sid.clone()),
            ("CallStatus", status.into()),
            ("CallbackSource", "call-progress-events".into()),
            ("Direction", "outbound-api".into()),
            ("From", FROM.into()),
            ("SequenceNumber", self.sequence.to_string()),
            ("Timestamp", rfc2822(chrono::Utc::now())),
            ("To", self.to.clone()),
        ];
        params.extend(extra.iter().cloned());
        self.sequence += 1;
        let signature = sign(&url, &params);
        let sent = self
            .shared
            .http
            .post(&url)
            .header("X-Twilio-Signature", signature)
            .form(&params)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => self
                .shared
                .error(format!("{status} callback answered {}", r.status())),
            Err(e) => self.shared.error(format!("{status} callback failed: {e}")),
        }
    }

    /// Open the stream, hand its writing to the ticker, and read what the dialer sends back
    /// until the callee hangs up (or the dialer closes the stream).
    async fn stream(&self, hang_up: &CancellationToken) -> Result<(), String> {
        if hang_up.is_cancelled() {
            return Ok(());
        }
        let rest = self
            .stream_url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("stream URL {} is not ws:// on loopback", self.stream_url))?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut socket = TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = socket.set_nodelay(true);
        let key = STANDARD.encode(rand::random::<[u8; 16]>());
        // Signed over the URL as the TwiML wrote it, with no parameters.
        let signature = sign(&self.stream_url, &[]);
        let request = format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nX-Twilio-Signature: {signature}\r\nUser-Agent: Twilio.TmeWs/1.0\r\n\r\n"
        );
        socket
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut buf = Vec::with_capacity(16 * 1024);
        let head_len = wire::read_head(&mut socket, &mut buf)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        if !head.starts_with("HTTP/1.1 101")
            || wire::header(&head, "sec-websocket-accept") != Some(&wire::accept_key(&key))
        {
            return Err(format!(
                "handshake refused: {}",
                head.lines().next().unwrap_or_default()
            ));
        }
        buf.drain(..head_len);

        let stream_sid = format!("MZ{:032x}", rand::random::<u128>());
        let custom: serde_json::Map<String, serde_json::Value> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let start = serde_json::json!({
            "event": "start", "sequenceNumber": "1",
            "start": {
                "accountSid": ACCOUNT_SID, "streamSid": stream_sid, "callSid": self.sid,
                "tracks": ["inbound"], "customParameters": custom,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        });
        let mut out = Vec::new();
        wire::put_frame(
            &mut out,
            OP_TEXT,
            br#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
            true,
        );
        wire::put_frame(&mut out, OP_TEXT, start.to_string().as_bytes(), true);
        socket
            .write_all(&out)
            .await
            .map_err(|e| format!("start: {e}"))?;
        let start_sent_ns = self.shared.now_ns();

        let (mut reader, writer) = socket.into_split();
        let media = Arc::new(CallMedia {
            index: self.index,
            state: Mutex::new(MediaState {
                writer: Some(writer),
                pending: Vec::new(),
                stream_sid,
                next_seq: 0,
                message_seq: 2,
                ring: vec![(u32::MAX, 0, false); RING].into_boxed_slice(),
                start_sent_ns,
                first_audio_ns: None,
                counted_from: None,
                received: 0,
                corrupted: 0,
                duplicates: 0,
                early: 0,
                backpressure: 0,
                rtts: Vec::new(),
                closed: false,
                hung_up: false,
            }),
        });
        lock(&self.shared.media).push(media.clone());
        let _ = self.shared.ticker.send(media.clone());

        let result = tokio::select! {
            r = read_echoes(&self.shared, &media, &mut reader, buf) => r,
            () = hang_up.cancelled() => Ok(()),
        };
        let writer = {
            let mut st = lock(&media.state);
            st.hung_up = result.is_ok();
            st.closed = true;
            let stop = format!(
                r#"{{"event":"stop","sequenceNumber":"{}","stop":{{"accountSid":"{ACCOUNT_SID}","callSid":"{}"}},"streamSid":"{}"}}"#,
                st.message_seq, self.sid, st.stream_sid
            );
            let mut tail = std::mem::take(&mut st.pending);
            wire::put_frame(&mut tail, OP_TEXT, stop.as_bytes(), true);
            wire::put_close(&mut tail, 1000, true);
            st.writer.take().map(|w| (w, tail))
        };
        if let Some((mut w, tail)) = writer
            && result.is_ok()
        {
            // The callee hung up: `stop`, then the socket closes (the dialer answers the
            // close or simply drops it).
            let _ = w.write_all(&tail).await;
            let mut scratch = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Ok(n) = reader.read(&mut scratch).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        result
    }
}

/// `X-Twilio-Signature`: HMAC-SHA1 of the URL followed by each parameter's name and value in
/// name order, keyed with the Auth Token (twilio.md §5.1).
fn sign(url: &str, params: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.cmp(&b.1)));
    let mut mac = Hmac::<Sha1>::new_from_slice(AUTH_TOKEN.as_bytes()).expect("any key");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Read the dialer's frames and check every echo; `Err` when the stream ended other than by
/// the callee hanging up.
async fn read_echoes(
    shared: &TwilioShared,
    media: &CallMedia,
    reader: &mut OwnedReadHalf,
    mut buf: Vec<u8>,
) -> Result<(), String> {
    let mut filled = buf.len();
    buf.resize(16 * 1024, 0);
    loop {
        let mut at = 0;
        while let Some((op, range, len)) = wire::parse_frame(&mut buf[at..filled]) {
            let payload = &buf[at + range.start..at + range.end];
            match op {
                OP_TEXT => on_text(shared, media, payload),
                OP_CLOSE => return Err("the dialer closed the stream".into()),
                OP_PING => {}
                _ => {}
            }
            at += len;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if filled == buf.len() {
            return Err("a frame larger than the read buffer".into());
        }
        let n = reader
            .read(&mut buf[filled..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the stream broke".into());
        }
        filled += n;
    }
}

fn on_text(shared: &TwilioShared, media: &CallMedia, json: &[u8]) {
    let now = shared.now_ns();
    if wire::find(json, br#""event":"media""#).is_none() {
        // mark or clear: the echo agent never asks for either.
        return;
    }
    let stamp = wire::string_after(json, br#""payload":""#).and_then(audio::decode);
    let mut st = lock(&media.state);
    let Some(stamp) = stamp else {
        st.corrupted += 1;
        return;
    };
    if stamp.call == audio::GREETING {
        if st.first_audio_ns.is_none() {
            st.first_audio_ns = Some(now);
            st.counted_from = Some(st.next_seq);
            shared.greeted.fetch_add(1, Ordering::SeqCst);
        }
        return;
    }
    let slot = &mut st.ring[stamp.seq as usize % RING];
    if stamp.call != media.index || slot.0 != stamp.seq || slot.1 != stamp.sent_ns {
        st.corrupted += 1;
        return;
    }
    if slot.2 {
        st.duplicates += 1;
        return;
    }
    slot.2 = true;
    if st.counted_from.is_none_or(|from| stamp.seq < from) {
        st.early += 1;
        return;
    }
    st.received += 1;
    let start = shared.window_start.load(Ordering::Relaxed);
    let end = shared.window_end.load(Ordering::Relaxed);
    if stamp.sent_ns >= start && stamp.sent_ns < end {
        st.rtts.push(now - stamp.sent_ns);
    }
}

/// Writes every call's frames: each call in one millisecond slot of the 20 ms cycle.
async fn ticker(
    shared: Arc<TwilioShared>,
    mut new_calls: mpsc::UnboundedReceiver<Arc<CallMedia>>,
    stop: CancellationToken,
) {
    let mut slots: Vec<Vec<Arc<CallMedia>>> = (0..SLOTS).map(|_| Vec::new()).collect();
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut json = Vec::with_capacity(512);
    let mut b64 = [0u8; FRAME_B64];
    let mut tick = 0usize;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        while let Ok(call) = new_calls.try_recv() {
            let fewest = (0..SLOTS)
                .min_by_key(|&s| slots[s].len())
                .expect("there are slots");
            slots[fewest].push(call);
        }
        let sending = shared.sending.load(Ordering::Relaxed);
        slots[tick % SLOTS].retain(|call| {
            let mut st = lock(&call.state);
            if st.closed {
                return false;
            }
            if sending {
                let seq = st.next_seq;
                st.next_seq += 1;
                let sent_ns = shared.now_ns();
                audio::encode(
                    Stamp {
                        call: call.index,
                        seq,
                        sent_ns,
                    },
                    &mut b64,
                );
                st.ring[seq as usize % RING] = (seq, sent_ns, false);
                json.clear();
                let chunk = u64::from(seq) + 1;
                let _ = write!(
                    json,
                    r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":""#,
                    st.message_seq,
                    (chunk - 1) * 20
                );
                json.extend_from_slice(&b64);
                json.extend_from_slice(br#""},"streamSid":""#);
                json.extend_from_slice(st.stream_sid.as_bytes());
                json.extend_from_slice(br#""}"#);
                st.message_seq += 1;
                wire::put_frame(&mut st.pending, OP_TEXT, &json, true);
            }
            if !st.pending.is_empty() {
                let st = &mut *st;
                let Some(writer) = st.writer.as_ref() else {
                    return false;
                };
                match writer.try_write(&st.pending) {
                    Ok(n) if n == st.pending.len() => st.pending.clear(),
                    Ok(n) => {
                        st.pending.drain(..n);
                        st.backpressure += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => st.backpressure += 1,
                    Err(_) => return false,
                }
            }
            true
        });
        tick += 1;
    }
}

//! The call API under `/api/`: JSON in and out, every request authenticated with
//! `Authorization: Bearer <DIALER_API_KEY>` and rate-limited per key. Calls are placed and
//! followed by the [`Desk`]; each call's events are served live as Server-Sent Events, every
//! event carrying its index as `id:` so that a client resumes with `Last-Event-ID`.
//! Every answer under `/api/`, errors included, is `{"error":{"code","message"}}` JSON.

use super::auth::{self, RateLimiter};
use super::desk::{Desk, PlaceError};
use crate::call::dialer::{CallSnapshot, Dialer};
use crate::call::journal::CallRecord;
use crate::call::wire::{CallList, CallState, CallView, ErrorBody, ErrorDetail, NewCallBody};
use crate::events::CallEvent;
use crate::phone::E164;
use crate::secret::Secret;
use bytes::{Buf, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::{Filter, Rejection, Reply};

/// Largest request body: a call request is a few kilobytes at most.
const MAX_BODY: usize = 64 * 1024;
/// A comment line this often keeps proxies and clients from taking a quiet call for a dead
/// connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What a client over the live-call limit is told to wait.
const FULL_RETRY: Duration = Duration::from_secs(5);

/// The call API, once `serve` has enabled it; the server answers 404 under `/api/` until then.
pub(crate) type ApiSlot = Arc<OnceLock<Arc<Api>>>;

/// What the API's handlers share.
pub(crate) struct Api {
    desk: Desk,
    metrics: Arc<crate::metrics::Metrics>,
    /// `None`: no key is required (only allowed on a loopback address).
    key: Option<Secret>,
    limiter: RateLimiter,
}

impl Api {
    pub(crate) fn new(
        desk: Desk,
        metrics: Arc<crate::metrics::Metrics>,
        key: Option<Secret>,
        rate_per_minute: u32,
    ) -> Self {
        Self {
            desk,
            metrics,
            key,
            limiter: RateLimiter::new(rate_per_minute),
        }
    }

    pub(crate) fn desk(&self) -> &Desk {
        &self.desk
    }
}

pub(super) fn routes(
    slot: ApiSlot,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path("api")
        .and(warp::method())
        .and(warp::path::tail())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::body::stream())
        .and_then(
            move |method: Method,
                  tail: warp::path::Tail,
                  headers: HeaderMap,
                  query: String,
                  body| {
                let slot = slot.clone();
                async move {
                    let request = Request {
                        method,
                        path: tail.as_str().to_string(),
                        headers,
                        query,
                    };
                    let metrics = slot.get().map(|api| api.metrics.clone());
                    let response = handle(slot, request, body).await;
                    if let Some(metrics) = metrics {
                        metrics.api_request(response.status().as_u16());
                    }
                    Ok::<_, Rejection>(response)
                }
            },
        )
}

struct Request {
    method: Method,
    path: String,
    headers: HeaderMap,
    query: String,
}

impl Request {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn handle<S, B>(slot: ApiSlot, req: Request, body: S) -> warp::reply::Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
    B: Buf,
{
    let Some(api) = slot.get().cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server has no call API",
        );
    };
    let presented = req.header(header::AUTHORIZATION);
    if let Some(key) = &api.key
        && !auth::is_authorized(presented, key)
    {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the server's DIALER_API_KEY as Authorization: Bearer <key>",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    // Without a key every client shares one bucket, so a changing header buys no requests.
    let who = match &api.key {
        Some(_) => presented.unwrap_or_default(),
        None => "",
    };
    if let Err(wait) = api.limiter.take(who, Instant::now()) {
        return retry_after(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this key; wait and try again",
            ),
            wait,
        );
    }
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    match (segments.as_slice(), &req.method) {
        (["calls"], &Method::GET) => list(&api, &req.query).await,
        (["calls"], &Method::POST) => match read_body(body).await {
            Ok(bytes) => create(&api, &bytes).await,
            Err(r) => r,
        },
        (["calls", sid], &Method::GET) => show(&api, sid).await,
        (["calls", sid], &Method::DELETE) => hang_up(&api, sid).await,
        (["calls", sid, "events"], &Method::GET) => events(&api, sid, &req),
        (["calls"] | ["calls", _] | ["calls", _, "events"], _) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed on /api/{}", req.method, req.path),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route; the call API is /api/calls",
        ),
    }
}

/// The body, refused past [`MAX_BODY`] whatever its `Content-Length` says.
async fn read_body<S, B>(mut body: S) -> Result<BytesMut, warp::reply::Response>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
    B: Buf,
{
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            )
        })?;
        if out.len() + chunk.remaining() > MAX_BODY {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "a call request is at most 64 KiB",
            ));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            let n = piece.len();
            out.extend_from_slice(piece);
            chunk.advance(n);
        }
    }
    Ok(out)
}

async fn create(api: &Api, bytes: &[u8]) -> warp::reply::Response {
    let body: NewCallBody = match serde_json::from_slice(bytes) {
        Ok(b) => b,
        Err(e) if e.is_data() => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("the call request does not fit the API: {e}"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                &format!("the body is not valid JSON: {e}"),
            );
        }
    };
    match api.desk.place(body).await {
        Ok(record) => {
            let view = record.view(false);
            let location = format!("/api/calls/{}", view.sid);
            let mut r = json(StatusCode::CREATED, &view);
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => place_error(e),
    }
}

fn place_error(e: PlaceError) -> warp::reply::Response {
    let message = e.to_string();
    let detail = |code: &str| ErrorDetail {
        code: code.to_string(),
        message: message.clone(),
        twilio_code: None,
        transient: false,
        outcome: None,
    };
    match e {
        PlaceError::Refused { code, .. } => {
            json(StatusCode::UNPROCESSABLE_ENTITY, &body(detail(code)))
        }
        PlaceError::NotPlaced(outcome) => {
            let twilio_code = outcome
                .error
                .as_ref()
                .and_then(|e| e.code.as_deref())
                .and_then(|c| c.parse().ok());
            let d = ErrorDetail {
                twilio_code,
                outcome: Some(outcome),
                ..detail("not_callable")
            };
            json(StatusCode::UNPROCESSABLE_ENTITY, &body(d))
        }
        PlaceError::Conflict(_) => json(StatusCode::CONFLICT, &body(detail("already_live"))),
        PlaceError::Full(_) => retry_after(
            json(
                StatusCode::TOO_MANY_REQUESTS,
                &body(detail("too_many_calls")),
            ),
            FULL_RETRY,
        ),
        PlaceError::Unavailable { code, .. } => {
            let d = ErrorDetail {
                transient: true,
                ..detail(code)
            };
            json(StatusCode::SERVICE_UNAVAILABLE, &body(d))
        }
        PlaceError::Twilio(e) => {
            let d = ErrorDetail {
                twilio_code: e.code,
                transient: e.transient,
                ..detail(if e.transient {
                    "twilio_unavailable"
                } else {
                    "twilio_refused"
                })
            };
            let status = if e.transient {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            json(status, &body(d))
        }
    }
}

/// `?to=…&since=…` asks Twilio's records (what a campaign settles a lost call from);
/// otherwise the server's own live and recent calls.
async fn list(api: &Api, query: &str) -> warp::reply::Response {
    let mut to = None;
    let mut since = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "to" => to = Some(v.into_owned()),
            "since" => since = Some(v.into_owned()),
            _ => {}
        }
    }
    let Some(to) = to else {
        let calls = api
            .desk
            .journal()
            .list()
            .iter()
            .map(|r| r.view(false))
            .collect();
        return json(StatusCode::OK, &CallList { calls });
    };
    let Ok(to) = E164::parse(&to) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_number",
            "`to` must be a number in E.164",
        );
    };
    let since = match since.as_deref().map(DateTime::parse_from_rfc3339) {
        None => Utc::now() - chrono::Duration::days(1),
        Some(Ok(t)) => t.with_timezone(&Utc),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "`since` must be an RFC 3339 time",
            );
        }
    };
    match api.desk.service().find_calls_to(&to, since).await {
        Ok(found) => {
            let calls = found.into_iter().map(snapshot_view).collect();
            json(StatusCode::OK, &CallList { calls })
        }
        Err(e) => twilio_lookup_failed(&e.message),
    }
}

/// A call's state, transcript so far and outcome; a call this server does not follow (a
/// previous run's) from Twilio's records.
async fn show(api: &Api, sid: &str) -> warp::reply::Response {
    if let Some(record) = api.desk.journal().get(sid) {
        return json(StatusCode::OK, &record.view(true));
    }
    match twilio_lookup(api, sid).await {
        Ok(Some(s)) => json(StatusCode::OK, &snapshot_view(s)),
        Ok(None) => unknown_call(sid),
        Err(r) => r,
    }
}

/// Hang a call up. Asking again while it ends, or once it has, changes nothing.
async fn hang_up(api: &Api, sid: &str) -> warp::reply::Response {
    if let Some(record) = api.desk.journal().get(sid) {
        if record.is_ended() {
            return json(StatusCode::OK, &record.view(false));
        }
        record.hang_up();
        return json(StatusCode::ACCEPTED, &record.view(false));
    }
    match twilio_lookup(api, sid).await {
        Ok(Some(s)) if s.final_status().is_some() => json(StatusCode::OK, &snapshot_view(s)),
        Ok(Some(s)) => match api.desk.service().hang_up(&s.sid).await {
            Ok(()) => json(StatusCode::ACCEPTED, &snapshot_view(s)),
            Err(e) => twilio_lookup_failed(&e.message),
        },
        Ok(None) => unknown_call(sid),
        Err(r) => r,
    }
}

async fn twilio_lookup(
    api: &Api,
    sid: &str,
) -> Result<Option<CallSnapshot>, warp::reply::Response> {
    // Only a well-formed SID goes into a Twilio URL.
    if !is_call_sid(sid) {
        return Ok(None);
    }
    api.desk
        .service()
        .lookup(sid)
        .await
        .map_err(|e| twilio_lookup_failed(&e.message))
}

fn is_call_sid(s: &str) -> bool {
    s.len() == 34 && s.starts_with("CA") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn snapshot_view(s: CallSnapshot) -> CallView {
    CallView {
        state: if s.final_status().is_some() {
            CallState::Ended
        } else {
            CallState::Live
        },
        sid: s.sid,
        to: s.to,
        status: s.status,
        created_at: s.start_time,
        answered_by: s.answered_by,
        duration_secs: s.duration_secs,
        events: 0,
        transcript: None,
        outcome: None,
    }
}

fn unknown_call(sid: &str) -> warp::reply::Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no call {}", crate::phone::printable(sid)),
    )
}

fn twilio_lookup_failed(message: &str) -> warp::reply::Response {
    error(
        StatusCode::BAD_GATEWAY,
        "twilio_unavailable",
        &format!("cannot ask Twilio about the call: {message}"),
    )
}

/// The call's events from the beginning (or after `Last-Event-ID`), live, then the stream
/// closes after `ended`.
fn events(api: &Api, sid: &str, req: &Request) -> warp::reply::Response {
    let Some(record) = api.desk.journal().get(sid) else {
        return unknown_call(sid);
    };
    let from = resume_from(req.header(header::HeaderName::from_static("last-event-id")));
    let stream = SyncStream(Mutex::new(Box::pin(event_stream(record, from))));
    let reply = warp::sse::reply(warp::sse::keep_alive().interval(KEEP_ALIVE).stream(stream));
    let mut r = reply.into_response();
    // Proxies that buffer (nginx) would hold the events back.
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// The index of the first event to send: the one after `Last-Event-ID`, or the first when the
/// header is missing or is not one of our ids.
fn resume_from(last_event_id: Option<&str>) -> usize {
    last_event_id
        .and_then(|id| id.trim().parse::<usize>().ok())
        .and_then(|id| id.checked_add(1))
        .unwrap_or(0)
}

/// One event as an SSE frame: its index as `id`, its kind as `event`, itself as JSON `data`.
fn frame(index: usize, event: &CallEvent) -> warp::sse::Event {
    let data = serde_json::to_value(event).unwrap_or_default();
    let kind = data
        .get("event")
        .and_then(|k| k.as_str())
        .unwrap_or("message")
        .to_string();
    warp::sse::Event::default()
        .id(index.to_string())
        .event(kind)
        .data(data.to_string())
}

type Frames = Pin<Box<dyn Stream<Item = Result<warp::sse::Event, Infallible>> + Send>>;

fn event_stream(
    record: Arc<CallRecord>,
    from: usize,
) -> impl Stream<Item = Result<warp::sse::Event, Infallible>> + Send {
    struct State {
        record: Arc<CallRecord>,
        changed: tokio::sync::watch::Receiver<usize>,
        next: usize,
        queue: VecDeque<CallEvent>,
        done: bool,
    }
    let state = State {
        changed: record.watch(),
        record,
        next: from,
        queue: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.queue.pop_front() {
                let index = s.next;
                s.next += 1;
                return Some((Ok(frame(index, &event)), s));
            }
            if s.done {
                return None;
            }
            // Marked seen before reading, so an event pushed after the read wakes us.
            s.changed.borrow_and_update();
            let (batch, ended) = s.record.events_from(s.next);
            if batch.is_empty() && ended {
                return None;
            }
            if batch.is_empty() {
                if s.changed.changed().await.is_err() {
                    s.done = true;
                }
                continue;
            }
            s.queue.extend(batch);
            s.done = ended;
        }
    })
}

/// warp's SSE reply wants a `Sync` stream; the stream is only ever polled by one task, so a
/// lock that is never contended makes it one.
struct SyncStream(Mutex<Frames>);

impl Stream for SyncStream {
    type Item = Result<warp::sse::Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .poll_next(cx)
    }
}

fn body(detail: ErrorDetail) -> ErrorBody {
    ErrorBody { error: detail }
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// An error as every `/api/` error is written.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> warp::reply::Response {
    json(
        status,
        &body(ErrorDetail {
            code: code.to_string(),
            message: message.to_string(),
            twilio_code: None,
            transient: false,
            outcome: None,
        }),
    )
}

fn retry_after(mut r: warp::reply::Response, wait: Duration) -> warp::reply::Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Speaker, TranscriptLine};

    #[test]
    fn an_event_is_one_frame_with_its_index_kind_and_json() {
        let event = CallEvent::Line {
            to: "+12025550100".into(),
            line: TranscriptLine {
                speaker: Speaker::Callee,
                text: "Yes,\nI'll be there".into(),
                at_ms: 1200,
                interrupted: false,
                latency_ms: None,
            },
        };
        let text = frame(7, &event).to_string();
        assert!(text.ends_with("\n\n"), "{text:?}");
        let lines: Vec<&str> = text.trim_end().lines().collect();
        assert!(lines.contains(&"id:7"), "{text:?}");
        assert!(lines.contains(&"event:line"), "{text:?}");
        let data: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("data:"))
            .collect();
        assert_eq!(
            data.len(),
            1,
            "a newline in the text stays inside the JSON: {text:?}"
        );
        let back: CallEvent = serde_json::from_str(data[0]).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn last_event_id_resumes_after_that_event() {
        assert_eq!(resume_from(None), 0);
        assert_eq!(resume_from(Some("0")), 1);
        assert_eq!(resume_from(Some(" 41 ")), 42);
        for junk in ["", "-1", "x", "1.5", "18446744073709551615", "１"] {
            assert_eq!(resume_from(Some(junk)), 0, "{junk:?}");
        }
    }

    #[test]
    fn call_sids_are_checked_before_they_reach_a_twilio_url() {
        assert!(is_call_sid("CA0123456789abcdef0123456789abcdef"));
        assert!(!is_call_sid("CA0123456789abcdef0123456789abcde/"));
        assert!(!is_call_sid("../Accounts"));
        assert!(!is_call_sid("CA0123456789abcdef0123456789abcdef0"));
    }
}

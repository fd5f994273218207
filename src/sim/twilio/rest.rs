//! The Calls REST API (2010-04-01) over hyper: HTTP Basic auth with the account SID and auth
//! token, form-encoded bodies, create / list / fetch / update with Twilio's validation rules
//! and legacy JSON error bodies, and the Call resource JSON. The account itself, its numbers
//! and its verified caller IDs are read in [`account`].

mod account;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::NaiveDate;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

use super::callee::AmdSettings;
use super::calls::{self, Amd, CallSpec, Events, RecordingEvents, RecordingSpec, Source};
use super::number;
use super::webhook::Hook;
use super::{ApiRequest, CallEntry, Requests, RestFault, Shared};

/// Bodies above this are refused; a create request is a few kilobytes at most.
const MAX_BODY: usize = 1024 * 1024;
/// Twilio's limit on the `Twiml` parameter, in characters.
const MAX_TWIML: usize = 4000;
const API: &str = "2010-04-01";

pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::debug!("fake Twilio accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc_shared = shared.clone();
            let service = service_fn(move |req| handle(svc_shared.clone(), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shared.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// A Twilio API error: HTTP status, Twilio code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiError {
    status: u16,
    code: u32,
    message: String,
}

impl ApiError {
    fn bad(code: u32, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code,
            message: message.into(),
        }
    }

    fn not_found(path: &str) -> Self {
        Self {
            status: 404,
            code: 20404,
            message: format!("The requested resource {path} was not found"),
        }
    }

    /// Twilio's own trouble: 500 / 20500 or 503 / 20503.
    fn server(status: u16) -> Self {
        let (code, message) = match status {
            503 => (20503, "Service Unavailable"),
            _ => (20500, "Internal Server Error"),
        };
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthenticated() -> Self {
        Self {
            status: 401,
            code: 20003,
            message: "Authenticate".into(),
        }
    }

    fn body(&self) -> Value {
        json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status,
        })
    }
}

struct Reply {
    status: u16,
    body: Value,
    call_sid: Option<String>,
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let authorized = authorized(&shared, req.headers());
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    let body = Limited::new(req.into_body(), MAX_BODY).collect().await;
    let result = match body {
        Err(_) => Err(ApiError {
            status: 413,
            code: 20001,
            message: "Request body too large".into(),
        }),
        Ok(body) => {
            // Twilio reads parameters from a form body only; anything else carries none.
            let params: Vec<(String, String)> = match method.as_str() {
                "POST" if is_form => form_urlencoded(&body.to_bytes()),
                "GET" => form_urlencoded(query.as_bytes()),
                _ => Vec::new(),
            };
            let (outcome, fault) = route(&shared, &method, &path, authorized, &params).await;
            let to = (method == "POST" && path.ends_with("/Calls.json"))
                .then(|| Params(&params).get("To").map(str::to_string))
                .flatten();
            Ok((outcome, fault, params, to))
        }
    };
    let (outcome, fault, params, to) = match result {
        Ok(x) => x,
        Err(e) => (Err(e), None, Vec::new(), None),
    };
    let (reply, error) = match outcome {
        Ok(reply) => (reply, None),
        Err(e) => (
            Reply {
                status: e.status,
                body: e.body(),
                call_sid: None,
            },
            Some(e),
        ),
    };
    let hang = matches!(
        fault,
        Some(RestFault::Hang | RestFault::HangAfterProcessing)
    );
    shared.lock().requests.push(ApiRequest {
        at,
        method,
        path,
        status: if hang { 0 } else { reply.status },
        to,
        error_code: error.as_ref().filter(|_| !hang).map(|e| e.code),
        call_sid: reply.call_sid.clone(),
        params,
        fault,
    });
    if hang {
        // The handler does not learn that its client gave up, so a hung request is released
        // at shutdown, when nobody reads the answer any more.
        shared.shutdown.cancelled().await;
    }
    let mut builder = Response::builder()
        .status(reply.status)
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .header("Twilio-Request-Id", super::sid("RQ"));
    if reply.status == 401 {
        builder = builder.header("WWW-Authenticate", "Basic realm=\"Twilio API\"");
    }
    let mut body = reply.body.to_string();
    if fault == Some(RestFault::UnreadableBody) {
        // A body cut off mid-way (a proxy or a dropped connection), still labelled JSON.
        let mut cut = body.len() / 2;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    let response = builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok(response)
}

fn form_urlencoded(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

/// HTTP Basic with the account SID and auth token. API keys (`SK…`) are not simulated and fail
/// like wrong credentials.
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, credentials)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(decoded) = STANDARD
        .decode(credentials.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
    else {
        return false;
    };
    decoded.split_once(':').is_some_and(|(user, password)| {
        user == shared.config.account_sid && password == shared.config.auth_token
    })
}

/// The answer, and the fault injected into it (which `handle` finishes applying).
async fn route(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    authorized: bool,
    params: &[(String, String)],
) -> (Result<Reply, ApiError>, Option<RestFault>) {
    if path == super::RING_PATH {
        return (ring(shared, method, authorized, params).await, None);
    }
    let segments: Vec<&str> = path.split('/').collect();
    let ["", API, "Accounts", account, rest @ ..] = segments.as_slice() else {
        return (Err(ApiError::not_found(path)), None);
    };
    // `/Accounts/{Sid}.json` is the account itself; anything longer is one of its resources.
    let (account, own) = match (account.strip_suffix(".json"), rest) {
        (Some(sid), []) => (sid, true),
        _ => (*account, false),
    };
    // The account in the path must be the one authenticated (Twilio answers 20003 when, for
    // instance, a subaccount's credentials are used on its parent's resources).
    if !authorized || account != shared.config.account_sid {
        return (Err(ApiError::unauthenticated()), None);
    }
    let kind = match (method, rest) {
        ("POST", ["Calls.json"]) => Some(Requests::Creates),
        ("GET", ["Calls.json"]) => Some(Requests::Lists),
        ("GET", ["Calls", file]) if file.ends_with(".json") => Some(Requests::Fetches),
        ("POST", ["Calls", file]) if file.ends_with(".json") => Some(Requests::Updates),
        _ => None,
    };
    let fault = {
        let mut state = shared.lock();
        if state.throttle > 0 {
            state.throttle -= 1;
            return (
                Err(ApiError {
                    status: 429,
                    code: 20429,
                    message: "Too Many Requests".into(),
                }),
                None,
            );
        }
        take_fault(&mut state, kind)
    };
    let reply = match fault {
        Some(RestFault::InternalError) => Err(ApiError::server(500)),
        // A hung request that was not processed: if an answer is ever sent, it says so.
        Some(RestFault::Unavailable | RestFault::Hang) => Err(ApiError::server(503)),
        _ if own => account::fetch(shared, method),
        _ => calls_api(shared, method, path, rest, &Params(params)).await,
    };
    (reply, fault)
}

/// `POST /_sim/ring`, the simulator's own control (Twilio has nothing like it): ring one of the
/// account's numbers as an inbound caller, wait for the call to end, and answer with what
/// happened on it. Authenticated like the REST API.
async fn ring(
    shared: &Arc<Shared>,
    method: &str,
    authorized: bool,
    params: &[(String, String)],
) -> Result<Reply, ApiError> {
    if !authorized {
        return Err(ApiError::unauthenticated());
    }
    if method != "POST" {
        return Err(ApiError {
            status: 405,
            code: 20004,
            message: "Method not allowed".into(),
        });
    }
    let p = Params(params);
    let incoming = super::Incoming {
        url: p.get("Url").unwrap_or_default().to_string(),
        from: p.get("From").unwrap_or_default().to_string(),
        to: p.get("To").map(str::to_string),
        status_callback: p.get("StatusCallback").map(str::to_string),
    };
    let sid = calls::ring(shared, incoming).map_err(|e| ApiError::bad(21205, e))?;
    let call = super::wait_ended(shared, &sid)
        .await
        .ok_or_else(|| ApiError::server(500))?;
    Ok(Reply {
        status: 200,
        body: summary(&call),
        call_sid: Some(sid),
    })
}

/// What happened on a call, for whoever rang it.
fn summary(call: &super::SimCall) -> Value {
    let stream = call.stream.as_ref();
    json!({
        "sid": call.sid,
        "from": call.from,
        "to": call.to,
        "status": call.status,
        "ended_by": call.ended_by,
        "twiml": call.twiml,
        "stream_opened": stream.is_some_and(|s| s.handshake_status == Some(101)),
        "said": stream.map(|s| s.said.clone()).unwrap_or_default(),
        "heard": stream.map(|s| s.heard.clone()).unwrap_or_default(),
        "status_callbacks": call.callbacks.iter().map(|c| json!({"event": c.event, "http_status": c.http_status})).collect::<Vec<_>>(),
        "errors": call.errors,
    })
}

/// The fault for a request of `kind`: an outage first, then the first `fail_next` rule.
fn take_fault(state: &mut super::State, kind: Option<Requests>) -> Option<RestFault> {
    if let Some(until) = state.unavailable_until {
        if Instant::now() < until {
            return Some(RestFault::Unavailable);
        }
        state.unavailable_until = None;
    }
    let i = state
        .rest_faults
        .iter()
        .position(|(which, _, _)| *which == Requests::Any || Some(*which) == kind)?;
    let (_, left, fault) = &mut state.rest_faults[i];
    let fault = *fault;
    *left -= 1;
    if *left == 0 {
        state.rest_faults.remove(i);
    }
    Some(fault)
}

async fn calls_api(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    rest: &[&str],
    p: &Params<'_>,
) -> Result<Reply, ApiError> {
    match (method, rest) {
        ("POST", ["Calls.json"]) => create(shared, p),
        ("GET", ["Calls.json"]) => list(shared, p),
        ("GET", ["Calls", file]) if file.ends_with(".json") => {
            let sid = file.trim_end_matches(".json");
            let state = shared.lock();
            let entry = state
                .index
                .get(sid)
                .map(|&i| &state.calls[i])
                .ok_or_else(|| ApiError::not_found(path))?;
            Ok(Reply {
                status: 200,
                body: resource(shared, entry),
                call_sid: Some(sid.to_string()),
            })
        }
        ("POST", ["Calls", file]) if file.ends_with(".json") => {
            update(shared, path, file.trim_end_matches(".json"), p).await
        }
        ("GET", ["IncomingPhoneNumbers.json"]) => account::incoming_numbers(shared, p),
        ("GET", ["OutgoingCallerIds.json"]) => account::caller_ids(shared, p),
        (_, ["Calls.json"]) | (_, ["Calls", _]) => Err(ApiError {
            status: 405,
            code: 20004,
            message: "Method not allowed".into(),
        }),
        _ => Err(ApiError::not_found(path)),
    }
}

/// Form or query parameters; repeated keys are kept.
struct Params<'a>(&'a [(String, String)]);

impl Params<'_> {
    /// The first value of `key`; empty values count as absent, as Twilio treats them.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `GET`/`POST` (the default); anything else is refused.
fn method_param(p: &Params, key: &str) -> Result<String, ApiError> {
    match p.get(key) {
        None => Ok("POST".into()),
        Some(m @ ("GET" | "POST")) => Ok(m.to_string()),
        Some(other) => Err(ApiError::bad(
            21200,
            format!("{key} must be GET or POST, not {other:?}"),
        )),
    }
}

/// An absolute http(s) URL with a valid hostname (no underscores).
fn is_web_url(raw: &str) -> bool {
    Url::parse(raw).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str()
                .is_some_and(|h| !h.is_empty() && !h.contains('_'))
    })
}

fn hook(
    p: &Params,
    url_key: &str,
    method_key: &str,
    bad_url_code: u32,
) -> Result<Option<Hook>, ApiError> {
    let method = method_param(p, method_key)?;
    match p.get(url_key) {
        None => Ok(None),
        Some(url) if is_web_url(url) => Ok(Some(Hook {
            url: url.to_string(),
            method,
        })),
        Some(url) => Err(ApiError::bad(
            bad_url_code,
            format!("{url_key} is not a valid URL: {url}"),
        )),
    }
}

fn int_param(
    p: &Params,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    code: u32,
) -> Result<u64, ApiError> {
    match p.get(key) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ApiError::bad(
                code,
                format!(
                    "{key} must be an integer from {} to {}, not {v:?}",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

fn bool_param(p: &Params, key: &str, code: u32) -> Result<bool, ApiError> {
    match p.get(key) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad(
            code,
            format!("{key} must be true or false, not {other:?}"),
        )),
    }
}

fn create(shared: &Arc<Shared>, p: &Params) -> Result<Reply, ApiError> {
    let spec = validate_create(shared, p)?;
    let sid = calls::place(shared, spec);
    let state = shared.lock();
    let entry = state
        .index
        .get(&sid)
        .map(|&i| &state.calls[i])
        .ok_or_else(|| ApiError::not_found(&sid))?;
    Ok(Reply {
        status: 201,
        body: resource(shared, entry),
        call_sid: Some(sid),
    })
}

fn validate_create(shared: &Shared, p: &Params) -> Result<CallSpec, ApiError> {
    let to_raw = p
        .get("To")
        .ok_or_else(|| ApiError::bad(21201, "No 'To' number is specified"))?;
    let from_raw = p
        .get("From")
        .ok_or_else(|| ApiError::bad(21213, "No 'From' number is specified"))?;

    // Exactly one of Url / Twiml / ApplicationSid.
    if p.get("ApplicationSid").is_some() {
        // The fake account has no TwiML applications, so every ApplicationSid is unknown.
        return Err(ApiError::bad(21218, "Invalid ApplicationSid"));
    }
    let source = match (p.get("Url"), p.get("Twiml")) {
        (None, None) => {
            return Err(ApiError::bad(
                21205,
                "A 'Url', 'Twiml' or 'ApplicationSid' parameter is required",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                21200,
                "'Url' and 'Twiml' are mutually exclusive",
            ));
        }
        (Some(url), None) => {
            let method = method_param(p, "Method")?;
            if !is_web_url(url) {
                return Err(ApiError::bad(
                    21205,
                    format!("Url is not a valid URL: {url}"),
                ));
            }
            Source::Url(Hook {
                url: url.to_string(),
                method,
            })
        }
        (None, Some(twiml)) => {
            if twiml.chars().count() > MAX_TWIML {
                return Err(ApiError::bad(
                    32018,
                    "Twiml size exceeded maximum allowed value of 4000 characters",
                ));
            }
            Source::Inline(twiml.to_string())
        }
    };
    let fallback = hook(p, "FallbackUrl", "FallbackMethod", 21205)?;
    let status_callback = hook(p, "StatusCallback", "StatusCallbackMethod", 21609)?;

    let values = p.all("StatusCallbackEvent");
    let events = if values.is_empty() {
        Events {
            completed: true,
            ..Events::default()
        }
    } else {
        let mut e = Events::default();
        for v in values {
            // One event per value; Twilio's libraries repeat the key.
            match v {
                "initiated" => e.initiated = true,
                "ringing" => e.ringing = true,
                "answered" => e.answered = true,
                "completed" => e.completed = true,
                other => {
                    return Err(ApiError::bad(
                        21626,
                        format!("Invalid 'StatusCallbackEvent': {other:?}"),
                    ));
                }
            }
        }
        e
    };

    let timeout = int_param(p, "Timeout", 60, 1..=600, 21200)?;
    // Twilio's default is four hours; the maximum depends on the account (24 h here).
    let time_limit = int_param(p, "TimeLimit", 4 * 3600, 1..=24 * 3600, 21200)?;
    let recording = recording_spec(p)?;
    let send_digits = p.get("SendDigits");
    if let Some(d) =
        send_digits.filter(|d| d.len() > 32 || !d.chars().all(|c| "0123456789ABCD#*wW".contains(c)))
    {
        return Err(ApiError::bad(21200, format!("Invalid SendDigits: {d:?}")));
    }

    let amd = match p.get("MachineDetection") {
        None => None,
        Some(mode @ ("Enable" | "DetectMessageEnd")) => {
            let settings = AmdSettings {
                detect_message_end: mode == "DetectMessageEnd",
                timeout_ms: int_param(p, "MachineDetectionTimeout", 30, 3..=59, 21234)? * 1000,
                speech_threshold_ms: int_param(
                    p,
                    "MachineDetectionSpeechThreshold",
                    2400,
                    1000..=6000,
                    21234,
                )?,
                speech_end_threshold_ms: int_param(
                    p,
                    "MachineDetectionSpeechEndThreshold",
                    1200,
                    500..=5000,
                    21234,
                )?,
                silence_timeout_ms: int_param(
                    p,
                    "MachineDetectionSilenceTimeout",
                    5000,
                    2000..=10000,
                    21234,
                )?,
            };
            let asynchronous = bool_param(p, "AsyncAmd", 21234)?;
            let callback = hook(
                p,
                "AsyncAmdStatusCallback",
                "AsyncAmdStatusCallbackMethod",
                21609,
            )?;
            Some(Amd {
                settings,
                asynchronous,
                callback,
            })
        }
        Some(other) => {
            return Err(ApiError::bad(
                21234,
                format!("MachineDetection must be Enable or DetectMessageEnd, not {other:?}"),
            ));
        }
    };
    // With SendDigits, Twilio ignores MachineDetection.
    let amd = amd.filter(|_| send_digits.is_none());

    // Only phone numbers are simulated (no sip: or client: targets).
    let from = match number::e164(from_raw) {
        Some(n) if n != "+15005550001" => n,
        _ => {
            return Err(ApiError::bad(
                21212,
                format!("The 'From' number {from_raw} is not a valid phone number"),
            ));
        }
    };
    if !shared.owned.contains_key(&from) && !shared.verified.contains_key(&from) {
        return Err(ApiError::bad(
            21210,
            format!(
                "The source phone number provided, {from_raw}, is not yet verified for your account. \
                 You may only make calls from phone numbers that you've verified or purchased from Twilio."
            ),
        ));
    }
    let to = number::e164(to_raw).ok_or_else(|| {
        ApiError::bad(
            21211,
            format!("The 'To' number {to_raw} is not a valid phone number."),
        )
    })?;
    match to.as_str() {
        "+15005550001" => {
            return Err(ApiError::bad(
                21217,
                format!("Phone number {to_raw} does not appear to be valid"),
            ));
        }
        "+15005550002" => {
            return Err(ApiError::bad(
                21214,
                format!("'To' phone number {to_raw} cannot be reached"),
            ));
        }
        "+15005550003" => {
            return Err(ApiError::bad(
                21215,
                format!(
                    "Account not authorized to call {to_raw}. Perhaps you need to enable some \
                     international permissions"
                ),
            ));
        }
        "+15005550004" => {
            return Err(ApiError::bad(
                21216,
                format!("Call blocked by Twilio blocklist: {to_raw}"),
            ));
        }
        _ => {}
    }
    if to == from {
        return Err(ApiError::bad(
            21211,
            format!(
                "The 'To' number {to_raw} is not a valid phone number: it is the 'From' number."
            ),
        ));
    }

    Ok(CallSpec {
        to,
        from,
        source,
        fallback,
        status_callback,
        events,
        timeout: Duration::from_secs(timeout),
        time_limit: Duration::from_secs(time_limit),
        amd,
        recording,
        inbound: false,
    })
}

/// `Record` and the recording parameters that go with it. They are checked whether or not
/// `Record` is true, as a malformed parameter is malformed either way.
fn recording_spec(p: &Params) -> Result<Option<RecordingSpec>, ApiError> {
    let record = bool_param(p, "Record", 21200)?;
    let channels = match p.get("RecordingChannels") {
        None | Some("mono") => 1,
        Some("dual") => 2,
        Some(other) => {
            return Err(ApiError::bad(
                21200,
                format!("RecordingChannels must be mono or dual, not {other:?}"),
            ));
        }
    };
    let callback = hook(
        p,
        "RecordingStatusCallback",
        "RecordingStatusCallbackMethod",
        21609,
    )?;
    let values = p.all("RecordingStatusCallbackEvent");
    let mut events = RecordingEvents::default();
    if !values.is_empty() {
        events.completed = false;
        // Repeated keys, or one value with the events separated by spaces (both documented).
        for event in values
            .iter()
            .flat_map(|v| v.split(' '))
            .filter(|e| !e.is_empty())
        {
            match event {
                "in-progress" => events.in_progress = true,
                "completed" => events.completed = true,
                "absent" => events.absent = true,
                other => {
                    return Err(ApiError::bad(
                        21200,
                        format!("Invalid 'RecordingStatusCallbackEvent': {other:?}"),
                    ));
                }
            }
        }
    }
    Ok(record.then_some(RecordingSpec {
        channels,
        callback,
        events,
    }))
}

const STATUSES: &[&str] = &[
    "queued",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
];

fn is_ended(status: &str) -> bool {
    matches!(
        status,
        "completed" | "busy" | "failed" | "no-answer" | "canceled"
    )
}

async fn update(
    shared: &Arc<Shared>,
    path: &str,
    sid: &str,
    p: &Params<'_>,
) -> Result<Reply, ApiError> {
    let status = p.get("Status");
    if let Some(s) = status.filter(|s| !matches!(*s, "completed" | "canceled")) {
        return Err(ApiError::bad(
            21200,
            format!("Status must be completed or canceled, not {s:?}"),
        ));
    }
    let redirect = match (p.get("Url"), p.get("Twiml")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                21200,
                "'Url' and 'Twiml' are mutually exclusive",
            ));
        }
        (Some(url), None) => {
            let method = method_param(p, "Method")?;
            if !is_web_url(url) {
                return Err(ApiError::bad(
                    21205,
                    format!("Url is not a valid URL: {url}"),
                ));
            }
            Some(Source::Url(Hook {
                url: url.to_string(),
                method,
            }))
        }
        (None, Some(twiml)) if twiml.chars().count() > MAX_TWIML => {
            return Err(ApiError::bad(
                32018,
                "Twiml size exceeded maximum allowed value of 4000 characters",
            ));
        }
        (None, Some(twiml)) => Some(Source::Inline(twiml.to_string())),
        (None, None) => None,
    };
    // Accepted for validation; changing them on a live call is not simulated.
    hook(p, "FallbackUrl", "FallbackMethod", 21205)?;
    hook(p, "StatusCallback", "StatusCallbackMethod", 21609)?;
    int_param(p, "TimeLimit", 4 * 3600, 1..=24 * 3600, 21200)?;

    let wait = {
        let mut state = shared.lock();
        let i = *state
            .index
            .get(sid)
            .ok_or_else(|| ApiError::not_found(path))?;
        let entry = &mut state.calls[i];
        let current = entry.record.status.clone();
        if is_ended(&current) {
            return Err(ApiError::bad(
                21220,
                "Call is not in-progress. Cannot redirect.",
            ));
        }
        let mut wait = None;
        match (status, redirect) {
            (Some("canceled"), _) if current == "in-progress" => {
                // `canceled` only affects calls that have not been answered.
            }
            (Some(_), _) => {
                entry.ctl.end_reason.get_or_insert("api");
                entry.ctl.hangup.cancel();
                wait = Some(entry.ctl.ended.subscribe());
            }
            (None, Some(source)) => {
                if current != "in-progress" {
                    return Err(ApiError::bad(
                        21220,
                        "The call cannot be redirected if it is not in-progress",
                    ));
                }
                let _ = entry.ctl.redirect.send(source);
            }
            (None, None) => {}
        }
        wait
    };
    if let Some(mut rx) = wait {
        // The resource is eventually consistent in real Twilio; waiting briefly here makes the
        // response show the final status in the common case.
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|e| *e)).await;
    }
    let state = shared.lock();
    let entry = state
        .index
        .get(sid)
        .map(|&i| &state.calls[i])
        .ok_or_else(|| ApiError::not_found(path))?;
    Ok(Reply {
        status: 200,
        body: resource(shared, entry),
        call_sid: Some(sid.to_string()),
    })
}

/// `PageSize` (1–1000, 50 when absent) and `Page` (from 0), as every list takes them.
fn paging(p: &Params) -> Result<(usize, usize), ApiError> {
    let bad = |m: String| ApiError::bad(20001, m);
    let page_size = match p.get("PageSize") {
        None => 50,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| bad(format!("PageSize must be from 1 to 1000, not {v:?}")))?,
    };
    let page = match p.get("Page") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad(format!("Page must be a non-negative integer, not {v:?}")))?,
    };
    Ok((page_size, page))
}

fn list(shared: &Shared, p: &Params) -> Result<Reply, ApiError> {
    let (page_size, page) = paging(p)?;
    let bad = |m: String| ApiError::bad(20001, m);
    if let Some(s) = p.get("Status").filter(|s| !STATUSES.contains(s)) {
        return Err(bad(format!("Invalid Status filter {s:?}")));
    }
    let date = |key: &str| -> Result<Option<NaiveDate>, ApiError> {
        p.get(key)
            .map(|v| {
                NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map_err(|_| bad(format!("{key} must be a date YYYY-MM-DD, not {v:?}")))
            })
            .transpose()
    };
    let start_on = date("StartTime")?;
    let start_after = date("StartTime>")?;
    let start_before = date("StartTime<")?;
    let end_on = date("EndTime")?;
    let end_after = date("EndTime>")?;
    let end_before = date("EndTime<")?;
    let in_range = |d: Option<chrono::DateTime<chrono::Utc>>,
                    on: Option<NaiveDate>,
                    after: Option<NaiveDate>,
                    before: Option<NaiveDate>| {
        if on.is_none() && after.is_none() && before.is_none() {
            return true;
        }
        let Some(day) = d.map(|d| d.date_naive()) else {
            return false;
        };
        on.is_none_or(|o| day == o)
            && after.is_none_or(|a| day >= a)
            && before.is_none_or(|b| day <= b)
    };

    let state = shared.lock();
    let matching: Vec<&CallEntry> = state
        .calls
        .iter()
        .rev()
        .filter(|c| p.get("To").is_none_or(|t| normalized(t) == c.record.to))
        .filter(|c| p.get("From").is_none_or(|f| normalized(f) == c.record.from))
        .filter(|c| p.get("Status").is_none_or(|s| s == c.record.status))
        .filter(|c| in_range(c.start_time, start_on, start_after, start_before))
        .filter(|c| in_range(c.end_time, end_on, end_after, end_before))
        .collect();
    let start = page.saturating_mul(page_size);
    let calls: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(page_size)
        .map(|c| resource(shared, c))
        .collect();
    let has_next = matching.len() > start.saturating_add(calls.len()) && !calls.is_empty();

    // Filters echoed in the page URIs, as Twilio does.
    let filters: Vec<(&str, &str)> = [
        "To",
        "From",
        "Status",
        "StartTime",
        "StartTime>",
        "StartTime<",
        "EndTime",
        "EndTime>",
        "EndTime<",
    ]
    .iter()
    .filter_map(|k| p.get(k).map(|v| (*k, v)))
    .collect();
    let base = format!("/{API}/Accounts/{}/Calls.json", shared.config.account_sid);
    let page_uri = |n: usize| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.extend_pairs(filters.iter().copied());
        q.append_pair("PageSize", &page_size.to_string());
        q.append_pair("Page", &n.to_string());
        format!("{base}?{}", q.finish())
    };
    let count = calls.len();
    let body = json!({
        "calls": calls,
        "start": start,
        "end": if count == 0 { start } else { start + count - 1 },
        "page": page,
        "page_size": page_size,
        "uri": page_uri(page),
        "first_page_uri": page_uri(0),
        "next_page_uri": if has_next { Value::String(page_uri(page + 1)) } else { Value::Null },
        "previous_page_uri": if page > 0 { Value::String(page_uri(page - 1)) } else { Value::Null },
    });
    Ok(Reply {
        status: 200,
        body,
        call_sid: None,
    })
}

/// A filter value in E.164 when it parses, else as given.
fn normalized(raw: &str) -> String {
    number::e164(raw).unwrap_or_else(|| raw.to_string())
}

/// `(415) 555-0100` for NANP numbers, as Twilio formats them; others unchanged.
fn formatted(e164: &str) -> String {
    match e164.strip_prefix("+1") {
        Some(d) if d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit()) => {
            format!("({}) {}-{}", &d[..3], &d[3..6], &d[6..])
        }
        _ => e164.to_string(),
    }
}

/// The Call resource, as the API returns it.
fn resource(shared: &Shared, c: &CallEntry) -> Value {
    let account = &shared.config.account_sid;
    let base = format!("/{API}/Accounts/{account}/Calls/{}", c.record.sid);
    let sub: serde_json::Map<String, Value> = [
        ("feedback", "Feedback"),
        ("feedback_summaries", "FeedbackSummary"),
        ("notifications", "Notifications"),
        ("recordings", "Recordings"),
        ("payments", "Payments"),
        ("events", "Events"),
        ("siprec", "Siprec"),
        ("streams", "Streams"),
        ("transcriptions", "Transcriptions"),
        (
            "user_defined_message_subscriptions",
            "UserDefinedMessageSubscriptions",
        ),
        ("user_defined_messages", "UserDefinedMessages"),
    ]
    .iter()
    .map(|(k, v)| {
        let uri = if *k == "feedback_summaries" {
            format!("/{API}/Accounts/{account}/Calls/FeedbackSummary.json")
        } else {
            format!("{base}/{v}.json")
        };
        (k.to_string(), Value::String(uri))
    })
    .collect();
    let date = |d: Option<chrono::DateTime<chrono::Utc>>| {
        d.map_or(Value::Null, |d| Value::String(super::rfc2822(d)))
    };
    // Billing is per started minute; the fake bills a flat US rate so cost reports have data.
    let price = c
        .duration
        .filter(|_| c.record.status == "completed")
        .map(|secs| Value::String(format!("-{:.5}", secs.div_ceil(60) as f64 * 0.014)))
        .unwrap_or(Value::Null);
    json!({
        "sid": c.record.sid,
        "date_created": super::rfc2822(c.date_created),
        "date_updated": super::rfc2822(c.date_updated),
        "parent_call_sid": null,
        "account_sid": account,
        "to": c.record.to,
        "to_formatted": formatted(&c.record.to),
        "from": c.record.from,
        "from_formatted": formatted(&c.record.from),
        "phone_number_sid": c.phone_number_sid,
        "status": c.record.status,
        "start_time": date(c.start_time),
        "end_time": date(c.end_time),
        "duration": c.duration.map(|d| d.to_string()),
        "price": price,
        "price_unit": "USD",
        "direction": c.record.direction,
        "answered_by": c.record.answered_by,
        "api_version": API,
        "forwarded_from": null,
        "group_sid": null,
        "caller_name": null,
        "queue_time": "0",
        "trunk_sid": null,
        "uri": format!("{base}.json"),
        "subresource_uris": sub,
    })
}

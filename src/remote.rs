//! Placing calls through another `dialer serve`'s call API (`--server`): a [`Dialer`] that
//! creates each call with `POST /api/calls` and follows it through its Server-Sent Events,
//! resuming a dropped stream with `Last-Event-ID`, so the campaign runner and `dialer call`
//! work unchanged. Reconciling (lookups, hang-ups, finding calls) goes through the API as
//! well: the server holds the Twilio account, and a client needs no credentials but the key.
//!
//! The agent's tools run on the server, which records dispositions and opt-outs in the
//! call's events; each tool call the server reports as done is replayed on the request's own
//! handler, so a campaign's opt-out reaches its own do-not-call file as for a local call.

use crate::call::dialer::{CallRequest, CallSnapshot, DialError, Dialer};
use crate::call::wire::{CallList, CallView, ErrorBody, NewCallBody};
use crate::events::{CallEvent, EndedBy, FinalStatus, Outcome};
use crate::phone::E164;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A refused `DIALER_API_KEY` is reported with Twilio's code for rejected credentials, so that
/// it stops a campaign and exits with code 2 exactly as wrong Twilio credentials do locally.
const KEY_REFUSED: u32 = 20003;

/// Waits of the remote dialer; shortened in tests.
#[derive(Debug, Clone)]
pub struct RemoteTimings {
    /// How long a call's event stream may stay lost before the call is given up for unknown
    /// (a campaign then settles it from the server's records).
    pub reconnect_for: Duration,
    /// How long a stream may send nothing, not even a keep-alive, before it is taken for dead.
    pub silence: Duration,
}

impl Default for RemoteTimings {
    fn default() -> Self {
        Self {
            reconnect_for: Duration::from_secs(60),
            // Three of the server's 15 s keep-alives.
            silence: Duration::from_secs(45),
        }
    }
}

/// A `dialer serve` reached over HTTP.
pub struct RemoteDialer {
    http: reqwest::Client,
    base: String,
    key: Option<Secret>,
    timings: RemoteTimings,
}

/// What a create request came to, short of a call to follow.
enum Create {
    /// The number was not called: its outcome.
    Outcome(Box<Outcome>),
    /// Over a limit: ask again after this.
    Wait(Duration),
    Fail(DialError),
}

impl RemoteDialer {
    pub fn new(base: &url::Url, key: Option<Secret>) -> Result<Self, DialError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DialError {
                code: None,
                message: format!("cannot set up an HTTP client: {e}"),
                transient: false,
            })?;
        Ok(Self {
            http,
            base: base.as_str().trim_end_matches('/').to_string(),
            key,
            timings: RemoteTimings::default(),
        })
    }

    pub fn with_timings(mut self, timings: RemoteTimings) -> Self {
        self.timings = timings;
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => rb.bearer_auth(key.expose()),
            None => rb,
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> DialError {
        DialError {
            code: None,
            message: format!("cannot reach the dialer server at {}: {e}", self.base),
            transient: true,
        }
    }

    async fn create(&self, body: &NewCallBody) -> Result<CallView, Create> {
        let response = self
            .request(reqwest::Method::POST, "/api/calls")
            .json(body)
            .send()
            .await
            .map_err(|e| Create::Fail(self.unreachable(&e)))?;
        let status = response.status();
        let retry = retry_after(&response);
        let text = response
            .text()
            .await
            .map_err(|e| Create::Fail(self.unreachable(&e)))?;
        if status == StatusCode::CREATED {
            return serde_json::from_str(&text).map_err(|e| {
                Create::Fail(DialError {
                    code: None,
                    message: format!("the dialer server's answer cannot be read: {e}"),
                    transient: false,
                })
            });
        }
        let detail = serde_json::from_str::<ErrorBody>(&text)
            .ok()
            .map(|b| b.error);
        let message = detail.as_ref().map_or_else(
            || format!("the dialer server answered {status}"),
            |d| d.message.clone(),
        );
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => Create::Wait(retry.unwrap_or(Duration::from_secs(1))),
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT => {
                let code = detail.as_ref().map(|d| d.code.clone());
                match detail.and_then(|d| d.outcome) {
                    Some(outcome) => Create::Outcome(outcome),
                    None => Create::Outcome(Box::new(not_called(&body.to, code, message))),
                }
            }
            StatusCode::UNAUTHORIZED => Create::Fail(DialError {
                code: Some(KEY_REFUSED),
                message: format!(
                    "the dialer server at {} refused the key: set DIALER_API_KEY to its key",
                    self.base
                ),
                transient: false,
            }),
            _ => Create::Fail(DialError {
                code: detail.as_ref().and_then(|d| d.twilio_code),
                transient: detail
                    .as_ref()
                    .map_or(status.is_server_error(), |d| d.transient),
                message,
            }),
        })
    }

    /// Ask the server to hang the call up; a call it no longer has is not an error.
    async fn delete(&self, sid: &str) -> Result<(), DialError> {
        let response = self
            .request(reqwest::Method::DELETE, &format!("/api/calls/{sid}"))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(DialError {
                code: None,
                message: format!("the dialer server answered {s} to a hang-up"),
                transient: s.is_server_error(),
            }),
        }
    }

    /// Follow the call's events to `ended`, reconnecting after a drop from the event after the
    /// last one seen.
    async fn follow(
        &self,
        sid: &str,
        req: &CallRequest,
        events: &mpsc::UnboundedSender<CallEvent>,
        cancel: &CancellationToken,
    ) -> Result<Outcome, DialError> {
        let mut next = 0usize;
        let mut hung_up = false;
        let mut lost_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut rb = self
                .request(reqwest::Method::GET, &format!("/api/calls/{sid}/events"))
                .header(reqwest::header::ACCEPT, "text/event-stream");
            if let Some(last) = next.checked_sub(1) {
                rb = rb.header("last-event-id", last.to_string());
            }
            let sent = tokio::select! {
                r = rb.send() => Some(r),
                () = cancel.cancelled(), if !hung_up => None,
            };
            let Some(sent) = sent else {
                hung_up = true;
                self.hang_up_logged(sid).await;
                continue;
            };
            match sent {
                Ok(response) if response.status() == StatusCode::OK => {
                    let mut response = response;
                    let mut parser = SseParser::default();
                    loop {
                        let chunk = tokio::select! {
                            c = tokio::time::timeout(self.timings.silence, response.chunk()) => c,
                            () = cancel.cancelled(), if !hung_up => {
                                hung_up = true;
                                self.hang_up_logged(sid).await;
                                continue;
                            }
                        };
                        let bytes = match chunk {
                            Ok(Ok(Some(bytes))) => bytes,
                            Ok(Ok(None)) => break,
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "the call's event stream broke; resuming");
                                break;
                            }
                            Err(_) => {
                                tracing::warn!("the call's event stream went silent; resuming");
                                break;
                            }
                        };
                        for sse in parser.feed(&bytes) {
                            let Some(index) =
                                sse.id.as_deref().and_then(|i| i.parse::<usize>().ok())
                            else {
                                continue;
                            };
                            if index < next {
                                continue;
                            }
                            next = index + 1;
                            lost_since = None;
                            backoff = Duration::from_millis(100);
                            let event: CallEvent = match serde_json::from_str(&sse.data) {
                                Ok(e) => e,
                                Err(e) => {
                                    tracing::warn!(error = %e, kind = %sse.event, "unreadable call event skipped");
                                    continue;
                                }
                            };
                            replay_tool(req, &event);
                            if let CallEvent::Ended { outcome } = &event {
                                let outcome = (**outcome).clone();
                                let _ = events.send(event);
                                return Ok(outcome);
                            }
                            let _ = events.send(event);
                        }
                    }
                }
                Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                    return Err(DialError {
                        code: None,
                        message: format!(
                            "the dialer server no longer knows call {sid}; its records settle it"
                        ),
                        transient: true,
                    });
                }
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    return Err(DialError {
                        code: Some(KEY_REFUSED),
                        message: format!("the dialer server at {} refused the key", self.base),
                        transient: false,
                    });
                }
                Ok(response) => {
                    tracing::warn!(status = %response.status(), "cannot open the call's event stream; retrying");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the call's event stream; retrying")
                }
            }
            let since = *lost_since.get_or_insert_with(Instant::now);
            if since.elapsed() > self.timings.reconnect_for {
                return Err(DialError {
                    code: None,
                    message: format!(
                        "lost the events of call {sid} from the dialer server at {} for {} s",
                        self.base,
                        self.timings.reconnect_for.as_secs()
                    ),
                    transient: true,
                });
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = cancel.cancelled(), if !hung_up => {
                    hung_up = true;
                    self.hang_up_logged(sid).await;
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn hang_up_logged(&self, sid: &str) {
        if let Err(e) = self.delete(sid).await {
            tracing::warn!(error = %e, "hang-up through the dialer server failed");
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, DialError> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(DialError {
                code: None,
                message: format!("the dialer server answered {status} to {path}"),
                transient: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
            });
        }
        response.json().await.map(Some).map_err(|e| DialError {
            code: None,
            message: format!("the dialer server's answer cannot be read: {e}"),
            transient: true,
        })
    }
}

/// The request as the API takes it: the whole agent as the caller built it (variables already
/// filled), and the tools the server must offer.
fn new_call_body(req: &CallRequest) -> NewCallBody {
    let tools = req.tools.remote().unwrap_or_default();
    NewCallBody {
        to: req.to.to_string(),
        agent: Some(req.agent.clone()),
        ring_timeout: Some(req.ring_timeout.as_secs()),
        time_limit: Some(req.time_limit.as_secs()),
        machine_detection: Some(req.machine_detection),
        record: req.record.then_some(true),
        dispositions: (!tools.dispositions.is_empty()).then_some(tools.dispositions),
        opt_out: tools.opt_out,
        keypad: tools.keys.into_iter().collect(),
        transfer_on: tools.transfer_on,
        ..NewCallBody::default()
    }
}

/// A tool the server ran and reported done is run again on the caller's handler, which owns
/// the caller's side effects (a campaign's do-not-call file).
fn replay_tool(req: &CallRequest, event: &CallEvent) {
    if let CallEvent::Tool {
        name,
        arguments,
        ok: true,
        ..
    } = event
        && req.tools.specs().iter().any(|s| &s.name == name)
    {
        let _ = req.tools.call(name, arguments);
    }
}

/// The outcome of a number the server would not call.
fn not_called(to: &str, code: Option<String>, message: String) -> Outcome {
    Outcome::failed(to, None, code, message)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
}

fn snapshot(view: CallView) -> CallSnapshot {
    CallSnapshot {
        sid: view.sid,
        to: view.to,
        status: view.status,
        duration_secs: view.duration_secs,
        answered_by: view.answered_by,
        start_time: view.created_at,
    }
}

impl Dialer for RemoteDialer {
    async fn dial(
        &self,
        req: CallRequest,
        events: mpsc::UnboundedSender<CallEvent>,
        cancel: CancellationToken,
    ) -> Result<Outcome, DialError> {
        let body = new_call_body(&req);
        let view = loop {
            match self.create(&body).await {
                Ok(view) => break view,
                Err(Create::Outcome(outcome)) => {
                    // As a local call that Twilio refused: dialing, then its end.
                    let _ = events.send(CallEvent::Dialing {
                        to: body.to.clone(),
                    });
                    let _ = events.send(CallEvent::Ended {
                        outcome: outcome.clone(),
                    });
                    return Ok(*outcome);
                }
                Err(Create::Wait(wait)) => {
                    tracing::info!(
                        wait_secs = wait.as_secs(),
                        "the dialer server is at its limit; waiting"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = cancel.cancelled() => {
                            let mut outcome = not_called(&body.to, None, "hung up before the call was placed".into());
                            outcome.status = FinalStatus::Canceled;
                            outcome.ended_by = EndedBy::Operator;
                            outcome.error = None;
                            let _ = events.send(CallEvent::Dialing { to: body.to.clone() });
                            let _ = events.send(CallEvent::Ended { outcome: Box::new(outcome.clone()) });
                            return Ok(outcome);
                        }
                    }
                }
                Err(Create::Fail(e)) => return Err(e),
            }
        };
        let span = tracing::warn_span!("call", to = %req.to.masked(), sid = %view.sid);
        tracing::Instrument::instrument(self.follow(&view.sid, &req, &events, &cancel), span).await
    }

    async fn lookup(&self, call_sid: &str) -> Result<Option<CallSnapshot>, DialError> {
        let path = format!("/api/calls/{}", url_segment(call_sid));
        Ok(self.get_json::<CallView>(&path).await?.map(snapshot))
    }

    async fn hang_up(&self, call_sid: &str) -> Result<(), DialError> {
        self.delete(&url_segment(call_sid)).await
    }

    async fn find_calls_to(
        &self,
        to: &E164,
        since: DateTime<Utc>,
    ) -> Result<Vec<CallSnapshot>, DialError> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("to", to.as_str())
            .append_pair("since", &since.to_rfc3339())
            .finish();
        let list = self
            .get_json::<CallList>(&format!("/api/calls?{query}"))
            .await?
            .unwrap_or(CallList { calls: Vec::new() });
        Ok(list.calls.into_iter().map(snapshot).collect())
    }
}

fn url_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    /// The last `id:` seen on the stream, which applies to every later event too.
    id: Option<String>,
    event: String,
    data: String,
}

/// Reads `text/event-stream` as the WHATWG spec says: lines end in LF, CRLF or CR; a blank
/// line dispatches; `:` starts a comment; `data:` lines join with LF; one space after the
/// colon is dropped.
#[derive(Debug, Default)]
struct SseParser {
    pending: Vec<u8>,
    /// The last byte fed was a CR: an LF that starts the next chunk belongs to it.
    after_cr: bool,
    last_id: Option<String>,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.pending);
                    let line = String::from_utf8_lossy(&line).into_owned();
                    if let Some(event) = self.line(&line) {
                        out.push(event);
                    }
                }
                _ => self.pending.push(b),
            }
        }
        out
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            return Some(SseEvent {
                id: self.last_id.clone(),
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_whatever_the_chunking_and_line_endings() {
        let stream = b": keep-alive\n\nid: 0\nevent: dialing\ndata: {\"a\":1}\n\nid:1\r\nevent:line\r\ndata:x\r\ndata: y\r\n\r\n:c\rdata:z\r\r";
        for split in 0..stream.len() {
            let mut p = SseParser::default();
            let mut got = p.feed(&stream[..split]);
            got.extend(p.feed(&stream[split..]));
            assert_eq!(
                got,
                vec![
                    SseEvent {
                        id: Some("0".into()),
                        event: "dialing".into(),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        id: Some("1".into()),
                        event: "line".into(),
                        data: "x\ny".into()
                    },
                    // The id carries over; no event name means "message".
                    SseEvent {
                        id: Some("1".into()),
                        event: "message".into(),
                        data: "z".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn an_event_without_its_blank_line_is_not_dispatched() {
        let mut p = SseParser::default();
        assert!(p.feed(b"id: 3\ndata: {}\n").is_empty());
        assert_eq!(p.feed(b"\n").len(), 1);
        let mut p = SseParser::default();
        assert!(
            p.feed(b"event: x\nid: 4\n\n").is_empty(),
            "no data, nothing to dispatch"
        );
    }

    #[test]
    fn a_campaign_request_carries_its_agent_and_tools_names() {
        use crate::agent::config::AgentConfig;
        use crate::call::tools::{RemoteTools, ToolHandler, ToolReply, ToolSpec};
        use crate::campaign::tools::{OPT_OUT, RECORD_OUTCOME};
        use serde_json::{Value, json};
        use std::sync::{Arc, Mutex};

        struct Recorder(Mutex<Vec<String>>);
        impl ToolHandler for Recorder {
            fn specs(&self) -> Vec<ToolSpec> {
                vec![
                    ToolSpec {
                        name: RECORD_OUTCOME.into(),
                        description: String::new(),
                        parameters: json!({"properties":{"disposition":{"enum":["confirmed","voicemail"]}}}),
                    },
                    ToolSpec {
                        name: OPT_OUT.into(),
                        description: String::new(),
                        parameters: json!({}),
                    },
                ]
            }
            fn call(&self, name: &str, _: &Value) -> Option<ToolReply> {
                self.0.lock().unwrap().push(name.to_string());
                Some(ToolReply::ok(json!({})))
            }
            fn remote(&self) -> Option<RemoteTools> {
                Some(RemoteTools {
                    dispositions: vec!["confirmed".into(), "voicemail".into()],
                    opt_out: true,
                    keys: vec![("1".into(), "confirmed".into())],
                    transfer_on: vec!["voicemail".into()],
                })
            }
        }
        let tools = Arc::new(Recorder(Mutex::new(Vec::new())));
        let agent = AgentConfig {
            greeting: "Hi Ana".into(),
            ..AgentConfig::default()
        };
        let req = CallRequest {
            to: E164::parse("+12025550106").unwrap(),
            agent,
            tools: tools.clone(),
            ring_timeout: Duration::from_secs(20),
            time_limit: Duration::from_secs(300),
            machine_detection: true,
            record: true,
            recordings_dir: None,
            late_recording: None,
        };
        let body = new_call_body(&req);
        assert_eq!(body.record, Some(true));
        assert_eq!(
            body.agent.as_ref().map(|a| a.greeting.as_str()),
            Some("Hi Ana")
        );
        assert_eq!(
            body.dispositions,
            Some(vec!["confirmed".to_string(), "voicemail".to_string()])
        );
        assert!(body.opt_out);
        assert_eq!(body.keypad.get("1").map(String::as_str), Some("confirmed"));
        assert_eq!(body.transfer_on, vec!["voicemail".to_string()]);
        assert_eq!((body.ring_timeout, body.time_limit), (Some(20), Some(300)));
        // Only the tools the server ran successfully, and only the request's own, are replayed.
        let tool = |name: &str, ok| CallEvent::Tool {
            to: "+12025550106".into(),
            name: name.into(),
            arguments: json!({}),
            ok,
        };
        replay_tool(&req, &tool(OPT_OUT, true));
        replay_tool(&req, &tool(RECORD_OUTCOME, false));
        replay_tool(&req, &tool("end_call", true));
        assert_eq!(*tools.0.lock().unwrap(), vec![OPT_OUT.to_string()]);
    }
}

//! A local fake of Twilio Programmable Voice, as far as an outbound AI dialer touches it: the
//! Calls REST API, the account and its numbers (read-only), the call lifecycle with signed status callbacks and answering-machine
//! detection, TwiML execution, and a simulated callee that opens the `<Connect><Stream>`
//! WebSocket to our server and speaks the Media Streams protocol.
//!
//! It is built from the published protocol (`shared/reference/twilio.md`), not from what our
//! client happens to send, and rejects what Twilio rejects, so that tests against it prove
//! something. Who answers a call, and what they say, is decided by the number dialled
//! ([`crate::sim::personas`]). Every wait runs on the configured [`TimeScale`].
//!
//! Layout: `rest` serves the REST API (hyper, loopback); `calls` runs one call from queued to
//! its final status and executes its TwiML (`twiml`); `line` is the live audio of an answered
//! call — the `callee` speaking and listening, and the media stream session whose wire format
//! lives in `media`; `webhook` sends everything Twilio sends, signed by `signing`; `number`
//! judges phone numbers. The last two share no code with the client they test.
//!
//! Where Twilio's documentation leaves a choice open, or the simulator cannot do what Twilio
//! does, the choice is listed here and commented where it is made:
//! - `ws://` stream URLs are accepted for loopback hosts only (Twilio requires `wss://`; there
//!   is no TLS locally). `wss://` fails the stream with 31910: this build has no TLS client
//!   for WebSockets.
//! - Error codes Twilio does not document for a case: 21205 when none of Url/Twiml/
//!   ApplicationSid is given; 21200 (Calls resource error) when both Url and Twiml are, and for
//!   malformed Method/Timeout/TimeLimit/Record/SendDigits/Status values; 21218 for any
//!   ApplicationSid (the fake account owns no applications); 21609 for bad callback URLs;
//!   21234 for bad AMD parameters; 20001 for bad list filters; 401/20003 when the path's
//!   account is not the authenticated one.
//! - Phone numbers may carry spaces, dashes, dots and parentheses, which are dropped
//!   (`number`): Twilio's page on 21211 asks for none, its support pages say such numbers "may
//!   work", and the fake has always taken them.
//! - `StatusCallbackEvent` takes one event per value (repeated keys); space- or
//!   comma-separated lists are refused with 21626.
//! - Hanging up a call that has not been answered (`Status=completed` or `canceled`) makes it
//!   `canceled`; updating a call that has ended is 21220.
//! - Malformed TwiML, or TwiML that cannot be fetched, is Twilio's "application error": the
//!   error (12100, 11200, …) is recorded and the answered call ends `completed`.
//! - AMD verdicts are the persona's, after a modelled detection time (see `callee::amd`);
//!   `AnsweredBy` rides on webhooks sent after the verdict.
//! - The account (`GET /Accounts/{Sid}.json`) is always an active, full account; changing it,
//!   and buying, updating or verifying numbers through the API, are not simulated (a test sets
//!   numbers up with [`FakeTwilio::set_number`]). The `PhoneNumber` filter of
//!   IncomingPhoneNumbers matches partial numbers, `*` standing for any digit, as documented;
//!   that of OutgoingCallerIds matches whole numbers. A number without voice capability is
//!   still accepted as `From` (Twilio documents no code for that refusal).
//! - With `DetectMessageEnd`, an answering machine gets an early `machine_start` (once its
//!   greeting outlasts `MachineDetectionSpeechThreshold`) before `machine_end_beep`; Twilio
//!   documents only the second. Both are sent, so that a client's handling of each is tested.
//! - `<Dial>` (a transfer) rings the dialed number's persona: one that answers stays on the
//!   line for [`calls::PERSON_TALK`] and hangs up (`completed`); one that does not answer rings
//!   out the `timeout` (`no-answer`); busy and failing numbers are `busy` and `failed`. A
//!   `sip:` target answers. Then the `action` URL is requested (signed, with `DialCallStatus`,
//!   `DialCallDuration`, `DialCallSid`) and its TwiML runs; without `action` the document goes
//!   on.
//! - Callees press keys (`dtmf` on the stream) as their script says; `SendDigits` is not
//!   simulated.
//! - Recording, client targets, CPS queueing and TwiML verbs other than `<Connect><Stream>`,
//!   `<Dial>`, `<Say>`, `<Pause>`, `<Hangup>` and `<Redirect>` are not simulated.
//!
//! Faults, off unless a test asks (the default fake behaves exactly as above):
//! - REST trouble, for the next N requests of a kind ([`FakeTwilio::fail_next`]) or every
//!   request for a while ([`FakeTwilio::unavailable_for`]): 500 (code 20500) and 503 (20503)
//!   with the legacy error body, not processed; a request left unanswered until the client
//!   gives up, processed or not; a processed request answered 2xx with a body that is not
//!   JSON (a create's call exists and rings). 20500/20503 are Twilio's codes for its own
//!   trouble; the reference documents no body for 5xx, so they take the documented shape.
//! - [`StreamCloseMode::Stall`]: when our server closes the stream the TwiML goes no further
//!   and the call stays `in-progress` until it is hung up through the API (or the callee hangs
//!   up, or its time limit). Twilio does not do this; it stands in for a fallback that never comes, to catch a
//!   client that leaves ending the call to the fallback TwiML.

mod callee;
mod calls;
mod line;
mod media;
mod number;
mod rest;
mod signing;
mod twiml;
mod webhook;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::TimeScale;

/// The fake account.
#[derive(Debug, Clone)]
pub struct FakeTwilioConfig {
    pub account_sid: String,
    pub auth_token: String,
    /// Twilio numbers owned by the account: valid `From` values, voice-capable and with no
    /// Voice URL unless [`FakeTwilio::set_number`] says otherwise.
    pub numbers: Vec<String>,
    /// Numbers verified as caller IDs (OutgoingCallerIds): valid `From` values too, though
    /// not the account's numbers.
    pub verified_caller_ids: Vec<String>,
    pub time_scale: TimeScale,
    /// What a call does when our server closes its media stream.
    pub stream_close: StreamCloseMode,
}

impl Default for FakeTwilioConfig {
    fn default() -> Self {
        Self {
            account_sid: "AC00000000000000000000000000000000".into(),
            auth_token: "sim-twilio-token".into(),
            // Twilio's test-credentials From number, so the magic-number behaviour reads naturally.
            numbers: vec!["+15005550006".into()],
            verified_caller_ids: Vec::new(),
            time_scale: TimeScale::REAL_TIME,
            stream_close: StreamCloseMode::Continue,
        }
    }
}

/// How one of the account's numbers is set up (Console → Phone Numbers → the number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberSetup {
    /// `capabilities.voice`: whether the number can make and take calls.
    pub voice: bool,
    /// `voice_url`: where Twilio asks what to do with a call to the number; empty when unset.
    pub voice_url: String,
    /// `voice_method`: `GET` or `POST`.
    pub voice_method: String,
}

impl Default for NumberSetup {
    /// A number as bought: voice-capable, with no Voice URL yet.
    fn default() -> Self {
        Self {
            voice: true,
            voice_url: String::new(),
            voice_method: "POST".into(),
        }
    }
}

/// What a call does when our server closes its `<Connect><Stream>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamCloseMode {
    /// As Twilio documents: `<Connect>` ends and the TwiML goes on (the `action` URL, else the
    /// next verb, else the call ends).
    #[default]
    Continue,
    /// A fault: the TwiML goes no further and the call stays `in-progress`, silent, until it
    /// is hung up through the REST API, the callee's script hangs up, or its time limit.
    Stall,
}

/// Which REST requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requests {
    Any,
    /// `POST …/Calls.json`
    Creates,
    /// `GET …/Calls/{sid}.json`
    Fetches,
    /// `POST …/Calls/{sid}.json` (hang-ups, redirects)
    Updates,
    /// `GET …/Calls.json`
    Lists,
}

/// A REST answer gone wrong. Only authenticated requests to the account's resources are
/// faulted, after the throttle of [`FakeTwilio::throttle_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestFault {
    /// HTTP 500, Twilio error 20500; the request is not processed.
    InternalError,
    /// HTTP 503, Twilio error 20503; the request is not processed.
    Unavailable,
    /// No answer until the client gives up (or the fake shuts down); not processed.
    Hang,
    /// Processed (a create places the call, which rings), then no answer: the client cannot
    /// know what happened.
    HangAfterProcessing,
    /// Processed and answered with its 2xx status, but the body is cut short and is not JSON.
    UnreadableBody,
}

/// One REST request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// HTTP status of the response; 0 when none was sent (a hung request).
    pub status: u16,
    /// `To` of a create request, as sent.
    pub to: Option<String>,
    /// Twilio error code of an error response.
    pub error_code: Option<u32>,
    /// The call created, fetched or updated.
    pub call_sid: Option<String>,
    /// Form parameters (POST) or query parameters (GET), in the order sent.
    pub params: Vec<(String, String)>,
    /// The fault injected into this request, if any.
    pub fault: Option<RestFault>,
}

/// One webhook the fake sent (status callback, AMD callback or stream status callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// `CallStatus` of a status callback, `AnsweredBy` of an AMD callback, `StreamEvent` of a
    /// stream status callback.
    pub event: String,
    /// `SequenceNumber` of a status callback.
    pub sequence_number: Option<u32>,
    pub url: String,
    pub params: Vec<(String, String)>,
    /// What our server answered; `None` when the request failed (connection refused, timeout).
    pub http_status: Option<u16>,
}

/// A snapshot of one created call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimCall {
    pub sid: String,
    pub to: String,
    pub from: String,
    /// `outbound-api` for calls created through the API, `inbound` for calls rung in.
    pub direction: String,
    /// The resource status: queued, ringing, in-progress, completed, busy, failed, no-answer,
    /// canceled.
    pub status: String,
    pub answered_by: Option<String>,
    /// Status callbacks, in sequence order.
    pub callbacks: Vec<Callback>,
    /// Async AMD callbacks (`AsyncAmdStatusCallback`).
    pub amd_callbacks: Vec<Callback>,
    /// The TwiML document executed last.
    pub twiml: Option<String>,
    /// The media stream opened last.
    pub stream: Option<StreamRecord>,
    /// A `<Dial>` the call ran (a transfer): whom it dialed and its `DialCallStatus`.
    pub dial: Option<(String, String)>,
    /// Why the call ended: `callee`, `api`, `time-limit`, `stream-closed` (our server closed the
    /// stream and no TwiML followed), `twiml` (`<Hangup>` or the end of the document),
    /// `application-error` (TwiML could not be fetched or parsed), `network` (busy, failed,
    /// no-answer), `shutdown` (the fake was shut down).
    pub ended_by: Option<String>,
    /// Errors and warnings Twilio would show in its debugger, as `"<code> <message>"`.
    pub errors: Vec<String>,
    /// When the call was created and when it reached its final status (the fake's own clock):
    /// how many calls were live at once is judged from these.
    pub created_at: Option<Instant>,
    pub ended_at: Option<Instant>,
}

/// What happened on a call's media stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRecord {
    /// The `url` attribute, as written in the TwiML.
    pub url: String,
    pub stream_sid: Option<String>,
    /// HTTP status of the WebSocket handshake (101 when it succeeded); `None` when no HTTP
    /// response came (refused URL, connection failure, timeout).
    pub handshake_status: Option<u16>,
    pub custom_parameters: BTreeMap<String, String>,
    /// Every byte of outbound media our server sent, decoded, in arrival order (cleared audio
    /// included).
    pub audio_received: Vec<u8>,
    pub marks_received: Vec<String>,
    pub marks_echoed: Vec<String>,
    pub clears: usize,
    /// Messages from our server that Twilio would reject (31950/31951), described.
    pub rejected: Vec<String>,
    /// Agent utterances the callee heard to their end (decoded from played audio).
    pub heard: Vec<String>,
    /// Lines the callee said while this stream was open.
    pub said: Vec<String>,
    /// Our server closed the socket (rather than Twilio after `stop`).
    pub closed_by_server: bool,
    /// `<Stream statusCallback>` requests sent.
    pub status_callbacks: Vec<Callback>,
    /// What happened on the stream, in order: outbound media (bytes of consecutive messages
    /// summed), marks, clears, keys the callee pressed, and each AMD verdict as its callback
    /// was sent. Tells what the server sent between two verdicts.
    pub timeline: Vec<StreamEvent>,
}

/// One entry of [`StreamRecord::timeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Outbound audio from our server, in bytes.
    Media(usize),
    Mark(String),
    Clear,
    /// A key the callee pressed (`dtmf` sent).
    Key(char),
    /// An async AMD verdict was sent.
    Verdict(String),
}

impl StreamRecord {
    fn log(&mut self, event: StreamEvent) {
        if let (StreamEvent::Media(n), Some(StreamEvent::Media(sum))) =
            (&event, self.timeline.last_mut())
        {
            *sum += n;
            return;
        }
        self.timeline.push(event);
    }
}

/// The path of the simulator's own control that rings a number of the account (not Twilio's).
pub const RING_PATH: &str = "/_sim/ring";

/// An inbound call to ring: who calls (the persona of `from`), which number of the account
/// (the first when `None`), its Voice URL and status callback as set on that number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The Voice URL, asked with POST.
    pub url: String,
    /// The caller; `+1NXX55501YY` picks the persona, as for a call placed to it.
    pub from: String,
    pub to: Option<String>,
    pub status_callback: Option<String>,
}

/// Wait until the call has its final status and its status callbacks were sent (its record
/// then).
async fn wait_ended(shared: &Shared, sid: &str) -> Option<SimCall> {
    let mut settled = shared.with_call(sid, |c| c.ctl.settled.subscribe())?;
    let _ = settled.wait_for(|done| *done).await;
    shared.with_call(sid, |c| c.record.clone())
}

/// A running fake Twilio. Dropping it leaves its tasks running until `shutdown` is cancelled.
pub struct FakeTwilio {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeTwilio {
    /// Serve the REST API on `127.0.0.1:0` until `shutdown` is cancelled; cancelling also ends
    /// every call in progress.
    pub async fn start(
        config: FakeTwilioConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<FakeTwilio> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .user_agent("TwilioProxy/1.1")
            .build()
            .map_err(std::io::Error::other)?;
        let owned = config
            .numbers
            .iter()
            .filter_map(|n| number::e164(n))
            .map(|n| (n, sid("PN")))
            .collect();
        let verified = config
            .verified_caller_ids
            .iter()
            .filter_map(|n| number::e164(n))
            .map(|n| (n, sid("PN")))
            .collect();
        let (active, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            config,
            owned,
            verified,
            state: Mutex::new(State::default()),
            http,
            shutdown,
            epoch: (Instant::now(), Utc::now()),
            active,
        });
        tokio::spawn(rest::serve(listener, shared.clone()));
        Ok(FakeTwilio { addr, shared })
    }

    /// `http://127.0.0.1:PORT`; clients append `/2010-04-01/…`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn account_sid(&self) -> &str {
        &self.shared.config.account_sid
    }

    pub fn auth_token(&self) -> &str {
        &self.shared.config.auth_token
    }

    /// Every REST request so far, in arrival order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every call created so far, in creation order.
    pub fn calls(&self) -> Vec<SimCall> {
        self.shared
            .lock()
            .calls
            .iter()
            .map(|c| c.record.clone())
            .collect()
    }

    pub fn call(&self, sid: &str) -> Option<SimCall> {
        let state = self.shared.lock();
        state.index.get(sid).map(|&i| state.calls[i].record.clone())
    }

    /// Set up one of the account's numbers as a user would in the Console (its voice
    /// capability, Voice URL and method). Returns false, changing nothing, when the account
    /// does not own `number`.
    pub fn set_number(&self, number: &str, setup: NumberSetup) -> bool {
        let Some(number) = number::e164(number).filter(|n| self.shared.owned.contains_key(n))
        else {
            return false;
        };
        self.shared.lock().number_setup.insert(number, setup);
        true
    }

    /// Answer the next `n` requests with 429 / 20429 (too many concurrent requests): the
    /// request is not processed, and a client should back off and send it again.
    pub fn throttle_next(&self, n: u32) {
        self.shared.lock().throttle = n;
    }

    /// Answer the next `n` requests of kind `requests` with `fault`. Rules queue up; a request
    /// takes the first rule that matches it.
    pub fn fail_next(&self, requests: Requests, n: u32, fault: RestFault) {
        if n > 0 {
            self.shared.lock().rest_faults.push((requests, n, fault));
        }
    }

    /// Answer every request with 503 / 20503 for the next `d` of simulated time: an outage.
    pub fn unavailable_for(&self, d: Duration) {
        let until = Instant::now() + self.shared.scale().scale(d);
        self.shared.lock().unavailable_until = Some(until);
    }

    /// Ring one of the account's numbers as an inbound caller (see [`Incoming`]); the call's
    /// SID, or why it cannot be rung.
    pub fn ring(&self, incoming: Incoming) -> Result<String, String> {
        calls::ring(&self.shared, incoming)
    }

    /// Wait until a call has its final status; its record then.
    pub async fn wait_ended(&self, sid: &str) -> Option<SimCall> {
        wait_ended(&self.shared, sid).await
    }

    /// Wait until no call is in progress: every call has its final status and all its
    /// callbacks were delivered.
    pub async fn wait_idle(&self) {
        let mut rx = self.shared.active.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// State shared by the REST server and the call tasks.
struct Shared {
    config: FakeTwilioConfig,
    /// Owned numbers (E.164) and their `PN` SIDs.
    owned: HashMap<String, String>,
    /// Verified caller IDs (E.164) and their `PN` SIDs.
    verified: HashMap<String, String>,
    /// std Mutex: never held across an await.
    state: Mutex<State>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    /// Simulated wall clock origin: dates advance at the simulated rate from here.
    epoch: (Instant, DateTime<Utc>),
    /// Number of call tasks still running.
    active: watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    calls: Vec<CallEntry>,
    index: HashMap<String, usize>,
    requests: Vec<ApiRequest>,
    /// Calls placed per number, for personas that behave differently on a retry.
    dialed: HashMap<String, u32>,
    /// Requests still to be refused with 429 / 20429, as Twilio does when an account has too
    /// many REST requests in flight.
    throttle: u32,
    /// `fail_next` rules: which requests, how many more, what goes wrong.
    rest_faults: Vec<(Requests, u32, RestFault)>,
    /// `unavailable_for`: every request is 503 until then.
    unavailable_until: Option<Instant>,
    /// `set_number`: owned numbers set up otherwise than as bought.
    number_setup: HashMap<String, NumberSetup>,
}

struct CallEntry {
    record: SimCall,
    date_created: DateTime<Utc>,
    date_updated: DateTime<Utc>,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    /// Seconds from answer to hang-up, once an answered call ended.
    duration: Option<u64>,
    phone_number_sid: Option<String>,
    /// AMD was requested, so `AnsweredBy` travels on webhooks.
    amd: bool,
    ctl: CallControl,
}

/// How the REST API reaches a running call.
struct CallControl {
    /// Cancelled to end the call; `end_reason` says who asked. A child of the fake's shutdown
    /// token, so shutting down ends every call.
    hangup: CancellationToken,
    end_reason: Option<&'static str>,
    /// New TwiML for a live call (update with `Url`/`Twiml`).
    redirect: mpsc::UnboundedSender<calls::Source>,
    /// Becomes true once the call has its final status.
    ended: watch::Sender<bool>,
    /// Becomes true once, after that, its status callbacks were sent too.
    settled: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not make every later request panic too.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on a call's entry, if the call exists.
    fn with_call<R>(&self, sid: &str, f: impl FnOnce(&mut CallEntry) -> R) -> Option<R> {
        let mut state = self.lock();
        let i = *state.index.get(sid)?;
        Some(f(&mut state.calls[i]))
    }

    /// Run `f` on the call's current stream record, if any.
    fn with_stream(&self, sid: &str, f: impl FnOnce(&mut StreamRecord)) {
        self.with_call(sid, |c| {
            if let Some(s) = c.record.stream.as_mut() {
                f(s);
            }
        });
    }

    fn note_error(&self, sid: &str, code: u32, message: impl Into<String>) {
        let line = format!("{code} {}", message.into());
        tracing::debug!(call = sid, "{line}");
        self.with_call(sid, |c| c.record.errors.push(line));
    }

    /// Ask for the call to end (first reason wins).
    fn request_end(&self, sid: &str, reason: &'static str) {
        self.with_call(sid, |c| {
            c.ctl.end_reason.get_or_insert(reason);
            c.ctl.hangup.cancel();
        });
    }

    fn scale(&self) -> TimeScale {
        self.config.time_scale
    }

    /// Simulated time elapsed for a real duration.
    fn simulated(&self, real: Duration) -> Duration {
        let s = self.config.time_scale.0;
        if s > 1e-6 { real.div_f64(s) } else { real }
    }

    /// The simulated wall clock.
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.simulated(self.epoch.0.elapsed());
        chrono::Duration::from_std(elapsed)
            .ok()
            .and_then(|d| self.epoch.1.checked_add_signed(d))
            .unwrap_or(self.epoch.1)
    }
}

/// Counts a call task as active for [`FakeTwilio::wait_idle`] while alive.
struct ActiveGuard(Arc<Shared>);

impl ActiveGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.active.send_modify(|n| *n += 1);
        Self(shared)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A new SID: prefix and 32 lowercase hex digits.
fn sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// RFC 2822, as the 2010-04-01 API writes dates.
fn rfc2822(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

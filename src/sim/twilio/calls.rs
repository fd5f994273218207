//! One call's life, from `queued` to its final status: dialling as the callee's persona
//! dictates (busy, failed, no answer, answered after ringing), status callbacks delivered in
//! order, answering-machine detection, TwiML execution (inline, fetched from `Url`, redirects,
//! `<Connect>` actions), the time limit, and hang-ups requested through the REST API. An
//! inbound call ([`ring`]) is the same life seen from the number called: the persona is the
//! caller, the number's Voice URL is asked for TwiML while the call rings, and the number's
//! status callback hears only the end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::sim::personas::{self, Network, Persona};
use crate::sim::speech;

use super::callee::{self, AmdSettings};
use super::line::{self, LineCmd, LineHandle, StreamEnd, StreamSpec};
use super::twiml::{self, Document, Verb};
use super::webhook::{self, Hook};
use super::{ActiveGuard, CallControl, CallEntry, Callback, Shared, SimCall, StreamCloseMode};

/// Where a call's TwiML comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Url(Hook),
    Inline(String),
}

/// Which status callback events were subscribed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Events {
    pub initiated: bool,
    pub ringing: bool,
    pub answered: bool,
    pub completed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Initiated,
    Ringing,
    Answered,
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Amd {
    pub settings: AmdSettings,
    pub asynchronous: bool,
    pub callback: Option<Hook>,
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CallSpec {
    /// E.164.
    pub to: String,
    pub from: String,
    pub source: Source,
    pub fallback: Option<Hook>,
    pub status_callback: Option<Hook>,
    pub events: Events,
    pub timeout: Duration,
    pub time_limit: Duration,
    pub amd: Option<Amd>,
    /// A call to one of the account's numbers, from the persona of `from`.
    pub inbound: bool,
}

/// Simulated network delays.
const QUEUE_DELAY: Duration = Duration::from_millis(200);
const BUSY_AFTER: Duration = Duration::from_millis(1500);
const FAIL_AFTER: Duration = Duration::from_millis(1000);
/// `BusyThenAnswers` personas pick up after this much ringing on later attempts.
const RETRY_ANSWER_AFTER: Duration = Duration::from_secs(2);
/// No verb outlasts the longest possible call; capping keeps huge `loop`/`length` values from
/// overflowing time arithmetic.
const MAX_VERB: Duration = Duration::from_secs(24 * 3600);
/// What Twilio says before hanging up when it cannot run the TwiML.
const APPLICATION_ERROR: &str = "We are sorry, an application error has occurred. Goodbye.";

/// Register a new call (status `queued`) and start its task. Returns the call SID.
pub(super) fn place(shared: &Arc<Shared>, spec: CallSpec) -> String {
    let sid = super::sid("CA");
    let now = shared.now();
    let (redirect_tx, redirect_rx) = mpsc::unbounded_channel();
    let hangup = shared.shutdown.child_token();
    let (ended, _) = watch::channel(false);
    let (settled, _) = watch::channel(false);
    let entry = CallEntry {
        record: SimCall {
            sid: sid.clone(),
            to: spec.to.clone(),
            from: spec.from.clone(),
            status: if spec.inbound { "ringing" } else { "queued" }.into(),
            direction: if spec.inbound {
                "inbound"
            } else {
                "outbound-api"
            }
            .into(),
            created_at: Some(std::time::Instant::now()),
            ..SimCall::default()
        },
        date_created: now,
        date_updated: now,
        start_time: None,
        end_time: None,
        duration: None,
        // The number of ours the call is from, or for an inbound call the one it is to.
        phone_number_sid: shared
            .owned
            .get(if spec.inbound { &spec.to } else { &spec.from })
            .cloned(),
        amd: spec.amd.is_some(),
        ctl: CallControl {
            hangup: hangup.clone(),
            end_reason: None,
            redirect: redirect_tx,
            ended,
            settled,
        },
    };
    {
        let mut state = shared.lock();
        let i = state.calls.len();
        state.calls.push(entry);
        state.index.insert(sid.clone(), i);
    }
    // Counted before the task starts so `wait_idle` right after a create waits for it.
    let guard = ActiveGuard::new(shared.clone());
    tokio::spawn(run(
        shared.clone(),
        sid.clone(),
        spec,
        hangup,
        redirect_rx,
        guard,
    ));
    sid
}

/// Ring one of the account's numbers as an inbound caller: the persona of `From` calls, the
/// Voice URL (POST) is asked for TwiML, and the status callback hears the end. Returns the
/// call SID, or why the call cannot be rung.
pub(super) fn ring(shared: &Arc<Shared>, incoming: super::Incoming) -> Result<String, String> {
    let url = Url::parse(&incoming.url).map_err(|e| format!("Url {:?}: {e}", incoming.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("Url {:?} is not http(s)", incoming.url));
    }
    let to = match incoming.to {
        Some(to) => super::number::e164(&to).ok_or_else(|| format!("To {to:?} is not a number"))?,
        None => shared
            .config
            .numbers
            .first()
            .and_then(|n| super::number::e164(n))
            .ok_or("the account has no number to ring")?,
    };
    if !shared.owned.contains_key(&to) {
        return Err(format!("To {to} is not a number of the account"));
    }
    let status_callback = match incoming.status_callback {
        None => None,
        Some(cb) => {
            Url::parse(&cb).map_err(|e| format!("StatusCallback {cb:?}: {e}"))?;
            Some(Hook {
                url: cb,
                method: "POST".into(),
            })
        }
    };
    let spec = CallSpec {
        to,
        from: incoming.from,
        source: Source::Url(Hook {
            url: incoming.url,
            method: "POST".into(),
        }),
        fallback: None,
        status_callback,
        // A number's status callback is told of the end only.
        events: Events {
            completed: true,
            ..Events::default()
        },
        timeout: Duration::ZERO,
        time_limit: INBOUND_TIME_LIMIT,
        amd: None,
        inbound: true,
    };
    Ok(place(shared, spec))
}

/// Twilio's longest call: an inbound call has no `TimeLimit` of its own.
const INBOUND_TIME_LIMIT: Duration = Duration::from_secs(4 * 3600);

/// How a call ended.
struct Outcome {
    status: &'static str,
    sip: u16,
    ended_by: &'static str,
    answered: bool,
}

async fn run(
    shared: Arc<Shared>,
    sid: String,
    spec: CallSpec,
    hangup: CancellationToken,
    mut redirects: mpsc::UnboundedReceiver<Source>,
    _guard: ActiveGuard,
) {
    let mut status = StatusQueue::new(&shared, &sid, &spec);
    let outcome = lifecycle(&shared, &sid, &spec, &hangup, &mut redirects, &mut status).await;
    let now = shared.now();
    let talk_secs = shared
        .with_call(&sid, |c| {
            c.record.status = outcome.status.to_string();
            c.record.ended_by = Some(outcome.ended_by.to_string());
            c.record.ended_at = Some(std::time::Instant::now());
            c.end_time = Some(now);
            c.date_updated = now;
            if !outcome.answered {
                c.duration = None;
            }
            c.duration.unwrap_or(0)
        })
        .unwrap_or(0);
    // Billed minutes, rounded up.
    let minutes = talk_secs.div_ceil(60);
    status.emit(
        &shared,
        Event::Completed,
        outcome.status,
        vec![
            ("CallDuration".into(), talk_secs.to_string()),
            ("Duration".into(), minutes.to_string()),
            ("SipResponseCode".into(), outcome.sip.to_string()),
        ],
    );
    shared.with_call(&sid, |c| c.ctl.ended.send_replace(true));
    status.finish().await;
    shared.with_call(&sid, |c| c.ctl.settled.send_replace(true));
}

async fn lifecycle(
    shared: &Arc<Shared>,
    sid: &str,
    spec: &CallSpec,
    hangup: &CancellationToken,
    redirects: &mut mpsc::UnboundedReceiver<Source>,
    status: &mut StatusQueue,
) -> Outcome {
    if spec.inbound {
        return incoming(shared, sid, spec, hangup, redirects).await;
    }
    let persona = personas::for_number(&spec.to);
    let canceled = || Outcome {
        status: "canceled",
        sip: 487,
        ended_by: end_reason(shared, sid),
        answered: false,
    };
    let network_end = |status, sip| Outcome {
        status,
        sip,
        ended_by: "network",
        answered: false,
    };

    if !wait(shared, QUEUE_DELAY, hangup).await {
        return canceled();
    }
    let attempt = {
        let mut state = shared.lock();
        let n = state.dialed.entry(spec.to.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let now = shared.now();
    shared.with_call(sid, |c| {
        c.start_time = Some(now);
        c.date_updated = now;
    });
    status.emit(shared, Event::Initiated, "initiated", Vec::new());

    let network = match persona.network {
        Network::BusyThenAnswers if attempt == 1 => Network::Busy,
        Network::BusyThenAnswers => Network::Answers {
            after: RETRY_ANSWER_AFTER,
        },
        n => n,
    };
    let answers_after = match network {
        Network::Busy => {
            if !wait(shared, BUSY_AFTER, hangup).await {
                return canceled();
            }
            return network_end("busy", 486);
        }
        Network::Fails => {
            if !wait(shared, FAIL_AFTER, hangup).await {
                return canceled();
            }
            return network_end("failed", 404);
        }
        Network::NoAnswer => None,
        Network::Answers { after } => Some(after),
        Network::BusyThenAnswers => None,
    };

    set_status(shared, sid, "ringing");
    status.emit(shared, Event::Ringing, "ringing", Vec::new());
    match answers_after {
        Some(after) if after <= spec.timeout => {
            if !wait(shared, after, hangup).await {
                return canceled();
            }
        }
        _ => {
            if !wait(shared, spec.timeout, hangup).await {
                return canceled();
            }
            return network_end("no-answer", 487);
        }
    }

    let answered_at = tokio::time::Instant::now();
    set_status(shared, sid, "in-progress");
    status.emit(shared, Event::Answered, "in-progress", Vec::new());
    let line = line::spawn(shared.clone(), sid.to_string(), persona);
    let over = CancellationToken::new();
    if let Some(amd) = spec.amd.as_ref().filter(|a| a.asynchronous) {
        spawn_async_amd(
            shared.clone(),
            sid.to_string(),
            persona,
            amd.clone(),
            over.clone(),
        );
    }

    let ended_by = tokio::select! {
        reason = execute(shared, sid, spec, persona, &line, redirects) => reason,
        _ = hangup.cancelled() => end_reason(shared, sid),
        _ = shared.scale().sleep(spec.time_limit) => "time-limit",
    };
    let talk = shared.simulated(answered_at.elapsed()).as_secs();
    shared.with_call(sid, |c| c.duration = Some(talk));
    over.cancel();
    line.finish().await;
    Outcome {
        status: "completed",
        sip: 200,
        ended_by,
        answered: true,
    }
}

/// An inbound call: the caller (the persona of `From`) is on the line from the start; the
/// Voice URL's TwiML answers it. Twilio asks for that TwiML while the call rings and the call
/// is `in-progress` once its TwiML runs; the number's status callback subscribes to the end
/// only. The talk time counts from the answer.
async fn incoming(
    shared: &Arc<Shared>,
    sid: &str,
    spec: &CallSpec,
    hangup: &CancellationToken,
    redirects: &mut mpsc::UnboundedReceiver<Source>,
) -> Outcome {
    let persona = personas::for_number(&spec.from);
    let now = shared.now();
    shared.with_call(sid, |c| {
        c.start_time = Some(now);
        c.date_updated = now;
    });
    let answered_at = tokio::time::Instant::now();
    let line = line::spawn(shared.clone(), sid.to_string(), persona);
    let ended_by = tokio::select! {
        reason = execute(shared, sid, spec, persona, &line, redirects) => reason,
        _ = hangup.cancelled() => end_reason(shared, sid),
        _ = shared.scale().sleep(spec.time_limit) => "time-limit",
    };
    let talk = shared.simulated(answered_at.elapsed()).as_secs();
    shared.with_call(sid, |c| c.duration = Some(talk));
    line.finish().await;
    Outcome {
        status: "completed",
        sip: 200,
        ended_by,
        answered: true,
    }
}

/// Sleep for a simulated duration unless the call is hung up first (then `false`).
async fn wait(shared: &Shared, d: Duration, hangup: &CancellationToken) -> bool {
    tokio::select! {
        _ = hangup.cancelled() => false,
        _ = shared.scale().sleep(d) => true,
    }
}

fn end_reason(shared: &Shared, sid: &str) -> &'static str {
    shared
        .with_call(sid, |c| c.ctl.end_reason)
        .flatten()
        .unwrap_or("shutdown")
}

fn set_status(shared: &Shared, sid: &str, status: &str) {
    let now = shared.now();
    shared.with_call(sid, |c| {
        c.record.status = status.to_string();
        c.date_updated = now;
    });
}

/// The standard request parameters Twilio sends with every voice webhook.
fn call_params(shared: &Shared, sid: &str, call_status: &str) -> Vec<(String, String)> {
    let account = shared.config.account_sid.clone();
    shared
        .with_call(sid, |c| {
            let mut p = vec![
                ("AccountSid".to_string(), account),
                ("ApiVersion".to_string(), "2010-04-01".to_string()),
                ("CallSid".to_string(), sid.to_string()),
                ("CallStatus".to_string(), call_status.to_string()),
                ("Called".to_string(), c.record.to.clone()),
                ("Caller".to_string(), c.record.from.clone()),
                ("Direction".to_string(), c.record.direction.clone()),
                ("From".to_string(), c.record.from.clone()),
                ("To".to_string(), c.record.to.clone()),
            ];
            if let (true, Some(by)) = (c.amd, &c.record.answered_by) {
                p.push(("AnsweredBy".to_string(), by.clone()));
            }
            p
        })
        .unwrap_or_default()
}

/// Status callbacks of one call, numbered and delivered one after another in a background
/// task, so a slow webhook never stalls the call but order is kept.
/// A queued status callback: `CallStatus`, `SequenceNumber`, the form parameters.
type Queued = (String, u32, Vec<(String, String)>);

struct StatusQueue {
    sid: String,
    events: Events,
    next_seq: u32,
    tx: Option<mpsc::UnboundedSender<Queued>>,
    join: Option<JoinHandle<()>>,
}

impl StatusQueue {
    fn new(shared: &Arc<Shared>, sid: &str, spec: &CallSpec) -> Self {
        let Some(hook) = spec.status_callback.clone() else {
            return Self {
                sid: sid.to_string(),
                events: spec.events,
                next_seq: 0,
                tx: None,
                join: None,
            };
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        let shared = shared.clone();
        let task_sid = sid.to_string();
        let join = tokio::spawn(async move {
            while let Some((event, seq, params)) = rx.recv().await {
                let http_status = webhook::send(&shared, &hook, &params).await;
                shared.with_call(&task_sid, |c| {
                    c.record.callbacks.push(Callback {
                        event,
                        sequence_number: Some(seq),
                        url: hook.url.clone(),
                        params,
                        http_status,
                    })
                });
            }
        });
        Self {
            sid: sid.to_string(),
            events: spec.events,
            next_seq: 0,
            tx: Some(tx),
            join: Some(join),
        }
    }

    fn emit(
        &mut self,
        shared: &Shared,
        event: Event,
        call_status: &str,
        extra: Vec<(String, String)>,
    ) {
        let subscribed = match event {
            Event::Initiated => self.events.initiated,
            Event::Ringing => self.events.ringing,
            Event::Answered => self.events.answered,
            Event::Completed => self.events.completed,
        };
        let Some(tx) = self.tx.as_ref().filter(|_| subscribed) else {
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut params = call_params(shared, &self.sid, call_status);
        params.extend([
            ("Timestamp".to_string(), super::rfc2822(shared.now())),
            (
                "CallbackSource".to_string(),
                "call-progress-events".to_string(),
            ),
            ("SequenceNumber".to_string(), seq.to_string()),
        ]);
        params.extend(extra);
        let _ = tx.send((call_status.to_string(), seq, params));
    }

    async fn finish(mut self) {
        self.tx = None;
        if let Some(j) = self.join.take() {
            let _ = j.await;
        }
    }
}

/// Async AMD: the verdict is POSTed on its own, without holding up the call; a call that ends
/// first gets no verdict. Counted for `FakeTwilio::wait_idle`.
fn spawn_async_amd(
    shared: Arc<Shared>,
    sid: String,
    persona: &'static Persona,
    amd: Amd,
    over: CancellationToken,
) {
    let guard = ActiveGuard::new(shared.clone());
    tokio::spawn(async move {
        let _guard = guard;
        let started = tokio::time::Instant::now();
        for (verdict, took) in callee::amd_verdicts(persona, &amd.settings) {
            tokio::select! {
                _ = over.cancelled() => return,
                _ = tokio::time::sleep_until(started + shared.scale().scale(took)) => {}
            }
            if !send_verdict(&shared, &sid, &amd, verdict, took).await {
                return;
            }
        }
    });
}

/// One async AMD callback; `false` when there is nowhere to send it.
async fn send_verdict(
    shared: &Shared,
    sid: &str,
    amd: &Amd,
    verdict: String,
    took: Duration,
) -> bool {
    {
        let (verdict, took) = (verdict, took);
        let sid = sid.to_string();
        shared.with_call(&sid, |c| {
            c.record.answered_by = Some(verdict.clone());
            if let Some(s) = c.record.stream.as_mut() {
                s.log(super::StreamEvent::Verdict(verdict.clone()));
            }
        });
        let Some(hook) = amd.callback.clone() else {
            shared.note_error(
                &sid,
                21262,
                "AsyncAmd is enabled but no AsyncAmdStatusCallback was given",
            );
            return false;
        };
        let params = vec![
            ("AccountSid".to_string(), shared.config.account_sid.clone()),
            ("AnsweredBy".to_string(), verdict.clone()),
            ("CallSid".to_string(), sid.clone()),
            (
                "MachineDetectionDuration".to_string(),
                took.as_millis().to_string(),
            ),
        ];
        let http_status = webhook::send(shared, &hook, &params).await;
        shared.with_call(&sid, |c| {
            c.record.amd_callbacks.push(Callback {
                event: verdict,
                sequence_number: None,
                url: hook.url,
                params,
                http_status,
            })
        });
        true
    }
}

/// What the TwiML executor does next.
enum Flow {
    /// The call ends, for this reason.
    End(&'static str),
    /// Run another document, fetched with these parameters added (a `<Dial action>`'s).
    Goto(Source, Vec<(String, String)>),
}

/// How long a person who takes a transfer stays on the line (simulated).
pub(super) const PERSON_TALK: Duration = Duration::from_secs(5);

/// Run the call's TwiML until it ends the call. Returns why the call ended.
async fn execute(
    shared: &Arc<Shared>,
    sid: &str,
    spec: &CallSpec,
    persona: &'static Persona,
    line: &LineHandle,
    redirects: &mut mpsc::UnboundedReceiver<Source>,
) -> &'static str {
    let mut extra = Vec::new();
    if let Some(amd) = spec.amd.as_ref().filter(|a| !a.asynchronous) {
        // Synchronous AMD holds the call flow until the verdict.
        let (verdict, took) = callee::amd(persona, &amd.settings);
        shared.scale().sleep(took).await;
        shared.with_call(sid, |c| c.record.answered_by = Some(verdict));
        extra.push((
            "MachineDetectionDuration".to_string(),
            took.as_millis().to_string(),
        ));
    }
    let mut source = spec.source.clone();
    let mut fallback = spec.fallback.clone();
    loop {
        let (text, base) = match &source {
            Source::Inline(t) => (t.clone(), None),
            Source::Url(hook) => {
                // An inbound call rings until its first TwiML runs.
                let ringing = shared
                    .with_call(sid, |c| c.record.status == "ringing")
                    .unwrap_or(false);
                let status = if ringing { "ringing" } else { "in-progress" };
                let mut params = call_params(shared, sid, status);
                params.append(&mut extra);
                match fetch(shared, sid, hook, fallback.take(), params).await {
                    Some(text) => (text, Url::parse(&hook.url).ok()),
                    None => return application_error(shared).await,
                }
            }
        };
        shared.with_call(sid, |c| c.record.twiml = Some(text.clone()));
        if shared
            .with_call(sid, |c| c.record.status == "ringing")
            .unwrap_or(false)
        {
            set_status(shared, sid, "in-progress");
        }
        let doc = match twiml::parse(&text) {
            Ok(doc) => doc,
            Err(e) => {
                shared.note_error(sid, 12100, format!("Document parse failure: {e}"));
                return application_error(shared).await;
            }
        };
        for w in &doc.warnings {
            shared.with_call(sid, |c| c.record.errors.push(w.clone()));
        }
        match run_document(shared, sid, &doc, base.as_ref(), line, redirects).await {
            Flow::End(reason) => return reason,
            Flow::Goto(next, params) => {
                source = next;
                extra = params;
            }
        }
    }
}

/// Fetch TwiML from `hook`, then from the fallback URL if that fails.
async fn fetch(
    shared: &Shared,
    sid: &str,
    hook: &Hook,
    fallback: Option<Hook>,
    params: Vec<(String, String)>,
) -> Option<String> {
    match webhook::fetch_twiml(shared, hook, &params).await {
        Ok(text) => return Some(text),
        Err((code, message)) => shared.note_error(sid, code, message),
    }
    let fallback = fallback?;
    let mut params = params;
    params.push(("ErrorCode".to_string(), "11200".to_string()));
    params.push(("ErrorUrl".to_string(), hook.url.clone()));
    match webhook::fetch_twiml(shared, &fallback, &params).await {
        Ok(text) => Some(text),
        Err((code, message)) => {
            shared.note_error(sid, code, message);
            None
        }
    }
}

/// Twilio apologises and hangs up when it cannot run the TwiML.
async fn application_error(shared: &Shared) -> &'static str {
    shared.scale().sleep(say_duration(APPLICATION_ERROR)).await;
    "application-error"
}

fn say_duration(text: &str) -> Duration {
    Duration::from_millis((speech::encode(text).len() / speech::BYTES_PER_MS) as u64)
}

async fn run_document(
    shared: &Arc<Shared>,
    sid: &str,
    doc: &Document,
    base: Option<&Url>,
    line: &LineHandle,
    redirects: &mut mpsc::UnboundedReceiver<Source>,
) -> Flow {
    let mut stream_closed_last = false;
    for verb in &doc.verbs {
        let step = tokio::select! {
            step = run_verb(shared, sid, verb, base, line) => step,
            Some(next) = redirects.recv() => {
                // New TwiML replaces the running document, ending an open stream.
                let _ = line.cmd.send(LineCmd::Disconnect);
                return Flow::Goto(next, Vec::new());
            }
        };
        match step {
            VerbEnd::Next { stream_closed } => stream_closed_last = stream_closed,
            VerbEnd::Flow(flow) => return flow,
        }
    }
    Flow::End(if stream_closed_last {
        "stream-closed"
    } else {
        "twiml"
    })
}

enum VerbEnd {
    Next { stream_closed: bool },
    Flow(Flow),
}

async fn run_verb(
    shared: &Arc<Shared>,
    sid: &str,
    verb: &Verb,
    base: Option<&Url>,
    line: &LineHandle,
) -> VerbEnd {
    let next = VerbEnd::Next {
        stream_closed: false,
    };
    match verb {
        Verb::Say { repeat: 0, .. } => {
            // loop="0" repeats until the call ends.
            std::future::pending::<()>().await;
            next
        }
        Verb::Say { text, repeat } => {
            let d = say_duration(text).checked_mul(*repeat).unwrap_or(MAX_VERB);
            shared.scale().sleep(d.min(MAX_VERB)).await;
            next
        }
        Verb::Pause { seconds } => {
            let d = Duration::from_secs(*seconds).min(MAX_VERB);
            shared.scale().sleep(d).await;
            next
        }
        Verb::Hangup => VerbEnd::Flow(Flow::End("twiml")),
        Verb::Dial(dial) => {
            let (status, talked) = ring_person(shared, &dial.target, dial.timeout).await;
            shared.with_call(sid, |c| {
                c.record.dial = Some((dial.target.clone(), status.to_string()));
            });
            let Some(action) = &dial.action else {
                return next;
            };
            match hook(action, &dial.method, base) {
                Ok(h) => VerbEnd::Flow(Flow::Goto(
                    Source::Url(h),
                    vec![
                        ("DialCallSid".to_string(), super::sid("CA")),
                        ("DialCallStatus".to_string(), status.to_string()),
                        ("DialCallDuration".to_string(), talked.as_secs().to_string()),
                    ],
                )),
                Err(e) => {
                    shared.note_error(sid, 11100, format!("Dial action: {e}"));
                    next
                }
            }
        }
        Verb::Redirect { url, method } => match hook(url, method, base) {
            Ok(h) => VerbEnd::Flow(Flow::Goto(Source::Url(h), Vec::new())),
            Err(e) => {
                shared.note_error(sid, 11100, format!("Redirect: {e}"));
                next
            }
        },
        Verb::Connect(connect) => {
            let noun = &connect.stream;
            shared.with_call(sid, |c| {
                c.record.stream = Some(line::new_record(&noun.url, &noun.parameters));
            });
            let status_callback = match &noun.status_callback {
                None => None,
                Some(url) => match hook(url, &noun.status_callback_method, base) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        shared.note_error(sid, 11100, format!("Stream statusCallback: {e}"));
                        None
                    }
                },
            };
            let stream_closed = match super::media::stream_url(&noun.url, base) {
                Err(refused) => {
                    shared.note_error(sid, refused.code, refused.message);
                    false
                }
                Ok((signed, connect_url)) => {
                    let (tx, rx) = oneshot::channel();
                    let spec = StreamSpec {
                        url: signed,
                        connect_url,
                        name: noun.name.clone(),
                        parameters: noun.parameters.clone(),
                        status_callback,
                    };
                    if line.cmd.send(LineCmd::Connect(spec, tx)).is_err() {
                        return next;
                    }
                    // `<Connect>` blocks until the stream ends.
                    matches!(rx.await, Ok(StreamEnd::ServerClosed))
                }
            };
            if stream_closed && shared.config.stream_close == StreamCloseMode::Stall {
                // The fault: nothing follows. The call task's hang-up and time-limit watch
                // still end the call.
                std::future::pending::<()>().await;
            }
            if let Some(action) = &connect.action {
                return match hook(action, &connect.method, base) {
                    Ok(h) => VerbEnd::Flow(Flow::Goto(Source::Url(h), Vec::new())),
                    Err(e) => {
                        shared.note_error(sid, 11100, format!("Connect action: {e}"));
                        VerbEnd::Next { stream_closed }
                    }
                };
            }
            VerbEnd::Next { stream_closed }
        }
    }
}

/// Ring the person a `<Dial>` names, as their number's persona does: its `DialCallStatus`
/// and how long they talked.
async fn ring_person(shared: &Shared, target: &str, timeout: u64) -> (&'static str, Duration) {
    let timeout = Duration::from_secs(timeout);
    let network = if target.starts_with("sip:") {
        Network::Answers {
            after: Duration::from_secs(1),
        }
    } else {
        personas::for_number(&number_of(target)).network
    };
    match network {
        Network::Answers { after } if after <= timeout => {
            shared.scale().sleep(after + PERSON_TALK).await;
            ("completed", PERSON_TALK)
        }
        Network::Answers { .. } | Network::NoAnswer => {
            shared.scale().sleep(timeout).await;
            ("no-answer", Duration::ZERO)
        }
        Network::Busy | Network::BusyThenAnswers => {
            shared.scale().sleep(BUSY_AFTER).await;
            ("busy", Duration::ZERO)
        }
        Network::Fails => {
            shared.scale().sleep(FAIL_AFTER).await;
            ("failed", Duration::ZERO)
        }
    }
}

/// A dialed number as E.164, separators dropped.
fn number_of(target: &str) -> String {
    target
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect()
}

/// An absolute http(s) URL from TwiML (relative ones resolve against the document's URL).
fn hook(raw: &str, method: &str, base: Option<&Url>) -> Result<Hook, String> {
    let url = match (Url::parse(raw), base) {
        (Ok(u), _) => u,
        (Err(url::ParseError::RelativeUrlWithoutBase), Some(b)) => b
            .join(raw)
            .map_err(|e| format!("invalid URL {raw:?}: {e}"))?,
        (Err(e), _) => return Err(format!("invalid URL {raw:?}: {e}")),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("invalid URL {raw:?}: not http(s)"));
    }
    let method = match method {
        "GET" | "POST" => method.to_string(),
        other => return Err(format!("invalid method {other:?}")),
    };
    Ok(Hook {
        url: if Url::parse(raw).is_ok() {
            raw.to_string()
        } else {
            url.to_string()
        },
        method,
    })
}

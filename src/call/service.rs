//! Placing calls for real: create the call through Twilio, follow its callbacks through the
//! state machine, bridge its Media Stream to a Voice Agent session, hang up when the agent or
//! the operator says so, and report how it ended. The same code runs against Twilio and the
//! Voice Agent API or against the simulators; only the endpoints differ.

use super::bridge::{self, BridgeEnd, BridgeReport, BridgeSetup, Reconnect, SetupFailure};
use super::dialer::{CallRequest, CallSnapshot, DialError, Dialer};
use super::ending::{AtTwilio, Ending};
use super::registry::{CallSignal, DialResult, IncomingStream, Registry, StatusUpdate};
use super::state::{CallState, Input};
use super::transfer::{self, Target, TransferOutcome};
use super::voicemail::{self, MachineEnd, Verdicts};
use crate::agent;
use crate::agent::config::{RecordingDisclosure, discloses_recording};
use crate::events::{
    CallEvent, CallLatency, Direction, EndedBy, FinalStatus, LocalRecording, Outcome, OutcomeError,
    TwilioRecording,
};
use crate::metrics::Metrics;
use crate::phone::E164;
use crate::recording::recorder;
use crate::secret::Secret;
use crate::settings::DEFAULT_RECORDINGS_DIR;
use crate::twilio::{
    AnsweredBy, CallResource, CallStatus, NewCall, TwilioClient, TwilioError, twiml,
};
use crate::webhooks::PublicUrls;
use crate::ws::Frame;
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Waits that shape a call's life; shortened in tests.
#[derive(Debug, Clone)]
pub struct Timings {
    /// For the agent's `session.ready`.
    pub agent_setup: Duration,
    /// For Twilio to echo the goodbye mark.
    pub goodbye_mark: Duration,
    /// For Twilio's final status once the call is ending, before asking the API instead.
    pub final_status: Duration,
    /// For the Media Stream once the call is answered (a wrong PUBLIC_URL shows up here).
    pub stream_after_answer: Duration,
    /// How long callbacks may be quiet before the API is asked about the call (while the
    /// Media Stream is bridged the conversation itself shows the call is live).
    pub poll_every: Duration,
    /// How long the agent may send nothing while the callee's audio flows before the session
    /// is taken for dead. The agent answers every turn and prompts a silent callee well
    /// within this.
    pub agent_silence: Duration,
    /// For Twilio's `completed` recording callback once a recorded call has ended (Twilio
    /// sends it after the call, usually within seconds); later news goes to the request's
    /// late hook.
    pub recording_wait: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            agent_setup: Duration::from_secs(10),
            goodbye_mark: Duration::from_secs(20),
            final_status: Duration::from_secs(15),
            stream_after_answer: Duration::from_secs(20),
            poll_every: Duration::from_secs(20),
            agent_silence: Duration::from_secs(45),
            recording_wait: Duration::from_secs(5),
        }
    }
}

/// Where the call service reaches things.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub from: E164,
    /// How Twilio reaches our server.
    pub urls: PublicUrls,
    pub agent_url: String,
    pub agent_key: Secret,
}

/// Places calls and follows each to its end. Cheap to share (`Arc`).
pub struct CallService {
    twilio: TwilioClient,
    endpoints: Endpoints,
    registry: Arc<Registry>,
    timings: Timings,
    metrics: Arc<Metrics>,
}

impl CallService {
    pub fn new(twilio: TwilioClient, endpoints: Endpoints, registry: Arc<Registry>) -> Self {
        Self {
            twilio,
            endpoints,
            registry,
            timings: Timings::default(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// Count this service's calls in `metrics` (by default they go to counters of its own).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The number our calls come from.
    pub fn from_number(&self) -> &E164 {
        &self.endpoints.from
    }

    pub fn twilio(&self) -> &TwilioClient {
        &self.twilio
    }

    /// A trial Voice Agent session with this agent, before anyone is called (see
    /// [`agent::client::preflight`]).
    pub async fn check_agent(
        &self,
        agent: &crate::agent::config::AgentConfig,
    ) -> Result<(), agent::client::PreflightError> {
        agent::client::preflight(
            &self.endpoints.agent_url,
            &self.endpoints.agent_key,
            agent,
            &[],
            self.timings.agent_setup,
        )
        .await
    }
}

/// What one call has gathered so far: its state machine, what Twilio told about it, and the
/// times its waits count from.
struct Call<'a> {
    req: &'a CallRequest,
    /// The other party: the number called, or an inbound call's caller.
    to: String,
    direction: Direction,
    state: CallState,
    events: &'a mpsc::UnboundedSender<CallEvent>,
    answered_at: Option<Instant>,
    answered_by: Option<AnsweredBy>,
    duration_secs: Option<u64>,
    error: Option<OutcomeError>,
    bridge: Option<BridgeReport>,
    /// Highest callback sequence number seen, to tell stale callbacks from new ones.
    last_sequence: Option<u32>,
    /// When the call was created, answered, began ending, and last heard of.
    created: TokioInstant,
    answered_since: Option<TokioInstant>,
    ending_since: Option<TokioInstant>,
    last_heard: TokioInstant,
    /// Spreads the calls' status checks so that they do not all fall due at once.
    poll_jitter: Duration,
    /// Twilio's recording, as its callbacks have described it so far.
    recording: Option<TwilioRecording>,
    /// The WAV written here.
    local_recording: Option<LocalRecording>,
    /// The call's one-time token (its callback URLs carry it).
    token: String,
    /// A machine answered, and what became of it.
    machine: Option<MachineEnd>,
    transfer: Option<TransferOutcome>,
}

/// What a call's next timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The time limit (with a little grace: the bridge enforces the limit itself).
    TimeLimit,
    /// Ending, but Twilio's final status is late.
    FinalOverdue,
    /// Answered, but the Media Stream has not come.
    StreamMissing,
    /// No callback for a while: ask the API.
    CallbacksQuiet,
}

impl<'a> Call<'a> {
    fn new(
        req: &'a CallRequest,
        events: &'a mpsc::UnboundedSender<CallEvent>,
        poll: Duration,
    ) -> Self {
        let now = TokioInstant::now();
        Self {
            req,
            to: req.to.to_string(),
            direction: Direction::Outbound,
            state: CallState::Placing,
            events,
            answered_at: None,
            answered_by: None,
            duration_secs: None,
            error: None,
            bridge: None,
            last_sequence: None,
            created: now,
            answered_since: None,
            ending_since: None,
            last_heard: now,
            poll_jitter: poll.mul_f64(rand::random::<f64>() / 4.0),
            recording: None,
            local_recording: None,
            token: String::new(),
            machine: None,
            transfer: None,
        }
    }

    fn apply(&mut self, input: Input) {
        let current = std::mem::replace(&mut self.state, CallState::Placing);
        self.state = match current.clone().next(input) {
            Ok(next) => next,
            Err(e) => {
                tracing::debug!(error = %e, "ignored call input");
                current
            }
        };
        let now = TokioInstant::now();
        match self.state {
            CallState::Answered { .. } => {
                self.answered_since.get_or_insert(now);
            }
            CallState::Ending { .. } => {
                self.ending_since.get_or_insert(now);
            }
            _ => {}
        }
    }

    fn emit(&self, event: CallEvent) {
        let _ = self.events.send(event);
    }

    fn is_ending(&self) -> bool {
        matches!(self.state, CallState::Ending { .. })
    }

    /// Record why the call ends (the first error wins) and ask the state machine to end it.
    fn finish(&mut self, ending: &Ending) {
        if self.error.is_none() {
            self.error = ending.error.clone();
        }
        self.apply(Input::EndRequested {
            by: ending.by,
            reason: ending.reason.clone(),
        });
    }

    /// The next timer, and what it is for.
    fn next_wake(&self, timings: &Timings) -> (TokioInstant, Wake) {
        let mut wakes = vec![(
            self.last_heard + timings.poll_every + self.poll_jitter,
            Wake::CallbacksQuiet,
        )];
        if let Some(since) = self.ending_since {
            wakes.push((since + timings.final_status, Wake::FinalOverdue));
        } else {
            wakes.push((
                self.created + self.req.time_limit + TIME_LIMIT_GRACE,
                Wake::TimeLimit,
            ));
        }
        if let (CallState::Answered { .. }, Some(since)) = (&self.state, self.answered_since) {
            wakes.push((since + timings.stream_after_answer, Wake::StreamMissing));
        }
        wakes
            .into_iter()
            .min_by_key(|(at, _)| *at)
            .unwrap_or((self.last_heard + timings.poll_every, Wake::CallbacksQuiet))
    }

    fn on_status(&mut self, u: StatusUpdate) {
        if let Some(seq) = u.sequence {
            if self.last_sequence.is_some_and(|last| seq <= last) {
                // An older callback overtaken by a newer one.
                if !u.status.is_final() {
                    return;
                }
            }
            self.last_sequence = Some(self.last_sequence.map_or(seq, |l| l.max(seq)));
        }
        if u.answered_by.is_some() {
            self.answered_by = u.answered_by.clone();
        }
        if let Some(d) = u.duration_secs {
            self.duration_secs = Some(d);
        }
        self.emit(CallEvent::Status {
            to: self.to.clone(),
            status: u.status.clone(),
        });
        if let (Some(code), None, true) = (&u.error_code, &self.error, u.status.is_final()) {
            self.error = Some(OutcomeError {
                code: Some(code.clone()),
                message: u
                    .error_message
                    .clone()
                    .unwrap_or_else(|| format!("Twilio error {code}")),
            });
        }
        self.on_call_status(&u.status);
    }

    /// Twilio's word on the recording: the latest status wins, and what an earlier callback
    /// said (the URL, say) is kept when a later one leaves it out.
    fn on_recording(&mut self, update: TwilioRecording) {
        self.emit(CallEvent::Recording {
            to: self.to.clone(),
            recording: update.clone(),
        });
        let merged = match self.recording.take() {
            Some(old) if old.sid == update.sid && old.is_final() && !update.is_final() => old,
            Some(old) if old.sid == update.sid => TwilioRecording {
                url: update.url.or(old.url),
                duration_secs: update.duration_secs.or(old.duration_secs),
                channels: update.channels.or(old.channels),
                ..update
            },
            _ => update,
        };
        self.recording = Some(merged);
    }

    /// Twilio's `<Dial action>` request: whether the person took the transfer.
    fn on_dial(&mut self, result: DialResult) {
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        transfer.answered = Some(transfer::person_answered(&result.status));
        transfer.dial_status = Some(result.status);
        transfer.dial_duration_secs = result.duration_secs;
    }

    fn on_snapshot(&mut self, call: &CallResource) {
        if let Some(d) = call.duration_secs() {
            self.duration_secs = Some(d);
        }
        if call.answered_by.is_some() && self.answered_by.is_none() {
            self.answered_by = call.answered_by.clone();
        }
        self.on_call_status(&call.status);
    }

    fn on_call_status(&mut self, status: &CallStatus) {
        match status {
            CallStatus::Ringing => self.apply(Input::Ringing),
            CallStatus::InProgress => {
                self.answered_at.get_or_insert_with(Instant::now);
                self.apply(Input::Answered);
            }
            s => {
                if let Some(status) = s.final_status() {
                    self.apply(Input::Final { status });
                }
            }
        }
    }

    fn outcome(self, call_sid: Option<String>) -> Outcome {
        let (status, ended_by, reason) = match &self.state {
            CallState::Ended { status, by, reason } => (*status, *by, reason.clone()),
            CallState::Ending {
                by,
                reason,
                answered,
                ..
            } => {
                let status = if *answered {
                    FinalStatus::Completed
                } else {
                    FinalStatus::Failed
                };
                (status, *by, reason.clone())
            }
            other => (
                FinalStatus::Failed,
                EndedBy::Error,
                format!("call left in state {}", other.name()),
            ),
        };
        let bridge = self
            .bridge
            .unwrap_or_else(|| BridgeReport::empty(BridgeEnd::Cancelled));
        Outcome {
            to: self.to,
            direction: self.direction,
            call_sid,
            status,
            duration_secs: self.duration_secs,
            answered_by: self.answered_by,
            ended_by,
            reason,
            error: self.error,
            disposition: bridge.disposition,
            opted_out: bridge.opted_out,
            transcript: bridge.transcript,
            reconnects: bridge.reconnects,
            latency: CallLatency::new(bridge.agent_setup_ms, bridge.reply_latencies_ms),
            recording: self.recording,
            local_recording: self.local_recording,
            machine: self.machine,
            transfer: self.transfer,
        }
    }
}

type AgentIn<'a> = std::pin::Pin<Box<dyn futures_util::Stream<Item = Frame> + Send + 'a>>;
type AgentOut<'a> =
    std::pin::Pin<Box<dyn futures_util::Sink<Frame, Error = crate::ws::SendError> + Send + 'a>>;

/// New connections to the Voice Agent, for a bridge whose session dropped.
struct AgentLink {
    url: String,
    key: Secret,
    /// The call's span: the conversation's task is not instrumented (see `bridge`).
    span: tracing::Span,
}

/// What the conversation's task owns of the call: it outlives no borrow of it.
struct OwnedSetup {
    to: String,
    stream_sid: String,
    agent: crate::agent::config::AgentConfig,
    tools: Arc<dyn super::tools::ToolHandler>,
    answered_at: Instant,
    deadline: TokioInstant,
    events: mpsc::UnboundedSender<CallEvent>,
    cancel: CancellationToken,
}

/// For any lifetime of the legs' trait objects, not only `'static`: the compiler's check that
/// a call's future is `Send` asks for the impl in that general form.
impl<'s, 'k> Reconnect<AgentIn<'s>, AgentOut<'k>> for AgentLink {
    async fn connect(&mut self) -> Option<(AgentIn<'s>, AgentOut<'k>)> {
        match agent::client::connect(&self.url, &self.key).await {
            Ok((legs_in, legs_out)) => Some((legs_in, legs_out)),
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %e, "cannot reconnect to the Voice Agent");
                None
            }
        }
    }
}

/// The follow loop's own time limit trails the bridge's, which ends the conversation on time.
const TIME_LIMIT_GRACE: Duration = Duration::from_secs(5);

impl CallService {
    /// Carry out an ending: record it, then do at Twilio what it needs. Boxed, like every
    /// request to Twilio the follow loop makes: a request is a large future, and inline it
    /// would take as much room in every call's task for the call's whole life.
    async fn end(&self, call: &mut Call<'_>, ending: Ending) {
        Box::pin(self.end_now(call, ending)).await;
    }

    async fn end_now(&self, call: &mut Call<'_>, ending: Ending) {
        if ending.at_twilio == AtTwilio::Transfer {
            self.transfer(call, ending).await;
            return;
        }
        call.finish(&ending);
        match ending.at_twilio {
            AtTwilio::HangUp => self.hang_up(call).await,
            AtTwilio::Apologise => self.apologise(call).await,
            AtTwilio::Nothing | AtTwilio::Transfer => {}
        }
    }

    /// Switch the live call to `<Dial>` to the person. The call then goes on without us:
    /// Twilio reports whether the person answered at the `action` URL, then the call's end.
    /// Should the switch fail, the call is hung up and the outcome says why.
    async fn transfer(&self, call: &mut Call<'_>, ending: Ending) {
        let reason = match ending.reason.split_once(": ") {
            Some((_, reason)) => reason.to_string(),
            None => String::new(),
        };
        let target = call.req.agent.transfer_to.as_deref().map(Target::parse);
        let (Some(Ok(target)), Some(sid)) = (target, call.state.sid().map(str::to_string)) else {
            call.finish(&ending);
            self.hang_up(call).await;
            return;
        };
        let twiml = transfer::dial_twiml(
            &target,
            self.endpoints.from.as_str(),
            &self.endpoints.urls.dial(&call.token),
        );
        match self.twilio.update_twiml(&sid, &twiml).await {
            Ok(resource) => {
                call.apply(Input::Transferred {
                    reason: reason.clone(),
                });
                call.emit(CallEvent::Transferring {
                    to: call.to.clone(),
                    target: target.to_string(),
                    reason: reason.clone(),
                });
                call.transfer = Some(TransferOutcome {
                    to: target.to_string(),
                    reason,
                    answered: None,
                    dial_status: None,
                    dial_duration_secs: None,
                });
                call.on_snapshot(&resource);
            }
            Err(e) if e.is_call_already_over() => call.finish(&ending),
            Err(e) => {
                tracing::warn!(error = %e, "cannot transfer the call; hanging up");
                call.error.get_or_insert(OutcomeError {
                    code: e.code().map(|c| c.to_string()),
                    message: format!("the transfer to {target} failed: {e}"),
                });
                call.finish(&ending);
                self.hang_up(call).await;
            }
        }
    }

    /// Replace what the call is doing with a short spoken apology and a hang-up. Should the
    /// update fail, the call is hung up; the wait for the final status confirms the end.
    async fn apologise(&self, call: &mut Call<'_>) {
        let Some(sid) = call.state.sid().map(str::to_string) else {
            return;
        };
        match self.twilio.update_twiml(&sid, &twiml::apology()).await {
            Ok(resource) => call.on_snapshot(&resource),
            Err(e) if e.is_call_already_over() => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot play the apology; hanging up");
                self.hang_up(call).await;
            }
        }
    }

    async fn hang_up(&self, call: &mut Call<'_>) {
        let Some(sid) = call.state.sid().map(str::to_string) else {
            return;
        };
        match self.twilio.hang_up(&sid).await {
            Ok(resource) => call.on_snapshot(&resource),
            Err(e) if e.is_call_already_over() => {}
            Err(e) => tracing::warn!(error = %e, "hang-up request failed"),
        }
    }

    /// Twilio's final status is late: ask for it; a call still live is hung up and asked
    /// about again, so that no call we placed outlives our record of it.
    async fn confirm_end(&self, call: &mut Call<'_>, sid: &str) {
        match self.twilio.fetch_call(sid).await {
            Ok(Some(resource)) => call.on_snapshot(&resource),
            Ok(None) => call.apply(Input::Final {
                status: FinalStatus::Completed,
            }),
            Err(e) => tracing::warn!(error = %e, "cannot fetch the call's final status"),
        }
        if !call.state.is_ended() {
            self.hang_up(call).await;
        }
        if !call.state.is_ended() {
            tracing::warn!("Twilio has not confirmed the end of the call; recording it as ended");
            let status = if call.answered_at.is_some() {
                FinalStatus::Completed
            } else {
                FinalStatus::Failed
            };
            call.apply(Input::Final { status });
        }
    }

    /// Bridge an answered call's stream to a new agent session, then end the call as the
    /// bridge's end requires.
    async fn bridge(
        &self,
        call: &mut Call<'_>,
        incoming: IncomingStream,
        signals: &mut mpsc::UnboundedReceiver<CallSignal>,
        cancel: &CancellationToken,
    ) {
        call.apply(Input::StreamStarted);
        call.answered_at.get_or_insert_with(Instant::now);
        let IncomingStream {
            start,
            stream: mut t_in,
            sink: mut t_out,
            home,
        } = incoming;
        let connecting = Instant::now();
        // Verdicts reach the bridge as they arrive (one that came first included); every
        // other signal waits for the conversation to end, as it always has.
        let (verdict_tx, verdict_rx) = mpsc::unbounded_channel();
        if let Some(verdict) = &call.answered_by {
            let _ = verdict_tx.send(verdict.clone());
        }
        let mut later = Vec::new();
        let mut verdicts_seen = Vec::new();
        let events = call.events;
        let to = call.to.clone();
        // Created before the conversation, which borrows it; finished after the call is ended.
        let recording = self.local_recording(call.req, &start.call_sid);
        // The conversation runs as a task of its own: it is woken 100 times a second by its
        // two sockets, and in this task every wake-up would also poll the call's follow loop,
        // its log spans and the campaign's event forwarder (BENCHMARKS.md). It runs where the
        // stream's socket is (a call thread, `crate::shards`), and connects to the agent from
        // there. Dropping this future (the call's task ending) stops it.
        let talk = {
            let link = AgentLink {
                url: self.endpoints.agent_url.clone(),
                key: self.endpoints.agent_key.clone(),
                span: tracing::Span::current(),
            };
            let owned = OwnedSetup {
                to: call.to.clone(),
                stream_sid: start.stream_sid.clone(),
                agent: call.req.agent.clone(),
                tools: call.req.tools.clone(),
                answered_at: call.answered_at.unwrap_or_else(Instant::now),
                deadline: TokioInstant::now() + call.req.time_limit,
                events: events.clone(),
                cancel: cancel.clone(),
            };
            let recorder = recording.as_ref().map(|(recorder, _)| recorder.clone());
            let timings = self.timings.clone();
            tokio_util::task::AbortOnDropHandle::new(home.spawn(async move {
                let mut link = link;
                // Boxed: connecting is a large future, and inline it would take as much room
                // in the task for the whole conversation.
                let report = match Box::pin(agent::client::connect(&link.url, &link.key)).await {
                    Ok((mut a_in, mut a_out)) => {
                        let setup = BridgeSetup {
                            to: &owned.to,
                            stream_sid: &owned.stream_sid,
                            agent: &owned.agent,
                            tools: owned.tools.as_ref(),
                            answered_at: owned.answered_at,
                            setup_timeout: timings.agent_setup,
                            mark_timeout: timings.goodbye_mark,
                            deadline: owned.deadline,
                            agent_silence: timings.agent_silence,
                            verdicts: Verdicts::new(verdict_rx),
                            recorder: recorder.as_ref(),
                            span: link.span.clone(),
                        };
                        bridge::run(
                            &mut t_in,
                            &mut t_out,
                            &mut a_in,
                            &mut a_out,
                            &mut link,
                            &setup,
                            &owned.events,
                            &owned.cancel,
                        )
                        .await
                    }
                    Err(e) => BridgeReport::empty(BridgeEnd::SetupFailed(SetupFailure::Connect(e))),
                };
                (report, Some(t_out))
            }))
        };
        tokio::pin!(talk);
        let mut open = true;
        let (report, t_out) = loop {
            tokio::select! {
                done = &mut talk => match done {
                    Ok(done) => break done,
                    // A panic in the conversation is a bug: it goes on up as it would have
                    // had the conversation run in this task.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    // Cancelled: the runtime is shutting down, which takes the stream with it.
                    Err(_) => break (BridgeReport::empty(BridgeEnd::Cancelled), None),
                },
                signal = signals.recv(), if open => match signal {
                    Some(CallSignal::AnsweredBy(verdict)) => {
                        let _ = events.send(CallEvent::AnsweredBy { to: to.clone(), answered_by: verdict.clone() });
                        let _ = verdict_tx.send(verdict.clone());
                        verdicts_seen.push(verdict);
                    }
                    Some(other) => later.push(other),
                    // The registry holds the sender until the call is over, so this is not
                    // expected; a closed channel must not spin the loop.
                    None => open = false,
                },
            }
        };
        if let Some(verdict) = verdicts_seen.pop() {
            call.answered_by = Some(verdict);
        }
        for signal in later {
            match signal {
                CallSignal::Status(update) => call.on_status(*update),
                CallSignal::Dial(result) => call.on_dial(result),
                // A verdict is handled above; a second stream is dropped, which closes it.
                CallSignal::AnsweredBy(_) | CallSignal::Stream(_) => {}
            }
        }
        if let BridgeEnd::Machine(end) = &report.end {
            call.machine = Some(*end);
        }
        if let Some(ready) = report.ready_at {
            self.metrics
                .agent_setup(ready.saturating_duration_since(connecting));
        }
        self.metrics
            .frames(report.frames_to_agent, report.frames_to_phone);
        for &ms in &report.reply_latencies_ms {
            self.metrics
                .reply_latency(Duration::from_millis(u64::from(ms)));
        }
        if let Some(session_id) = &report.session_id {
            call.apply(Input::AgentReady {
                session_id: session_id.clone(),
            });
        }
        let ending = Ending::after_bridge(&report.end, call.req.time_limit);
        call.bridge = Some(report);
        self.end(call, ending).await;
        // The stream is over for us; after an update or a hang-up Twilio has closed it already,
        // and should we have crashed instead, the TwiML after the stream apologises.
        if let Some(mut t_out) = t_out {
            let _ = t_out
                .send(Frame::Close(Some((1000, "bridge ended".into()))))
                .await;
        }
        // The call is ended first; then the writer finishes the file with what is queued.
        if let Some((recorder, writing)) = recording {
            drop(recorder);
            match tokio::time::timeout(recorder::FINISH_WAIT, writing.finish()).await {
                Ok(Ok(local)) => call.local_recording = Some(local),
                Ok(Err(e)) => tracing::warn!(error = %e, "the call's recording is incomplete"),
                Err(_) => tracing::warn!("the call's recording took too long to finish"),
            }
        }
    }

    /// The local recording of a recorded call, started: `<dir>/<CallSid>.wav`.
    fn local_recording(
        &self,
        req: &CallRequest,
        call_sid: &str,
    ) -> Option<(recorder::Recorder, recorder::Writing)> {
        if !req.record {
            return None;
        }
        let dir = req
            .recordings_dir
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_RECORDINGS_DIR));
        let Some(path) = crate::recording::wav_path(&dir, call_sid) else {
            tracing::warn!("no local recording: the call SID is not a plain name");
            return None;
        };
        Some(recorder::start(path))
    }

    /// Ask Twilio to place the call: its SID, or `None` for a number that cannot be called
    /// (the call's outcome then says why).
    async fn create(
        &self,
        call: &mut Call<'_>,
        token: &str,
        recording_token: Option<&str>,
        twiml: &str,
    ) -> Result<Option<String>, DialError> {
        let req = call.req;
        let status_url = self.endpoints.urls.status(token);
        let amd_url = self.endpoints.urls.amd(token);
        let recording_url = recording_token.map(|t| self.endpoints.urls.recording(t));
        let new_call = NewCall {
            to: req.to.as_str(),
            from: self.endpoints.from.as_str(),
            twiml,
            status_callback: &status_url,
            timeout_secs: req.ring_timeout.as_secs().clamp(1, 600),
            time_limit_secs: req.time_limit.as_secs().max(1),
            amd_callback: req.machine_detection.then_some(amd_url.as_str()),
            recording_callback: recording_url.as_deref(),
        };
        match self.twilio.create_call(&new_call).await {
            Ok(created) => {
                call.apply(Input::Created {
                    sid: created.sid.clone(),
                });
                call.emit(CallEvent::Created {
                    to: call.to.clone(),
                    call_sid: created.sid.clone(),
                    direction: Direction::Outbound,
                });
                Ok(Some(created.sid))
            }
            Err(e) if e.is_configuration() || e.is_transient() => Err(dial_error(e)),
            Err(e) => {
                // This number cannot be called (invalid, unreachable, blocked): an outcome.
                call.error = Some(OutcomeError {
                    code: e.code().map(|c| c.to_string()),
                    message: e.to_string(),
                });
                call.apply(Input::Rejected {
                    reason: e.to_string(),
                });
                Ok(None)
            }
        }
    }

    /// Create the call and follow it until Twilio reports its final status.
    #[allow(clippy::too_many_arguments)]
    async fn follow(
        &self,
        req: &CallRequest,
        token: &str,
        twiml: &str,
        signals: mpsc::UnboundedReceiver<CallSignal>,
        mut recording: Option<(String, mpsc::UnboundedReceiver<TwilioRecording>)>,
        events: &mpsc::UnboundedSender<CallEvent>,
        cancel: &CancellationToken,
    ) -> Result<Outcome, DialError> {
        let mut call = Call::new(req, events, self.timings.poll_every);
        call.token = token.to_string();
        call.emit(CallEvent::Dialing {
            to: call.to.clone(),
        });
        let recording_token = recording.as_ref().map(|(t, _)| t.as_str());
        let Some(sid) = Box::pin(self.create(&mut call, token, recording_token, twiml)).await?
        else {
            return Ok(call.outcome(None));
        };
        let mut recording = recording.as_mut().map(|(_, rx)| rx);
        tracing::Span::current().record("sid", sid.as_str());
        self.watch(&mut call, &sid, signals, recording.as_deref_mut(), cancel)
            .await;
        // Twilio sends the recording's `completed` after the call is over: wait a little for
        // it, so the outcome can say where the recording is.
        if let Some(rx) = recording
            && call.answered_at.is_some()
            && !call
                .recording
                .as_ref()
                .is_some_and(TwilioRecording::is_final)
        {
            let _ = tokio::time::timeout(self.timings.recording_wait, async {
                while let Some(update) = rx.recv().await {
                    let last = update.is_final();
                    call.on_recording(update);
                    if last {
                        break;
                    }
                }
            })
            .await;
        }
        Ok(call.outcome(Some(sid)))
    }

    /// Follow a call Twilio created (so far ours or an inbound one) until its final status:
    /// callbacks through the state machine, the stream bridged to the agent, the time limit,
    /// the operator's hang-up, and the API asked when callbacks go quiet.
    async fn watch(
        &self,
        call: &mut Call<'_>,
        sid: &str,
        mut signals: mpsc::UnboundedReceiver<CallSignal>,
        mut recording: Option<&mut mpsc::UnboundedReceiver<TwilioRecording>>,
        cancel: &CancellationToken,
    ) {
        let req = call.req;
        while !call.state.is_ended() {
            let (at, wake) = call.next_wake(&self.timings);
            tokio::select! {
                () = cancel.cancelled(), if !call.is_ending() => {
                    self.end(call, Ending::operator()).await;
                }
                () = tokio::time::sleep_until(at) => match wake {
                    Wake::TimeLimit => self.end(call, Ending::time_limit(req.time_limit)).await,
                    Wake::FinalOverdue => Box::pin(self.confirm_end(call, sid)).await,
                    Wake::StreamMissing => {
                        let ending = Ending::no_stream(
                            self.timings.stream_after_answer,
                            self.endpoints.urls.base(),
                        );
                        self.end(call, ending).await;
                    }
                    Wake::CallbacksQuiet => {
                        // Callbacks can be lost (a wrong PUBLIC_URL, a tunnel restart): the
                        // API always knows.
                        call.last_heard = TokioInstant::now();
                        if let Ok(Some(resource)) = Box::pin(self.twilio.fetch_call(sid)).await {
                            call.on_snapshot(&resource);
                        }
                    }
                },
                update = next_recording(&mut recording), if recording.is_some() => match update {
                    Some(update) => call.on_recording(update),
                    None => recording = None,
                },
                signal = signals.recv() => {
                    call.last_heard = TokioInstant::now();
                    match signal {
                        Some(CallSignal::Status(update)) => call.on_status(*update),
                        Some(CallSignal::AnsweredBy(answered_by)) => {
                            call.emit(CallEvent::AnsweredBy { to: call.to.clone(), answered_by: answered_by.clone() });
                            // A fax, or a machine with no message to leave, is hung up before
                            // any conversation starts.
                            let end = voicemail::before_stream(
                                &answered_by,
                                req.agent.voicemail_message.as_deref(),
                            );
                            call.answered_by = Some(answered_by);
                            // Only before any conversation: after one, the bridge decided.
                            let early = call.bridge.is_none() && !call.is_ending() && !call.state.is_ended();
                            if let (Some(end), true) = (end, early) {
                                call.machine = Some(end);
                                self.end(call, Ending::machine(end)).await;
                            }
                        }
                        Some(CallSignal::Dial(result)) => call.on_dial(result),
                        // A stream for a call that is already ending is dropped, which closes it.
                        Some(CallSignal::Stream(incoming)) if !call.is_ending() => {
                            self.bridge(call, *incoming, &mut signals, cancel).await;
                            // The conversation took its time: callbacks are not overdue.
                            call.last_heard = TokioInstant::now();
                        }
                        Some(CallSignal::Stream(_)) => {}
                        // The registry keeps the sender until this call is removed, after this loop.
                        None => call.apply(Input::Final { status: FinalStatus::Failed }),
                    }
                }
            }
        }
    }
}

/// A call Twilio brought to the server, to be followed like one we placed.
#[derive(Debug)]
pub struct InboundCall {
    pub call_sid: String,
    /// `From` as Twilio sent it: a number, or a word when the caller ID is withheld.
    pub caller: String,
    /// The agent, its tools and the time limit. `to` is the caller when `From` is a phone
    /// number (else the number called); the call's events name `caller` either way.
    pub request: CallRequest,
}

impl CallService {
    /// Follow an inbound call, registered under `token` by [`Registry::register_inbound`],
    /// until its final status: the same path as a call we placed, without the create. The
    /// token is released at the end, and the outcome is sent as the last event.
    pub async fn follow_inbound(
        &self,
        inbound: InboundCall,
        token: String,
        signals: mpsc::UnboundedReceiver<CallSignal>,
        events: mpsc::UnboundedSender<CallEvent>,
        cancel: CancellationToken,
    ) -> Outcome {
        let _live = self.metrics.live(Direction::Inbound);
        let InboundCall {
            call_sid,
            caller,
            request,
        } = inbound;
        let span = tracing::warn_span!("inbound", from = %request.to.masked(), sid = %call_sid);
        let outcome = async {
            let mut call = Call::new(&request, &events, self.timings.poll_every);
            call.to = caller;
            call.direction = Direction::Inbound;
            call.apply(Input::Created {
                sid: call_sid.clone(),
            });
            call.emit(CallEvent::Created {
                to: call.to.clone(),
                call_sid: call_sid.clone(),
                direction: Direction::Inbound,
            });
            // Twilio is asking for the TwiML now, so the call is ringing at our end.
            call.apply(Input::Ringing);
            // Inbound calls are not recorded.
            self.watch(&mut call, &call_sid, signals, None, &cancel)
                .await;
            call.outcome(Some(call_sid.clone()))
        }
        .instrument(span)
        .await;
        self.registry.remove(&token);
        self.metrics.call_ended(Direction::Inbound, outcome.status);
        let _ = events.send(CallEvent::Ended {
            outcome: Box::new(outcome.clone()),
        });
        outcome
    }
}

/// The next recording update; `None` once nobody can send one.
async fn next_recording(
    rx: &mut Option<&mut mpsc::UnboundedReceiver<TwilioRecording>>,
) -> Option<TwilioRecording> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

impl Dialer for CallService {
    async fn dial(
        &self,
        req: CallRequest,
        events: mpsc::UnboundedSender<CallEvent>,
        cancel: CancellationToken,
    ) -> Result<Outcome, DialError> {
        // However the request was made (a command, a campaign, an API), a recorded call's
        // greeting says so unless that check was turned off.
        if req.record
            && req.agent.recording_disclosure == RecordingDisclosure::Required
            && !discloses_recording(&req.agent.greeting)
        {
            return Err(DialError {
                code: None,
                message: "the call is to be recorded but the greeting does not say so: add words like \"this call is recorded\", or set recording_disclosure = \"off\" where the law does not require it".into(),
                transient: false,
            });
        }
        let _live = self.metrics.live(Direction::Outbound);
        let (token, signals) = self.registry.register();
        let recording = req.record.then(|| {
            self.registry
                .recordings()
                .register(req.late_recording.clone())
        });
        let recording_token = recording.as_ref().map(|(t, _)| t.clone());
        // The stream URL is the same for every call; the token tells the server whose it is.
        let twiml = twiml::connect_stream(&self.endpoints.urls.media(), &[("token", &token)]);
        // Every log line of this call says which call it is; the SID is added once known.
        let span = tracing::warn_span!("call", to = %req.to.masked(), sid = tracing::field::Empty);
        let result = self
            .follow(&req, &token, &twiml, signals, recording, &events, &cancel)
            .instrument(span)
            .await;
        self.registry.remove(&token);
        if let Some(t) = recording_token {
            self.registry.recordings().call_over(&t);
        }
        let outcome = result?;
        self.metrics.call_ended(Direction::Outbound, outcome.status);
        let _ = events.send(CallEvent::Ended {
            outcome: Box::new(outcome.clone()),
        });
        Ok(outcome)
    }

    async fn lookup(&self, call_sid: &str) -> Result<Option<CallSnapshot>, DialError> {
        self.twilio
            .fetch_call(call_sid)
            .await
            .map(|c| c.map(snapshot))
            .map_err(dial_error)
    }

    async fn hang_up(&self, call_sid: &str) -> Result<(), DialError> {
        match self.twilio.hang_up(call_sid).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_call_already_over() => Ok(()),
            Err(e) => Err(dial_error(e)),
        }
    }

    async fn find_calls_to(
        &self,
        to: &E164,
        since: DateTime<Utc>,
    ) -> Result<Vec<CallSnapshot>, DialError> {
        self.twilio
            .list_calls_to(to.as_str(), since)
            .await
            .map(|calls| calls.into_iter().map(snapshot).collect())
            .map_err(dial_error)
    }
}

fn snapshot(c: CallResource) -> CallSnapshot {
    CallSnapshot {
        duration_secs: c.duration_secs(),
        start_time: c.started_at().or_else(|| c.created_at()),
        to: c.to.clone().unwrap_or_default(),
        answered_by: c.answered_by.clone(),
        status: c.status,
        sid: c.sid,
    }
}

fn dial_error(e: TwilioError) -> DialError {
    DialError {
        code: e.code(),
        transient: e.is_transient(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::AgentConfig;
    use crate::call::tools::NoTools;

    fn request() -> CallRequest {
        CallRequest {
            to: E164::parse("+12025550100").unwrap(),
            agent: AgentConfig::default(),
            tools: Arc::new(NoTools),
            ring_timeout: Duration::from_secs(30),
            time_limit: Duration::from_secs(600),
            machine_detection: false,
            record: false,
            recordings_dir: None,
            late_recording: None,
        }
    }

    fn timings() -> Timings {
        Timings {
            poll_every: Duration::from_secs(20),
            final_status: Duration::from_secs(15),
            stream_after_answer: Duration::from_secs(20),
            ..Timings::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_call_is_asked_about_and_the_time_limit_waits_its_turn() {
        let req = request();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut call = Call::new(&req, &tx, Duration::from_secs(20));
        call.poll_jitter = Duration::ZERO;
        call.apply(Input::Created { sid: "CA1".into() });
        let (at, wake) = call.next_wake(&timings());
        assert_eq!(wake, Wake::CallbacksQuiet);
        assert_eq!(at, call.created + Duration::from_secs(20));
        // A callback just arrived: not overdue before another 20 s.
        tokio::time::advance(Duration::from_secs(10)).await;
        call.last_heard = TokioInstant::now();
        assert_eq!(
            call.next_wake(&timings()).0,
            call.last_heard + Duration::from_secs(20)
        );
        // Near the end of the limit, the limit comes first.
        call.last_heard = call.created + Duration::from_secs(600);
        assert_eq!(call.next_wake(&timings()).1, Wake::TimeLimit);
    }

    #[tokio::test(start_paused = true)]
    async fn answered_waits_for_the_stream_and_ending_waits_for_the_final_status() {
        let req = request();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut call = Call::new(&req, &tx, Duration::from_secs(20));
        call.poll_jitter = Duration::ZERO;
        call.apply(Input::Created { sid: "CA1".into() });
        tokio::time::advance(Duration::from_secs(3)).await;
        call.on_call_status(&CallStatus::InProgress);
        let answered = call.answered_since.unwrap();
        call.last_heard = answered;
        assert_eq!(
            call.next_wake(&timings()),
            (answered + Duration::from_secs(20), Wake::CallbacksQuiet),
            "the poll and the stream wait fall together; either finds the truth"
        );
        call.last_heard = answered + Duration::from_secs(5);
        assert_eq!(
            call.next_wake(&timings()),
            (answered + Duration::from_secs(20), Wake::StreamMissing)
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        call.finish(&Ending::operator());
        let ending = call.ending_since.unwrap();
        assert_eq!(
            call.next_wake(&timings()),
            (ending + Duration::from_secs(15), Wake::FinalOverdue)
        );
    }

    #[tokio::test]
    async fn the_first_error_of_a_call_is_the_one_recorded() {
        let req = request();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut call = Call::new(&req, &tx, Duration::from_secs(20));
        call.apply(Input::Created { sid: "CA1".into() });
        call.on_call_status(&CallStatus::InProgress);
        call.finish(&Ending::no_stream(Duration::from_secs(20), "https://x"));
        call.finish(&Ending::operator());
        let outcome = call.outcome(Some("CA1".into()));
        assert_eq!(outcome.ended_by, EndedBy::Error);
        assert!(outcome.error.unwrap().message.contains("https://x"));
    }
}

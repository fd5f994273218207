//! Placing calls for real: create the call through Twilio, follow its callbacks through the
//! state machine, bridge its Media Stream to a Voice Agent session, hang up when the agent or
//! the operator says so, and report how it ended. The same code runs against Twilio and the
//! Voice Agent API or against the simulators; only the endpoints differ.

use super::bridge::{self, BridgeEnd, BridgeReport, BridgeSetup, SetupFailure};
use super::dialer::{CallRequest, CallSnapshot, DialError, Dialer};
use super::registry::{CallSignal, IncomingStream, Registry, StatusUpdate};
use super::state::{CallState, Input};
use crate::agent;
use crate::events::{CallEvent, EndedBy, FinalStatus, Outcome, OutcomeError};
use crate::phone::E164;
use crate::secret::Secret;
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
use tokio_util::sync::CancellationToken;

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
    /// How often to ask the API about a call whose callbacks have gone quiet.
    pub poll_every: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            agent_setup: Duration::from_secs(10),
            goodbye_mark: Duration::from_secs(20),
            final_status: Duration::from_secs(15),
            stream_after_answer: Duration::from_secs(20),
            poll_every: Duration::from_secs(20),
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
}

impl CallService {
    pub fn new(twilio: TwilioClient, endpoints: Endpoints, registry: Arc<Registry>) -> Self {
        Self {
            twilio,
            endpoints,
            registry,
            timings: Timings::default(),
        }
    }

    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
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

/// What one call has gathered so far.
struct Call<'a> {
    req: &'a CallRequest,
    to: String,
    state: CallState,
    events: &'a mpsc::UnboundedSender<CallEvent>,
    answered_at: Option<Instant>,
    answered_by: Option<AnsweredBy>,
    duration_secs: Option<u64>,
    error: Option<OutcomeError>,
    bridge: Option<BridgeReport>,
    /// Highest callback sequence number seen, to tell stale callbacks from new ones.
    last_sequence: Option<u32>,
}

impl Call<'_> {
    fn apply(&mut self, input: Input) {
        let current = std::mem::replace(&mut self.state, CallState::Placing);
        self.state = match current.clone().next(input) {
            Ok(next) => next,
            Err(e) => {
                tracing::debug!(error = %e, "ignored call input");
                current
            }
        };
    }

    fn emit(&self, event: CallEvent) {
        let _ = self.events.send(event);
    }

    fn end(&mut self, by: EndedBy, reason: impl Into<String>) {
        self.apply(Input::EndRequested {
            by,
            reason: reason.into(),
        });
    }

    fn fail(&mut self, code: Option<String>, message: String) {
        if self.error.is_none() {
            self.error = Some(OutcomeError {
                code,
                message: message.clone(),
            });
        }
        self.end(EndedBy::Error, message);
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
        match &u.status {
            CallStatus::Ringing => self.apply(Input::Ringing),
            CallStatus::InProgress => {
                self.answered_at.get_or_insert_with(Instant::now);
                self.apply(Input::Answered);
            }
            s => {
                if let Some(status) = s.final_status() {
                    if let (Some(code), None) = (&u.error_code, &self.error) {
                        self.error = Some(OutcomeError {
                            code: Some(code.clone()),
                            message: u
                                .error_message
                                .clone()
                                .unwrap_or_else(|| format!("Twilio error {code}")),
                        });
                    }
                    self.apply(Input::Final { status });
                }
            }
        }
    }

    fn on_snapshot(&mut self, call: &CallResource) {
        if let Some(d) = call.duration_secs() {
            self.duration_secs = Some(d);
        }
        if call.answered_by.is_some() && self.answered_by.is_none() {
            self.answered_by = call.answered_by.clone();
        }
        match &call.status {
            CallStatus::InProgress => {
                self.answered_at.get_or_insert_with(Instant::now);
                self.apply(Input::Answered);
            }
            CallStatus::Ringing => self.apply(Input::Ringing),
            s => {
                if let Some(status) = s.final_status() {
                    self.apply(Input::Final { status });
                }
            }
        }
    }

    fn outcome(self) -> Outcome {
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
        let bridge = self.bridge.unwrap_or(BridgeReport {
            end: BridgeEnd::Cancelled,
            session_id: None,
            transcript: Vec::new(),
            disposition: None,
            opted_out: false,
            bad_frames: 0,
            clears: 0,
        });
        Outcome {
            to: self.to,
            call_sid: None,
            status,
            duration_secs: self.duration_secs,
            answered_by: self.answered_by,
            ended_by,
            reason,
            error: self.error,
            disposition: bridge.disposition,
            opted_out: bridge.opted_out,
            transcript: bridge.transcript,
        }
    }
}

impl CallService {
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

    /// Bridge an answered call's stream to a new agent session.
    async fn bridge(
        &self,
        call: &mut Call<'_>,
        incoming: IncomingStream,
        cancel: &CancellationToken,
        time_limit: tokio::time::Instant,
    ) {
        // The bridge stops for the operator or at the time limit, whichever comes first.
        let stop = cancel.child_token();
        let timer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(time_limit).await;
                stop.cancel();
            })
        };
        call.apply(Input::StreamStarted);
        call.answered_at.get_or_insert_with(Instant::now);
        let IncomingStream {
            start,
            stream: mut t_in,
            sink: mut t_out,
        } = incoming;
        let report = match agent::client::connect(
            &self.endpoints.agent_url,
            &self.endpoints.agent_key,
        )
        .await
        {
            Ok((mut a_in, mut a_out)) => {
                let setup = BridgeSetup {
                    to: &call.to,
                    stream_sid: &start.stream_sid,
                    agent: &call.req.agent,
                    tools: call.req.tools.as_ref(),
                    answered_at: call.answered_at.unwrap_or_else(Instant::now),
                    setup_timeout: self.timings.agent_setup,
                    mark_timeout: self.timings.goodbye_mark,
                };
                bridge::run(
                    &mut t_in,
                    &mut t_out,
                    &mut a_in,
                    &mut a_out,
                    &setup,
                    call.events,
                    &stop,
                )
                .await
            }
            Err(e) => BridgeReport {
                end: BridgeEnd::SetupFailed(SetupFailure::Connect(e)),
                session_id: None,
                transcript: Vec::new(),
                disposition: None,
                opted_out: false,
                bad_frames: 0,
                clears: 0,
            },
        };
        timer.abort();
        if let Some(session_id) = &report.session_id {
            call.apply(Input::AgentReady {
                session_id: session_id.clone(),
            });
        }
        let end = report.end.clone();
        call.bridge = Some(report);
        match end {
            BridgeEnd::CalleeHungUp => call.end(EndedBy::Callee, "callee hung up"),
            BridgeEnd::AgentEndedCall => {
                call.end(EndedBy::Agent, "agent ended the call");
                self.hang_up(call).await;
            }
            BridgeEnd::AgentClosed { error: None } => {
                call.end(EndedBy::Agent, "agent session ended");
                self.hang_up(call).await;
            }
            BridgeEnd::AgentClosed { error: Some(error) } => {
                call.fail(Some(error.code.to_string()), error.to_string());
            }
            BridgeEnd::SetupFailed(failure) => {
                call.fail(Some(failure.code().to_string()), failure.to_string());
            }
            BridgeEnd::StreamClosed => {
                call.fail(None, "Twilio closed the media stream unexpectedly".into());
                self.hang_up(call).await;
            }
            BridgeEnd::Cancelled => {
                if cancel.is_cancelled() {
                    call.end(EndedBy::Operator, "interrupted by the operator");
                } else {
                    let secs = call.req.time_limit.as_secs();
                    call.end(
                        EndedBy::TimeLimit,
                        format!("time limit of {secs} s reached"),
                    );
                }
                self.hang_up(call).await;
            }
        }
        // Closing our side of a stream that is still open lets Twilio's fallback TwiML
        // apologise to the callee when the agent failed; after a hang-up it is a no-op.
        let _ = t_out
            .send(Frame::Close(Some((1000, "bridge ended".into()))))
            .await;
    }
}

impl CallService {
    /// Create the call and follow it until Twilio reports its final status.
    async fn follow(
        &self,
        req: &CallRequest,
        token: &str,
        twiml: &str,
        mut signals: mpsc::UnboundedReceiver<CallSignal>,
        events: &mpsc::UnboundedSender<CallEvent>,
        cancel: &CancellationToken,
    ) -> Result<Outcome, DialError> {
        let mut call = Call {
            req,
            to: req.to.to_string(),
            state: CallState::Placing,
            events,
            answered_at: None,
            answered_by: None,
            duration_secs: None,
            error: None,
            bridge: None,
            last_sequence: None,
        };
        call.emit(CallEvent::Dialing {
            to: call.to.clone(),
        });
        let status_url = self.endpoints.urls.status(token);
        let amd_url = self.endpoints.urls.amd(token);
        let new_call = NewCall {
            to: req.to.as_str(),
            from: self.endpoints.from.as_str(),
            twiml,
            status_callback: &status_url,
            timeout_secs: req.ring_timeout.as_secs().clamp(1, 600),
            time_limit_secs: req.time_limit.as_secs().max(1),
            amd_callback: req.machine_detection.then_some(amd_url.as_str()),
        };
        let created = match self.twilio.create_call(&new_call).await {
            Ok(created) => created,
            Err(e) if e.is_configuration() || e.is_transient() => return Err(dial_error(e)),
            Err(e) => {
                // This number cannot be called (invalid, unreachable, blocked): an outcome.
                call.error = Some(OutcomeError {
                    code: e.code().map(|c| c.to_string()),
                    message: e.to_string(),
                });
                call.apply(Input::Rejected {
                    reason: e.to_string(),
                });
                return Ok(call.outcome());
            }
        };
        let sid = created.sid.clone();
        call.apply(Input::Created { sid: sid.clone() });
        call.emit(CallEvent::Created {
            to: call.to.clone(),
            call_sid: sid.clone(),
        });

        let time_limit = tokio::time::sleep(req.time_limit + Duration::from_secs(5));
        tokio::pin!(time_limit);
        let mut poll = tokio::time::interval(self.timings.poll_every);
        poll.reset();
        let mut ending_since: Option<tokio::time::Instant> = None;
        let mut answered_since: Option<tokio::time::Instant> = None;
        let mut operator_asked = false;
        while !call.state.is_ended() {
            if ending_since.is_none() && matches!(call.state, CallState::Ending { .. }) {
                ending_since = Some(tokio::time::Instant::now());
            }
            if answered_since.is_none() && matches!(call.state, CallState::Answered { .. }) {
                answered_since = Some(tokio::time::Instant::now());
            }
            let final_wait = sleep_opt(ending_since.map(|t| t + self.timings.final_status));
            let stream_wait = sleep_opt(
                answered_since
                    .filter(|_| matches!(call.state, CallState::Answered { .. }))
                    .map(|t| t + self.timings.stream_after_answer),
            );
            tokio::select! {
                () = cancel.cancelled(), if !operator_asked => {
                    operator_asked = true;
                    call.end(EndedBy::Operator, "interrupted by the operator");
                    self.hang_up(&mut call).await;
                }
                () = &mut time_limit => {
                    call.end(EndedBy::TimeLimit, format!("time limit of {} s reached", req.time_limit.as_secs()));
                    self.hang_up(&mut call).await;
                    // Do not hang up twice.
                    time_limit.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(86_400));
                }
                () = final_wait => {
                    // The final callback is late or lost: ask the API, then give up waiting.
                    match self.twilio.fetch_call(&sid).await {
                        Ok(Some(resource)) => call.on_snapshot(&resource),
                        Ok(None) => call.apply(Input::Final { status: FinalStatus::Completed }),
                        Err(e) => tracing::warn!(error = %e, "cannot fetch the call's final status"),
                    }
                    if !call.state.is_ended() {
                        let status = if call.answered_at.is_some() { FinalStatus::Completed } else { FinalStatus::Failed };
                        call.apply(Input::Final { status });
                    }
                }
                () = stream_wait => {
                    call.fail(None, format!(
                        "the call was answered but Twilio did not open the media stream within {} s; check that PUBLIC_URL ({}) reaches this machine over HTTPS",
                        self.timings.stream_after_answer.as_secs(),
                        self.endpoints.urls.base(),
                    ));
                    self.hang_up(&mut call).await;
                }
                _ = poll.tick() => {
                    // Callbacks can be lost (a wrong PUBLIC_URL, a tunnel restart): the API
                    // always knows.
                    if let Ok(Some(resource)) = self.twilio.fetch_call(&sid).await {
                        call.on_snapshot(&resource);
                    }
                }
                signal = signals.recv() => match signal {
                    Some(CallSignal::Status(update)) => call.on_status(update),
                    Some(CallSignal::AnsweredBy(answered_by)) => {
                        call.emit(CallEvent::AnsweredBy { to: call.to.clone(), answered_by: answered_by.clone() });
                        call.answered_by = Some(answered_by);
                    }
                    Some(CallSignal::Stream(incoming)) => {
                        if matches!(call.state, CallState::Ending { .. }) {
                            drop(incoming);
                        } else {
                            let deadline = tokio::time::Instant::now() + req.time_limit;
                            self.bridge(&mut call, incoming, cancel, deadline).await;
                            // The bridge already hung up for the operator.
                            operator_asked |= cancel.is_cancelled();
                        }
                    }
                    // The registry keeps the sender until this call is removed, after this loop.
                    None => call.apply(Input::Final { status: FinalStatus::Failed }),
                },
            }
        }
        let mut outcome = call.outcome();
        outcome.call_sid = Some(sid);
        Ok(outcome)
    }
}

async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Dialer for CallService {
    async fn dial(
        &self,
        req: CallRequest,
        events: mpsc::UnboundedSender<CallEvent>,
        cancel: CancellationToken,
    ) -> Result<Outcome, DialError> {
        let (token, signals) = self.registry.register();
        // The stream URL is the same for every call; the token tells the server whose it is.
        let twiml = twiml::connect_stream(&self.endpoints.urls.media(), &[("token", &token)]);
        let result = self
            .follow(&req, &token, &twiml, signals, &events, &cancel)
            .await;
        self.registry.remove(&token);
        let outcome = result?;
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

//! Works through a campaign's leads: picks the next due lead, checks it at the moment of dialing
//! (do-not-call list, time zone, calling window), waits for a free line and for its pacing
//! turn, records the attempt durably, places the call through a [`Dialer`], and turns the
//! outcome into the lead's next state (final, or a retry at a time the policy sets).
//!
//! On start it first settles attempts a previous run left in flight, from Twilio's own records,
//! so that a lead whose call may exist is never dialed again before its fate is known.

use super::clock::Clock;
use super::config::{CampaignConfig, RetryPolicy};
use super::dnc::{DncList, Refresh};
use super::pacing::Pacer;
use super::store::{InFlight, LeadRow, Store, StoreError, StoreHandle, Verdict};
use super::tools::CampaignTools;
use super::{CampaignEvent, LeadStatus, Summary, template};
use crate::agent::protocol::AgentErrorCode;
use crate::call::dialer::{CallRequest, CallSnapshot, DialError, Dialer};
use crate::events::{CallEvent, EndedBy, FinalStatus, MachineEnd, Outcome};
use crate::phone::E164;
use crate::twilio::{AnsweredBy, CallStatus};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why a campaign stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Twilio refused a call for a reason that concerns every call (credentials, caller ID) or
    /// could not be reached.
    #[error("{0}")]
    Dial(#[from] DialError),
    /// The Voice Agent API refused the key or the account.
    #[error("{0}")]
    Agent(String),
    #[error("do-not-call list: {0}")]
    Dnc(#[from] super::dnc::DncError),
    /// Twilio is in trouble (unreachable, 5xx, rate limits past the client's retries): dialing
    /// pauses and resumes by itself. The attempt may have created a call; it stays in flight
    /// until settled from Twilio's records.
    #[error("{error}")]
    Unavailable { attempt: i64, error: DialError },
}

/// Added to every campaign prompt: the tools only help if the agent knows when to use them.
const TOOL_GUIDE: &str = "\n\nBefore you end the call, record how it went with the record_outcome tool. \
If the person asks not to be called again, call the opt_out tool at once, apologise briefly, say goodbye and end the call.";

/// How often dialing looks again at a do-not-call list it cannot read.
const DNC_RECHECK: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// How long to wait for a call a crashed run left live to end after hanging it up.
const ORPHAN_SETTLE: Duration = Duration::from_secs(30);

/// Due leads read at once when looking for one to dial. When a calling window is closed every
/// one of them is deferred, so this is also the work done between two looks at the stop
/// token (a few milliseconds).
const PICK_BATCH: usize = 256;

pub struct Runner<D: Dialer> {
    dialer: Arc<D>,
    store: StoreHandle,
    config: Arc<CampaignConfig>,
    dispositions: Arc<[String]>,
    dnc: Arc<Mutex<DncList>>,
    clock: Arc<Clock>,
    pacer: Pacer,
    events: mpsc::UnboundedSender<CampaignEvent>,
}

/// What the next due lead gets.
enum Check {
    Dial,
    Skip(LeadStatus, String),
    Defer(DateTime<Utc>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<D: Dialer> Runner<D> {
    pub fn new(
        dialer: Arc<D>,
        store: Store,
        config: CampaignConfig,
        dnc: DncList,
        clock: Arc<Clock>,
        events: mpsc::UnboundedSender<CampaignEvent>,
    ) -> Self {
        Self {
            dialer,
            store: StoreHandle::spawn(store),
            dispositions: config.dispositions.clone().into(),
            pacer: Pacer::new(config.calls_per_second),
            config: Arc::new(config),
            dnc: Arc::new(Mutex::new(dnc)),
            clock,
            events,
        }
    }

    fn emit(&self, event: CampaignEvent) {
        let _ = self.events.send(event);
    }

    /// Run until every lead is final, or `stop` is cancelled (then live calls finish; cancelling
    /// `hang_up` as well hangs them up). Returns whether the campaign is complete.
    pub async fn run(
        self: Arc<Self>,
        stop: CancellationToken,
        hang_up: CancellationToken,
    ) -> Result<bool, CampaignError> {
        let (leads, finished) = self.store.counts().await?;
        self.emit(CampaignEvent::Plan {
            campaign: self.config.name.clone(),
            leads,
            finished,
        });
        self.reconcile(&stop).await?;

        let mut dialing = DialLoop::new(self.clone(), stop, hang_up);
        loop {
            match dialing.next().await? {
                Next::Dial { lead, line, at } => dialing.dial(lead, line, at).await?,
                Next::WaitUntil(at) => dialing.wait_until(at).await,
                Next::Drained | Next::Stopped => break,
            }
        }
        dialing.drain().await?;
        let (leads, finished) = self.store.counts().await?;
        Ok(leads == finished)
    }

    /// The earliest due lead that may be dialed now; due leads that may not are skipped or
    /// deferred on the way. Awaits the database between batches, so a stop can end it there.
    async fn pick_lead(&self) -> Result<Option<LeadRow>, CampaignError> {
        loop {
            let now = self.clock.now();
            // Deferrals and skips of the batch before are queued ahead of this read, so it
            // sees them: no lead comes back twice.
            let due = self.store.due(now, PICK_BATCH).await?;
            if due.is_empty() {
                return Ok(None);
            }
            for lead in due {
                if self.cleared(&lead, now)? {
                    return Ok(Some(lead));
                }
            }
        }
    }

    fn timezone(&self, lead: &LeadRow) -> Option<Tz> {
        lead.timezone
            .as_deref()
            .and_then(|z| z.parse::<Tz>().ok())
            .or(self.config.timezone)
    }

    /// Whether the lead may be dialed now; if not, it is skipped for good (recorded and
    /// reported) or deferred to its window's next opening.
    fn cleared(&self, lead: &LeadRow, now: DateTime<Utc>) -> Result<bool, CampaignError> {
        match self.check(lead, now)? {
            Check::Dial => return Ok(true),
            Check::Skip(status, reason) => {
                self.store.skip(lead.id, status, &reason, now)?;
                self.emit(CampaignEvent::Skipped {
                    lead: lead.id,
                    to: lead.phone.clone(),
                    status,
                    reason,
                });
            }
            Check::Defer(until) => self.store.defer(lead.id, until)?,
        }
        Ok(false)
    }

    fn check(&self, lead: &LeadRow, now: DateTime<Utc>) -> Result<Check, CampaignError> {
        let Ok(phone) = E164::parse(&lead.phone) else {
            return Ok(Check::Skip(
                LeadStatus::Failed,
                format!("'{}' is not a valid number", lead.phone),
            ));
        };
        {
            let mut dnc = lock(&self.dnc);
            match dnc.refresh() {
                Refresh::Ready => {}
                Refresh::Resumed(path) => {
                    tracing::warn!(
                        "dialing resumed: do-not-call list {} can be read again",
                        path.display()
                    );
                    self.emit(CampaignEvent::DialingResumed {
                        file: path.display().to_string(),
                    });
                }
                Refresh::Unavailable { problem, news } => {
                    if news {
                        tracing::warn!("{problem}");
                        self.emit(CampaignEvent::DialingPaused {
                            file: problem.path.display().to_string(),
                            reason: problem.reason,
                        });
                    }
                    // Not skipped: the lead stays pending until the list can be read.
                    return Ok(Check::Defer(now + DNC_RECHECK));
                }
            }
            if dnc.contains(&phone) {
                return Ok(Check::Skip(
                    LeadStatus::DoNotCall,
                    "on the do-not-call list".into(),
                ));
            }
        }
        // Also at dial time: a lead imported by an earlier version was never checked.
        if let Err(refused) = self.config.allow_prefixes.check(&phone) {
            return Ok(Check::Skip(
                LeadStatus::Failed,
                super::leads::refused(&refused),
            ));
        }
        let Some(tz) = self.timezone(lead) else {
            return Ok(Check::Skip(
                LeadStatus::NoTimezone,
                "no time zone: the row has none and the campaign sets no default (campaign.timezone)".into(),
            ));
        };
        if self.config.window.is_open(tz, now) {
            return Ok(Check::Dial);
        }
        Ok(match self.config.window.next_open(tz, now) {
            Some(at) => Check::Defer(at),
            None => Check::Skip(LeadStatus::Failed, "the calling window never opens".into()),
        })
    }

    fn request(&self, lead: &LeadRow, to: E164) -> CallRequest {
        let mut agent = self.config.agent.clone();
        agent.greeting = template::fill_spoken(&agent.greeting, &to, &lead.vars);
        agent.voicemail_message = agent
            .voicemail_message
            .as_deref()
            .map(|m| template::fill_spoken(m, &to, &lead.vars));
        agent.system_prompt = template::fill_prompt(
            &format!("{}{TOOL_GUIDE}", agent.system_prompt),
            &to,
            &lead.vars,
        );
        CallRequest {
            tools: Arc::new(
                CampaignTools::new(to.clone(), self.dispositions.clone(), self.dnc.clone())
                    .with_keys(self.config.dtmf.clone(), self.config.transfer_on.clone()),
            ),
            to,
            agent,
            ring_timeout: self.config.ring_timeout,
            time_limit: self.config.time_limit,
            machine_detection: self.config.machine_detection,
        }
    }

    /// Place one attempt and record its end. Runs inside the attempt's span.
    async fn place(
        &self,
        lead: LeadRow,
        attempt: i64,
        number: u32,
        hang_up: CancellationToken,
    ) -> Result<(), CampaignError> {
        let to = E164::parse(&lead.phone).map_err(|e| StoreError::Data(e.to_string()))?;
        self.emit(CampaignEvent::Dialing {
            lead: lead.id,
            to: lead.phone.clone(),
            attempt: number,
        });
        let request = self.request(&lead, to);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let dial = self.dialer.dial(request, tx, hang_up);
        let forward = async {
            while let Some(event) = rx.recv().await {
                match &event {
                    CallEvent::Created { call_sid, .. } => {
                        // The call exists now: a crash from here on is settled by its SID.
                        if let Err(e) = self.store.set_call_sid(attempt, call_sid.clone()).await {
                            tracing::error!(error = %e, "cannot record the call SID");
                        }
                    }
                    // Saved as spoken: a crash before the call ends keeps what was said.
                    CallEvent::Line { line, .. } => {
                        if let Err(e) = self.store.add_line(attempt, line.clone()) {
                            tracing::error!(error = %e, "cannot save a transcript line");
                        }
                    }
                    _ => {}
                }
                self.emit(CampaignEvent::Call {
                    lead: lead.id,
                    call: event,
                });
            }
        };
        let (result, ()) = tokio::join!(dial, forward);
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                if !e.transient {
                    // Refused before any call existed (credentials, caller ID).
                    self.store.void_attempt(attempt).await?;
                }
                // A transient failure may have created the call: the attempt stays in flight
                // until Twilio's records settle it, once Twilio answers again.
                return Err(if e.transient {
                    CampaignError::Unavailable { attempt, error: e }
                } else {
                    CampaignError::Dial(e)
                });
            }
        };
        let now = self.clock.now();
        let verdict = verdict(&outcome, number, &self.config.retry, now);
        self.store
            .finish_attempt(attempt, outcome.clone(), verdict.clone(), now)
            .await?;
        self.emit(CampaignEvent::Finished {
            lead: lead.id,
            to: lead.phone.clone(),
            attempt: number,
            status: verdict.status,
            disposition: outcome.disposition.as_ref().map(|d| d.name.clone()),
            retry_at: verdict.next_at,
        });
        if let Some(err) = &outcome.error
            && err
                .code
                .as_deref()
                .is_some_and(|c| AgentErrorCode::from(c).refuses_key())
        {
            return Err(CampaignError::Agent(err.message.clone()));
        }
        Ok(())
    }

    /// Settle attempts a previous run left in flight, from Twilio's records.
    async fn reconcile(&self, stop: &CancellationToken) -> Result<(), CampaignError> {
        for attempt in self.store.in_flight().await? {
            if stop.is_cancelled() {
                // What is not settled now stays in flight for the next run to settle.
                break;
            }
            self.reconcile_attempt(&attempt, stop).await?;
        }
        Ok(())
    }

    /// Settle these attempts, left in flight by Twilio trouble in this run, from Twilio's
    /// records; the ones settled are taken off the list.
    async fn reconcile_stranded(
        &self,
        stranded: &mut Vec<i64>,
        stop: &CancellationToken,
    ) -> Result<(), CampaignError> {
        let flying = self.store.in_flight().await?;
        while let Some(&id) = stranded.first() {
            if stop.is_cancelled() {
                break;
            }
            if let Some(attempt) = flying.iter().find(|a| a.attempt_id == id) {
                self.reconcile_attempt(attempt, stop).await?;
            }
            stranded.remove(0);
        }
        Ok(())
    }

    /// Settle one attempt from Twilio's records: void it if no call exists, record the call's
    /// end if it is over, hang it up first if it is live with nobody bridging it.
    /// A stop ends the wait for a hung-up call to end; the attempt then stays in flight.
    async fn reconcile_attempt(
        &self,
        attempt: &InFlight,
        stop: &CancellationToken,
    ) -> Result<(), CampaignError> {
        let snapshot = match &attempt.call_sid {
            Some(sid) => self.dialer.lookup(sid).await?,
            None => self.find_orphan(attempt).await?,
        };
        let Some(mut snapshot) = snapshot else {
            if attempt.call_sid.is_none() {
                // The create request never reached Twilio: the attempt did not happen.
                self.store.void_attempt(attempt.attempt_id).await?;
                let status = self.store.lead(attempt.lead_id).await?.status;
                self.emit(CampaignEvent::Reconciled {
                    lead: attempt.lead_id,
                    to: attempt.phone.clone(),
                    call_sid: None,
                    status,
                });
                return Ok(());
            }
            // Twilio created it once but no longer knows it: count it as failed.
            let snapshot = CallSnapshot {
                sid: attempt.call_sid.clone().unwrap_or_default(),
                to: attempt.phone.clone(),
                status: CallStatus::Failed,
                duration_secs: None,
                answered_by: None,
                start_time: None,
            };
            self.settle(attempt, &snapshot, false).await?;
            return Ok(());
        };
        let hung_up = snapshot.final_status().is_none();
        if hung_up {
            // Still ringing or talking with nobody bridging it since the crash.
            self.dialer.hang_up(&snapshot.sid).await?;
            let deadline = tokio::time::Instant::now() + ORPHAN_SETTLE;
            while snapshot.final_status().is_none() && tokio::time::Instant::now() < deadline {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = stop.cancelled() => break,
                }
                if let Some(s) = self.dialer.lookup(&snapshot.sid).await? {
                    snapshot = s;
                }
            }
            if snapshot.final_status().is_none() {
                tracing::warn!(call_sid = %snapshot.sid, "a call from an earlier run has not ended yet; its lead is left for the next run");
                return Ok(());
            }
        }
        self.settle(attempt, &snapshot, hung_up).await?;
        Ok(())
    }

    /// A call to this number that no recorded attempt accounts for.
    async fn find_orphan(&self, attempt: &InFlight) -> Result<Option<CallSnapshot>, CampaignError> {
        let to = E164::parse(&attempt.phone).map_err(|e| StoreError::Data(e.to_string()))?;
        // A generous margin: Twilio's clock and ours differ, and recorded SIDs rule out the
        // lead's earlier attempts anyway.
        let since = attempt.started_at - chrono::Duration::minutes(10);
        let known = self.store.call_sids(attempt.lead_id).await?;
        let calls = self.dialer.find_calls_to(&to, since).await?;
        Ok(calls
            .into_iter()
            .filter(|c| !known.contains(&c.sid))
            .min_by_key(|c| c.start_time))
    }

    /// Record a crashed run's call from Twilio's record of it. `hung_up`: it was still live and
    /// this run ended it, as an operator would; if nobody had answered, the lead is tried again.
    /// Its outcome knows no words: the store keeps the lines that were saved as they were spoken.
    async fn settle(
        &self,
        attempt: &InFlight,
        snapshot: &CallSnapshot,
        hung_up: bool,
    ) -> Result<(), CampaignError> {
        let status = snapshot.final_status().unwrap_or(FinalStatus::Failed);
        let (ended_by, reason) = if hung_up {
            (
                EndedBy::Operator,
                format!(
                    "left live by a run that stopped; hung up on restart ({})",
                    snapshot.status
                ),
            )
        } else {
            (
                EndedBy::Error,
                format!(
                    "the run placing it stopped; Twilio's record says {}",
                    snapshot.status
                ),
            )
        };
        let outcome = Outcome {
            to: attempt.phone.clone(),
            direction: crate::events::Direction::Outbound,
            call_sid: Some(snapshot.sid.clone()),
            status,
            duration_secs: snapshot.duration_secs,
            answered_by: snapshot.answered_by.clone(),
            ended_by,
            reason,
            error: None,
            disposition: None,
            opted_out: false,
            transcript: Vec::new(),
            reconnects: Vec::new(),
            machine: None,
            transfer: None,
        };
        let now = self.clock.now();
        let verdict = verdict(&outcome, attempt.number, &self.config.retry, now);
        self.store
            .finish_attempt(attempt.attempt_id, outcome, verdict.clone(), now)
            .await?;
        self.emit(CampaignEvent::Reconciled {
            lead: attempt.lead_id,
            to: attempt.phone.clone(),
            call_sid: Some(snapshot.sid.clone()),
            status: verdict.status,
        });
        Ok(())
    }

    /// Run something against the campaign's database (the results export), on its thread.
    pub async fn with_store<T, E>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.store.read(f).await
    }

    /// The campaign's totals, from the database.
    pub async fn summary(&self) -> Result<Summary, CampaignError> {
        let config = self.config.clone();
        self.store.read(move |store| summary(store, &config)).await
    }

    /// Transactions the campaign's database has committed in this run.
    pub fn commits(&self) -> u64 {
        self.store.commits()
    }
}

/// What the dial loop does next.
// One value at a time, moved once from `next` to `run`: boxing the lead would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Next {
    /// Place a call to `lead` on `line`: it has its pacing turn and was cleared for dialing at
    /// `at`.
    Dial {
        lead: LeadRow,
        line: OwnedSemaphorePermit,
        at: DateTime<Utc>,
    },
    /// Nothing can be dialed before this time.
    WaitUntil(DateTime<Utc>),
    /// Every lead is final and no call is live.
    Drained,
    /// The operator stopped the campaign, or a call failed in a way that concerns every call.
    Stopped,
}

/// One run's dialing: its lines, its live calls, and the first failure among them.
struct DialLoop<D: Dialer> {
    runner: Arc<Runner<D>>,
    stop: CancellationToken,
    hang_up: CancellationToken,
    lines: Arc<Semaphore>,
    live: JoinSet<Result<(), CampaignError>>,
    failure: Option<CampaignError>,
    /// The last wait announced: waking early (a call ended) to the same wait says nothing new.
    announced_wait: Option<DateTime<Utc>>,
    trouble: Breaker,
}

/// The circuit breaker for Twilio trouble: each transient failure pauses dialing for longer,
/// up to a cap; when the pause is over, the attempts the trouble left in flight are settled
/// from Twilio's records (which only works if Twilio answers again) before anyone is dialed.
#[derive(Debug, Default)]
struct Breaker {
    /// Transient failures since dialing last worked.
    strikes: u32,
    paused_until: Option<tokio::time::Instant>,
    /// Attempts whose create may or may not have made a call.
    stranded: Vec<i64>,
}

/// The first pause after Twilio trouble; each further strike doubles it, up to the cap.
const TROUBLE_PAUSE: Duration = Duration::from_secs(5);
const TROUBLE_PAUSE_MAX: Duration = Duration::from_secs(300);

impl Breaker {
    /// Open (or keep open) the breaker; how long dialing pauses.
    fn trip(&mut self, stranded: Option<i64>) -> Duration {
        self.strikes += 1;
        self.stranded.extend(stranded);
        let pause = TROUBLE_PAUSE
            .saturating_mul(1 << (self.strikes - 1).min(10))
            .min(TROUBLE_PAUSE_MAX);
        self.paused_until = Some(tokio::time::Instant::now() + pause);
        pause
    }
}

impl<D: Dialer> DialLoop<D> {
    fn new(runner: Arc<Runner<D>>, stop: CancellationToken, hang_up: CancellationToken) -> Self {
        Self {
            lines: Arc::new(Semaphore::new(runner.config.concurrency.max(1))),
            runner,
            stop,
            hang_up,
            live: JoinSet::new(),
            failure: None,
            announced_wait: None,
            trouble: Breaker::default(),
        }
    }

    /// What to do next. Waits for a free line and the lead's pacing turn before a dial, and for
    /// a live call to end when that is all that can happen; notes finished calls on the way.
    async fn next(&mut self) -> Result<Next, CampaignError> {
        loop {
            if self.failure.is_some() || self.stop.is_cancelled() {
                return Ok(Next::Stopped);
            }
            while let Some(done) = self.live.try_join_next() {
                self.keep_first_failure(done);
            }
            if self.failure.is_some() {
                return Ok(Next::Stopped);
            }
            if let Some(until) = self.trouble.paused_until {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    Some(done) = self.live.join_next(), if !self.live.is_empty() => {
                        self.keep_first_failure(done);
                        continue;
                    }
                    () = self.stop.cancelled() => return Ok(Next::Stopped),
                }
                match self
                    .runner
                    .reconcile_stranded(&mut self.trouble.stranded, &self.stop)
                    .await
                {
                    Ok(()) => {
                        self.trouble.paused_until = None;
                        self.runner.emit(CampaignEvent::TwilioBack);
                    }
                    Err(CampaignError::Dial(e)) if e.transient => self.pause(None, &e),
                    Err(e) => return Err(e),
                }
                continue;
            }
            // A free line first, so the lead is checked as close to its dial as possible.
            let line = tokio::select! {
                line = self.lines.clone().acquire_owned() => line.expect("the semaphore is never closed"),
                () = self.stop.cancelled() => return Ok(Next::Stopped),
            };
            // The call that freed this line may have ended in a failure or in Twilio trouble:
            // look before dialing anyone else.
            let before = (self.failure.is_some(), self.trouble.paused_until);
            while let Some(done) = self.live.try_join_next() {
                self.keep_first_failure(done);
            }
            if (self.failure.is_some(), self.trouble.paused_until) != before {
                continue;
            }
            let picked = tokio::select! {
                picked = self.runner.pick_lead() => picked?,
                () = self.stop.cancelled() => return Ok(Next::Stopped),
            };
            if let Some(lead) = picked {
                tokio::select! {
                    () = self.runner.pacer.wait_turn() => {}
                    () = self.stop.cancelled() => return Ok(Next::Stopped),
                }
                // The list and the window again, at the moment of dialing: the turn may have
                // taken a while, and the list may have changed meanwhile.
                let now = self.runner.clock.now();
                if self.runner.cleared(&lead, now)? {
                    return Ok(Next::Dial {
                        lead,
                        line,
                        at: now,
                    });
                }
                continue;
            }
            drop(line);
            let Some((at, waiting)) = self.runner.store.next_due().await? else {
                if self.live.is_empty() {
                    return Ok(Next::Drained);
                }
                // No lead waits, but a live call may end in a retry.
                tokio::select! {
                    Some(done) = self.live.join_next() => self.keep_first_failure(done),
                    () = self.stop.cancelled() => return Ok(Next::Stopped),
                }
                continue;
            };
            // While a do-not-call list cannot be read, leads wait a few seconds at a time: no
            // notice each time, and no jump of a simulated clock past the wait.
            let paused = lock(&self.runner.dnc).is_paused();
            if !paused && self.announced_wait != Some(at) && at > self.runner.clock.now() {
                self.announced_wait = Some(at);
                self.runner.emit(CampaignEvent::Waiting {
                    until: at,
                    leads: waiting,
                });
            }
            return Ok(Next::WaitUntil(at));
        }
    }

    /// Record the attempt durably, then place the call on a task of its own that holds `line`
    /// until the call is over.
    async fn dial(
        &mut self,
        lead: LeadRow,
        line: OwnedSemaphorePermit,
        at: DateTime<Utc>,
    ) -> Result<(), CampaignError> {
        let (attempt, number) = self.runner.store.begin_attempt(lead.id, at).await?;
        // Tells apart the logs of calls running at once; the call service's own span inside it
        // adds the number and the call SID. At warn level, so the default filter keeps it.
        let span = tracing::warn_span!("lead", lead = lead.id, line = lead.line, attempt = number);
        let runner = self.runner.clone();
        let hang_up = self.hang_up.child_token();
        self.live.spawn(
            async move {
                let result = runner.place(lead, attempt, number, hang_up).await;
                drop(line);
                result
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Wait until `at`, unless a live call ends first (freeing a line, perhaps setting a retry
    /// sooner) or the campaign stops.
    async fn wait_until(&mut self, at: DateTime<Utc>) {
        let paused = lock(&self.runner.dnc).is_paused();
        if self.live.is_empty() && !paused && self.runner.clock.jump_to(at) {
            return;
        }
        let sleep = tokio::time::sleep(self.runner.clock.real_until(at));
        tokio::select! {
            Some(done) = self.live.join_next(), if !self.live.is_empty() => self.keep_first_failure(done),
            () = sleep => {}
            () = self.stop.cancelled() => {}
        }
    }

    /// Let the live calls end (hung up if `hang_up` is cancelled); the first failure, if any.
    async fn drain(mut self) -> Result<(), CampaignError> {
        if !self.live.is_empty() {
            if self.stop.is_cancelled() {
                self.runner.emit(CampaignEvent::Draining {
                    live: self.live.len(),
                });
            }
            while let Some(done) = self.live.join_next().await {
                self.keep_first_failure(done);
            }
        }
        match self.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn keep_first_failure(&mut self, done: Result<Result<(), CampaignError>, JoinError>) {
        let err = match done {
            Ok(Ok(())) => {
                self.trouble.strikes = 0;
                return;
            }
            Ok(Err(CampaignError::Unavailable { attempt, error })) => {
                self.pause(Some(attempt), &error);
                return;
            }
            Ok(Err(e)) => e,
            Err(e) => CampaignError::Store(StoreError::Data(format!("a call task failed: {e}"))),
        };
        // The command reports the first failure as its one closing line; more would repeat it.
        tracing::debug!(error = %err, "campaign stops dialing");
        self.failure.get_or_insert(err);
    }
}

impl<D: Dialer> DialLoop<D> {
    /// Twilio trouble: pause dialing, and say so.
    fn pause(&mut self, stranded: Option<i64>, error: &DialError) {
        let pause = self.trouble.trip(stranded);
        tracing::warn!(error = %error, pause_secs = pause.as_secs(), "Twilio trouble: dialing paused");
        self.runner.emit(CampaignEvent::TwilioTrouble {
            reason: error.message.clone(),
            retry_in_secs: pause.as_secs(),
        });
    }
}

/// Whether a machine, not a person, answered.
fn answered_by_machine(outcome: &Outcome) -> bool {
    outcome
        .answered_by
        .as_ref()
        .is_some_and(AnsweredBy::is_machine)
        || outcome
            .disposition
            .as_ref()
            .is_some_and(|d| d.name == "voicemail")
}

/// What an attempt's outcome means for its lead: final, or another attempt and when.
pub fn verdict(
    outcome: &Outcome,
    attempt: u32,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> Verdict {
    let answered = outcome.status == FinalStatus::Completed;
    if outcome.opted_out {
        return Verdict {
            status: LeadStatus::OptedOut,
            next_at: None,
            reason: "asked not to be called again".into(),
        };
    }
    if outcome.ended_by == EndedBy::Operator && !answered {
        // Hung up by the operator before anyone answered: not the callee's doing.
        return Verdict {
            status: LeadStatus::Retry,
            next_at: Some(now),
            reason: "interrupted before it was answered".into(),
        };
    }
    let status = match outcome.status {
        FinalStatus::Completed if outcome.transfer.is_some() && outcome.error.is_none() => {
            LeadStatus::Transferred
        }
        FinalStatus::Completed if outcome.machine == Some(MachineEnd::VoicemailLeft) => {
            LeadStatus::VoicemailLeft
        }
        FinalStatus::Completed if answered_by_machine(outcome) => LeadStatus::Voicemail,
        FinalStatus::Completed if outcome.error.is_some() => LeadStatus::Failed,
        FinalStatus::Completed => LeadStatus::Completed,
        FinalStatus::Busy => LeadStatus::Busy,
        FinalStatus::NoAnswer => LeadStatus::NoAnswer,
        FinalStatus::Failed | FinalStatus::Canceled => LeadStatus::Failed,
    };
    // Refused at creation (invalid, unreachable or blocked number): another try cannot help.
    let refused = outcome.call_sid.is_none();
    if !refused
        && let Some(rule) = policy.for_status(status)
        && attempt < rule.attempts
    {
        let delay = chrono::Duration::from_std(rule.delay).unwrap_or_default();
        return Verdict {
            status: LeadStatus::Retry,
            next_at: Some(now + delay),
            reason: format!("{status} on attempt {attempt} of {}", rule.attempts),
        };
    }
    Verdict {
        status,
        next_at: None,
        reason: outcome.reason.clone(),
    }
}

/// The campaign's totals and estimated cost.
pub fn summary(store: &Store, config: &CampaignConfig) -> Result<Summary, CampaignError> {
    let totals = store.totals()?;
    // A fold from +0.0: an empty float sum is -0.0, which would print as "$-0.00".
    let cost = totals
        .durations
        .iter()
        .fold(0.0, |sum, &secs| sum + config.cost.cost_of(secs));
    Ok(Summary {
        leads: totals.statuses.iter().map(|(_, n)| n).sum(),
        statuses: totals.statuses,
        dispositions: totals.dispositions,
        attempts: totals.attempts,
        answered: totals.answered,
        talk_secs: totals.durations.iter().sum(),
        estimated_cost_usd: cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::config::Retry;
    use crate::events::Disposition;

    fn policy() -> RetryPolicy {
        let r = |attempts, mins: u64| Retry {
            attempts,
            delay: Duration::from_secs(60 * mins),
        };
        RetryPolicy {
            busy: r(3, 10),
            no_answer: r(2, 60),
            failed: r(2, 30),
            voicemail: r(2, 240),
            voicemail_left: r(1, 1440),
        }
    }

    fn outcome(status: FinalStatus) -> Outcome {
        Outcome::sample("+12025550100", status, EndedBy::Network)
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn busy_is_retried_until_the_attempts_run_out() {
        let v = verdict(&outcome(FinalStatus::Busy), 1, &policy(), now());
        assert_eq!(v.status, LeadStatus::Retry);
        assert_eq!(v.next_at, Some(now() + chrono::Duration::minutes(10)));
        let v = verdict(&outcome(FinalStatus::Busy), 3, &policy(), now());
        assert_eq!((v.status, v.next_at), (LeadStatus::Busy, None));
    }

    #[test]
    fn voicemail_and_answered_calls() {
        let mut o = outcome(FinalStatus::Completed);
        o.answered_by = Some("machine_end_beep".into());
        let v = verdict(&o, 1, &policy(), now());
        assert_eq!(v.next_at, Some(now() + chrono::Duration::hours(4)));
        assert_eq!(
            verdict(&o, 2, &policy(), now()).status,
            LeadStatus::Voicemail
        );
        o.answered_by = Some("human".into());
        assert_eq!(
            verdict(&o, 1, &policy(), now()).status,
            LeadStatus::Completed
        );
        o.disposition = Some(Disposition {
            name: "voicemail".into(),
            notes: String::new(),
        });
        assert_eq!(verdict(&o, 1, &policy(), now()).status, LeadStatus::Retry);
    }

    #[test]
    fn a_message_left_and_a_transfer_are_their_own_statuses() {
        let mut o = outcome(FinalStatus::Completed);
        o.answered_by = Some("machine_end_beep".into());
        o.machine = Some(MachineEnd::VoicemailLeft);
        // One attempt by default: the message is not left twice.
        assert_eq!(
            verdict(&o, 1, &policy(), now()).status,
            LeadStatus::VoicemailLeft
        );
        let mut twice = policy();
        twice.voicemail_left.attempts = 2;
        assert_eq!(verdict(&o, 1, &twice, now()).status, LeadStatus::Retry);
        o.machine = Some(MachineEnd::Voicemail);
        assert_eq!(verdict(&o, 1, &policy(), now()).status, LeadStatus::Retry);
        assert_eq!(
            verdict(&o, 2, &policy(), now()).status,
            LeadStatus::Voicemail
        );
        let mut o = outcome(FinalStatus::Completed);
        o.answered_by = Some("human".into());
        o.transfer = Some(crate::events::TransferOutcome {
            to: "+12025550150".into(),
            reason: "asked for a person".into(),
            answered: Some(false),
            dial_status: Some("no-answer".into()),
            dial_duration_secs: None,
        });
        assert_eq!(
            verdict(&o, 1, &policy(), now()).status,
            LeadStatus::Transferred
        );
    }

    #[test]
    fn opt_out_is_final_whatever_else_happened() {
        let mut o = outcome(FinalStatus::Completed);
        o.opted_out = true;
        o.answered_by = Some("machine_start".into());
        assert_eq!(
            verdict(&o, 1, &policy(), now()).status,
            LeadStatus::OptedOut
        );
    }

    #[test]
    fn refused_numbers_are_not_retried() {
        let mut o = outcome(FinalStatus::Failed);
        o.call_sid = None;
        assert_eq!(verdict(&o, 1, &policy(), now()).status, LeadStatus::Failed);
        o.call_sid = Some("CA2".into());
        assert_eq!(verdict(&o, 1, &policy(), now()).status, LeadStatus::Retry);
    }

    #[test]
    fn operator_hang_up_before_answer_is_retried_at_once() {
        let mut o = outcome(FinalStatus::Canceled);
        o.ended_by = EndedBy::Operator;
        let v = verdict(&o, 3, &policy(), now());
        assert_eq!((v.status, v.next_at), (LeadStatus::Retry, Some(now())));
        let mut o = outcome(FinalStatus::Completed);
        o.ended_by = EndedBy::Operator;
        assert_eq!(
            verdict(&o, 1, &policy(), now()).status,
            LeadStatus::Completed
        );
    }

    #[test]
    fn a_failed_conversation_is_a_failure() {
        let mut o = outcome(FinalStatus::Completed);
        o.error = Some(crate::events::OutcomeError {
            code: Some("unauthorized".into()),
            message: "bad key".into(),
        });
        assert_eq!(verdict(&o, 2, &policy(), now()).status, LeadStatus::Failed);
    }

    #[test]
    fn an_empty_campaign_costs_nothing_rather_than_minus_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        let config = CampaignConfig::defaults(
            "t",
            crate::agent::config::AgentConfig::default(),
            dir.path(),
        );
        let s = summary(&store, &config).unwrap();
        assert_eq!(format!("{:.2}", s.estimated_cost_usd), "0.00");
        assert_eq!((s.leads, s.attempts), (0, 0));
    }
}

/// The dial loop's decisions, against a scripted dialer and tokio's paused clock.
#[cfg(test)]
mod dial_loop_tests {
    use super::*;
    use crate::campaign::leads::Lead;
    use tokio::time::Instant;

    const ANA: &str = "+12025550100";
    const BEN: &str = "+12025550101";

    /// Every call is created at once, then talks for `talk` and ends well; with `None` it rings
    /// until hung up. `refuse` turns every call down, as bad credentials do.
    #[derive(Default)]
    struct FakeDialer {
        talk: Option<Duration>,
        refuse: bool,
        /// How many dials still fail as Twilio trouble (before any call exists).
        trouble: std::sync::atomic::AtomicUsize,
        dialed: Mutex<Vec<String>>,
        /// Every call looked up is live and stays live, whatever is hung up.
        never_ends: bool,
    }

    impl FakeDialer {
        fn talking(secs: u64) -> Self {
            Self {
                talk: Some(Duration::from_secs(secs)),
                ..Self::default()
            }
        }
    }

    impl Dialer for FakeDialer {
        async fn dial(
            &self,
            request: CallRequest,
            events: mpsc::UnboundedSender<CallEvent>,
            cancel: CancellationToken,
        ) -> Result<Outcome, DialError> {
            let to = request.to.as_str().to_string();
            let call_sid = {
                let mut dialed = lock(&self.dialed);
                dialed.push(to.clone());
                format!("CA{}", dialed.len())
            };
            if self.refuse {
                return Err(DialError {
                    code: Some(20003),
                    message: "Authenticate".into(),
                    transient: false,
                });
            }
            let in_trouble = self
                .trouble
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            if in_trouble {
                return Err(DialError {
                    code: Some(20503),
                    message: "Service Unavailable".into(),
                    transient: true,
                });
            }
            let _ = events.send(CallEvent::Created {
                to: to.clone(),
                call_sid: call_sid.clone(),
                direction: crate::events::Direction::Outbound,
            });
            let hung_up = match self.talk {
                Some(talk) => tokio::select! {
                    () = tokio::time::sleep(talk) => false,
                    () = cancel.cancelled() => true,
                },
                None => {
                    cancel.cancelled().await;
                    true
                }
            };
            tracing::info!("call over");
            let mut outcome = if hung_up {
                Outcome::sample(&to, FinalStatus::Canceled, EndedBy::Operator)
            } else {
                Outcome::sample(&to, FinalStatus::Completed, EndedBy::Agent)
            };
            outcome.call_sid = Some(call_sid);
            Ok(outcome)
        }

        async fn lookup(&self, sid: &str) -> Result<Option<CallSnapshot>, DialError> {
            Ok(self.never_ends.then(|| CallSnapshot {
                sid: sid.to_string(),
                to: ANA.to_string(),
                status: CallStatus::InProgress,
                duration_secs: None,
                answered_by: None,
                start_time: None,
            }))
        }

        async fn hang_up(&self, _: &str) -> Result<(), DialError> {
            Ok(())
        }

        async fn find_calls_to(
            &self,
            _: &E164,
            _: DateTime<Utc>,
        ) -> Result<Vec<CallSnapshot>, DialError> {
            Ok(Vec::new())
        }
    }

    struct Setup {
        runner: Arc<Runner<FakeDialer>>,
        events: mpsc::UnboundedReceiver<CampaignEvent>,
        stop: CancellationToken,
        hang_up: CancellationToken,
        _dir: tempfile::TempDir,
    }

    /// Tuesday 10:00 in New York: the default calling window is open.
    fn tuesday_10_ny() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A campaign calling `phones` (New York time, one call per second) on `lines` lines, with
    /// a campaign clock that starts at `clock`.
    fn setup(dialer: FakeDialer, phones: &[&str], lines: usize, clock: DateTime<Utc>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("c.db")).unwrap();
        let leads: Vec<Lead> = phones
            .iter()
            .zip(2..)
            .map(|(phone, line)| Lead {
                line,
                phone: E164::parse(phone).unwrap(),
                timezone: None,
                vars: Vec::new(),
            })
            .collect();
        store.import(&leads, clock).unwrap();
        let mut config = CampaignConfig::defaults(
            "t",
            crate::agent::config::AgentConfig::default(),
            dir.path(),
        );
        config.timezone = Some(chrono_tz::America::New_York);
        config.concurrency = lines;
        let dnc = DncList::load(&config.dnc, None).unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let runner = Runner::new(
            Arc::new(dialer),
            store,
            config,
            dnc,
            Arc::new(Clock::simulated(clock, 1.0)),
            tx,
        );
        Setup {
            runner: Arc::new(runner),
            events,
            stop: CancellationToken::new(),
            hang_up: CancellationToken::new(),
            _dir: dir,
        }
    }

    impl Setup {
        fn dial_loop(&self) -> DialLoop<FakeDialer> {
            DialLoop::new(self.runner.clone(), self.stop.clone(), self.hang_up.clone())
        }

        fn events(&mut self) -> Vec<CampaignEvent> {
            std::iter::from_fn(|| self.events.try_recv().ok()).collect()
        }

        async fn status(&self, phone: &str) -> LeadStatus {
            let leads = self.runner.store.read(Store::leads).await.unwrap();
            leads.into_iter().find(|l| l.phone == phone).unwrap().status
        }

        fn dialed(&self) -> Vec<String> {
            lock(&self.runner.dialer.dialed).clone()
        }
    }

    /// Expect `next` to say dial, dial as `run` does, and return the number.
    async fn dial_next(dialing: &mut DialLoop<FakeDialer>) -> String {
        match dialing.next().await.unwrap() {
            Next::Dial { lead, line, at } => {
                let phone = lead.phone.clone();
                dialing.dial(lead, line, at).await.unwrap();
                phone
            }
            other => panic!("expected a dial, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_for_a_call_an_earlier_run_left_live() {
        let dialer = FakeDialer {
            never_ends: true,
            ..FakeDialer::default()
        };
        let t = setup(dialer, &[ANA], 1, tuesday_10_ny());
        let lead = t.runner.store.read(Store::leads).await.unwrap()[0].id;
        let (attempt, _) = t
            .runner
            .store
            .begin_attempt(lead, tuesday_10_ny())
            .await
            .unwrap();
        t.runner
            .store
            .set_call_sid(attempt, "CA1".into())
            .await
            .unwrap();
        let start = Instant::now();
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            t.stop.cancel();
        };
        let run = t.runner.clone().run(t.stop.clone(), t.hang_up.clone());
        let (complete, ()) = tokio::join!(run, stopper);
        assert!(!complete.unwrap());
        assert!(
            start.elapsed() < ORPHAN_SETTLE,
            "the stop waited {:?} for the orphan",
            start.elapsed()
        );
        // Not settled, not redialed: the next run settles it.
        assert_eq!(t.runner.store.in_flight().await.unwrap().len(), 1);
        assert!(t.dialed().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn each_dial_waits_for_its_pacing_turn() {
        let t = setup(FakeDialer::talking(60), &[ANA, BEN], 2, tuesday_10_ny());
        let mut dialing = t.dial_loop();
        let start = Instant::now();
        assert_eq!(dial_next(&mut dialing).await, ANA);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(dial_next(&mut dialing).await, BEN);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dial_waits_for_a_free_line() {
        let mut t = setup(FakeDialer::talking(30), &[ANA, BEN], 1, tuesday_10_ny());
        let mut dialing = t.dial_loop();
        let start = Instant::now();
        dial_next(&mut dialing).await;
        assert_eq!(dial_next(&mut dialing).await, BEN);
        assert!(start.elapsed() >= Duration::from_secs(30));
        assert_eq!(t.status(ANA).await, LeadStatus::Completed);
        let finished = t
            .events()
            .into_iter()
            .any(|e| matches!(e, CampaignEvent::Finished { to, .. } if to == ANA));
        assert!(finished);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lead_on_the_do_not_call_list_is_skipped_at_dial_time() {
        let mut t = setup(FakeDialer::talking(30), &[ANA, BEN], 2, tuesday_10_ny());
        // Written after loading: the list is read again when a lead's turn comes.
        std::fs::write(&t.runner.config.dnc[0], format!("{ANA}\n")).unwrap();
        let mut dialing = t.dial_loop();
        assert_eq!(dial_next(&mut dialing).await, BEN);
        assert_eq!(t.status(ANA).await, LeadStatus::DoNotCall);
        let skipped = t.events().into_iter().any(|e| {
            matches!(e, CampaignEvent::Skipped { to, status: LeadStatus::DoNotCall, .. } if to == ANA)
        });
        assert!(skipped);
        dialing.drain().await.unwrap();
        assert_eq!(t.dialed(), [BEN]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_window_is_one_announced_wait_then_a_dial() {
        // 06:00 in New York: the window opens at 09:00.
        let six_am = tuesday_10_ny() - chrono::Duration::hours(4);
        let opens = tuesday_10_ny() - chrono::Duration::hours(1);
        let mut t = setup(FakeDialer::talking(30), &[ANA], 1, six_am);
        let mut dialing = t.dial_loop();
        assert!(matches!(dialing.next().await.unwrap(), Next::WaitUntil(at) if at == opens));
        assert_eq!(
            t.events(),
            [CampaignEvent::Waiting {
                until: opens,
                leads: 1
            }]
        );
        // Asked again (as after a call ends early), the same wait is not announced twice.
        assert!(matches!(dialing.next().await.unwrap(), Next::WaitUntil(at) if at == opens));
        assert_eq!(t.events(), []);

        let start = Instant::now();
        dialing.wait_until(opens).await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "with nothing live the simulated clock jumps rather than sleeps"
        );
        assert_eq!(dial_next(&mut dialing).await, ANA);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_window_over_many_leads_is_deferred_in_bulk() {
        const N: usize = 20_000;
        let six_am = tuesday_10_ny() - chrono::Duration::hours(4);
        let opens = tuesday_10_ny() - chrono::Duration::hours(1);
        let phones: Vec<String> = (0..N)
            .map(|i| format!("+1202{}{:04}", 200 + i / 10_000, i % 10_000))
            .collect();
        let phones: Vec<&str> = phones.iter().map(String::as_str).collect();
        let mut t = setup(FakeDialer::talking(30), &phones, 1, six_am);
        let mut dialing = t.dial_loop();
        let before = t.runner.commits();
        assert!(matches!(dialing.next().await.unwrap(), Next::WaitUntil(at) if at == opens));
        assert_eq!(
            t.events(),
            [CampaignEvent::Waiting {
                until: opens,
                leads: N as u64
            }]
        );
        // One sync a lead made this quadratic in time and fsyncs; batches make it a handful.
        let commits = t.runner.commits() - before;
        assert!(commits <= 100, "{N} deferrals took {commits} commits");
        assert!(t.dialed().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_long_deferral_between_batches() {
        const N: usize = 20_000;
        let six_am = tuesday_10_ny() - chrono::Duration::hours(4);
        let phones: Vec<String> = (0..N)
            .map(|i| format!("+1202{}{:04}", 200 + i / 10_000, i % 10_000))
            .collect();
        let phones: Vec<&str> = phones.iter().map(String::as_str).collect();
        let t = setup(FakeDialer::talking(30), &phones, 1, six_am);
        let deferred = || async {
            let leads = t.runner.store.read(Store::leads).await.unwrap();
            leads.iter().filter(|l| l.next_at.is_some()).count()
        };
        let mut dialing = t.dial_loop();
        // Stops once the deferring is under way, as a Ctrl-C would.
        let stopper = async {
            while deferred().await == 0 {
                tokio::task::yield_now().await;
            }
            t.stop.cancel();
        };
        let (next, ()) = tokio::join!(dialing.next(), stopper);
        assert!(matches!(next.unwrap(), Next::Stopped));
        let done = deferred().await;
        assert!(done < N, "the stop waited for all {N} deferrals");
    }

    #[tokio::test(start_paused = true)]
    async fn drained_only_once_the_live_calls_are_over() {
        let t = setup(FakeDialer::talking(30), &[ANA], 1, tuesday_10_ny());
        let mut dialing = t.dial_loop();
        let start = Instant::now();
        dial_next(&mut dialing).await;
        assert!(matches!(dialing.next().await.unwrap(), Next::Drained));
        assert!(start.elapsed() >= Duration::from_secs(30));
        assert_eq!(t.status(ANA).await, LeadStatus::Completed);
        dialing.drain().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_for_a_line_and_live_calls_finish() {
        let mut t = setup(FakeDialer::talking(30), &[ANA, BEN], 1, tuesday_10_ny());
        let mut dialing = t.dial_loop();
        let start = Instant::now();
        dial_next(&mut dialing).await;
        let stop = t.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });
        assert!(matches!(dialing.next().await.unwrap(), Next::Stopped));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        dialing.drain().await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(30));
        assert!(t.events().contains(&CampaignEvent::Draining { live: 1 }));
        assert_eq!(t.status(ANA).await, LeadStatus::Completed);
        assert_eq!(t.status(BEN).await, LeadStatus::Pending);
    }

    #[tokio::test(start_paused = true)]
    async fn hang_up_ends_the_live_calls() {
        let t = setup(FakeDialer::default(), &[ANA], 1, tuesday_10_ny());
        let mut dialing = t.dial_loop();
        dial_next(&mut dialing).await;
        t.stop.cancel();
        t.hang_up.cancel();
        assert!(matches!(dialing.next().await.unwrap(), Next::Stopped));
        dialing.drain().await.unwrap();
        // Hung up before anyone answered: tried again by a later run.
        assert_eq!(t.status(ANA).await, LeadStatus::Retry);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_refused_for_every_call_stops_the_dialing() {
        let dialer = FakeDialer {
            refuse: true,
            ..FakeDialer::default()
        };
        let t = setup(dialer, &[ANA, BEN], 2, tuesday_10_ny());
        let mut dialing = t.dial_loop();
        dial_next(&mut dialing).await;
        // Lets the call task run to its end.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(matches!(dialing.next().await.unwrap(), Next::Stopped));
        assert!(matches!(
            dialing.drain().await,
            Err(CampaignError::Dial(DialError {
                code: Some(20003),
                ..
            }))
        ));
        assert_eq!(t.dialed(), [ANA]);
        // The refused attempt never happened.
        assert_eq!(t.status(ANA).await, LeadStatus::Pending);
    }

    /// Collects what a tracing subscriber writes.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_logs_under_its_lead() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // Other tests meet the same callsites on their own threads meanwhile. While a single
        // dispatcher is registered, tracing caches a callsite's interest from the thread that
        // met it first (theirs: none); with two, it asks each thread's own subscriber.
        let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let _guard = tracing::subscriber::set_default(subscriber);
        let t = setup(FakeDialer::talking(30), &[ANA], 1, tuesday_10_ny());
        let mut dialing = t.dial_loop();
        dial_next(&mut dialing).await;
        dialing.drain().await.unwrap();
        let logs = String::from_utf8(lock(&logs.0).clone()).unwrap();
        let line = logs.lines().find(|l| l.contains("call over")).unwrap();
        assert!(line.contains("lead{lead=1 line=2 attempt=1}"), "{line}");
    }

    #[tokio::test(start_paused = true)]
    async fn twilio_trouble_pauses_dialing_and_it_resumes_by_itself() {
        let dialer = FakeDialer {
            trouble: std::sync::atomic::AtomicUsize::new(2),
            ..FakeDialer::talking(5)
        };
        let mut t = setup(dialer, &[ANA, BEN], 1, tuesday_10_ny());
        let started = tokio::time::Instant::now();
        let complete = t
            .runner
            .clone()
            .run(t.stop.clone(), t.hang_up.clone())
            .await
            .expect("trouble does not stop the campaign");
        assert!(complete);
        assert_eq!(t.status(ANA).await, LeadStatus::Completed);
        assert_eq!(t.status(BEN).await, LeadStatus::Completed);
        // Ana was dialed into the trouble twice, then for real; each stranded attempt was
        // settled from Twilio's records (no call existed) before dialing went on.
        assert_eq!(t.dialed(), [ANA, ANA, ANA, BEN]);
        let events = t.events();
        let paused: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                CampaignEvent::TwilioTrouble { retry_in_secs, .. } => Some(*retry_in_secs),
                _ => None,
            })
            .collect();
        assert_eq!(paused, [5, 10], "each strike pauses longer");
        assert!(events.contains(&CampaignEvent::TwilioBack));
        assert!(started.elapsed() >= Duration::from_secs(15));
    }
}

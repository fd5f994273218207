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
use super::store::{InFlight, LeadRow, Store, StoreError, Verdict};
use super::tools::CampaignTools;
use super::{CampaignEvent, LeadStatus, Summary, template};
use crate::call::dialer::{CallRequest, CallSnapshot, DialError, Dialer};
use crate::events::{CallEvent, EndedBy, FinalStatus, Outcome};
use crate::phone::E164;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
}

/// Added to every campaign prompt: the tools only help if the agent knows when to use them.
const TOOL_GUIDE: &str = "\n\nBefore you end the call, record how it went with the record_outcome tool. \
If the person asks not to be called again, call the opt_out tool at once, apologise briefly, say goodbye and end the call.";

/// How often dialing looks again at a do-not-call list it cannot read.
const DNC_RECHECK: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// How long to wait for a call a crashed run left live to end after hanging it up.
const ORPHAN_SETTLE: Duration = Duration::from_secs(30);

pub struct Runner<D: Dialer> {
    dialer: Arc<D>,
    store: Mutex<Store>,
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
            store: Mutex::new(store),
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

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Run until every lead is final, or `stop` is cancelled (then live calls finish; cancelling
    /// `hang_up` as well hangs them up). Returns whether the campaign is complete.
    pub async fn run(
        self: Arc<Self>,
        stop: CancellationToken,
        hang_up: CancellationToken,
    ) -> Result<bool, CampaignError> {
        let (leads, finished) = self.store().counts()?;
        self.emit(CampaignEvent::Plan {
            campaign: self.config.name.clone(),
            leads,
            finished,
        });
        self.reconcile().await?;

        let lines = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut live: JoinSet<Result<(), CampaignError>> = JoinSet::new();
        let mut failure: Option<CampaignError> = None;
        let mut last_wait: Option<DateTime<Utc>> = None;
        'dialing: while failure.is_none() && !stop.is_cancelled() {
            while let Some(done) = live.try_join_next() {
                note(&mut failure, done);
            }
            if failure.is_some() {
                break;
            }
            // A free line first, so the lead is checked as close to its dial as possible.
            let permit = tokio::select! {
                p = lines.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                () = stop.cancelled() => break,
            };
            let lead = loop {
                let now = self.clock.now();
                let Some(lead) = self.store().due(now, 1, &[])?.pop() else {
                    break None;
                };
                if self.cleared(&lead, now)? {
                    break Some(lead);
                }
            };
            let Some(lead) = lead else {
                drop(permit);
                // Nothing is due now: wait for a live call to end or the next lead's time.
                let Some((at, waiting)) = self.store().next_due()? else {
                    if live.is_empty() {
                        break;
                    }
                    tokio::select! {
                        Some(done) = live.join_next() => note(&mut failure, done),
                        () = stop.cancelled() => break,
                    }
                    continue;
                };
                // While a do-not-call list cannot be read, leads wait a few seconds at a time:
                // no notice each time, and no jump of a simulated clock past the wait.
                let paused = lock(&self.dnc).is_paused();
                if !paused && last_wait != Some(at) && at > self.clock.now() {
                    last_wait = Some(at);
                    self.emit(CampaignEvent::Waiting {
                        until: at,
                        leads: waiting,
                    });
                }
                if live.is_empty() && !paused && self.clock.jump_to(at) {
                    continue;
                }
                let sleep = tokio::time::sleep(self.clock.real_until(at));
                tokio::select! {
                    Some(done) = live.join_next(), if !live.is_empty() => note(&mut failure, done),
                    () = sleep => {}
                    () = stop.cancelled() => break,
                }
                continue;
            };
            tokio::select! {
                () = self.pacer.wait_turn() => {}
                () = stop.cancelled() => break 'dialing,
            }
            // The list and the window again, at the moment of dialing: the turn may have
            // taken a while, and the list may have changed meanwhile.
            let now = self.clock.now();
            if !self.cleared(&lead, now)? {
                continue;
            }
            let (attempt, number) = self.store().begin_attempt(lead.id, now)?;
            let runner = self.clone();
            let hang_up = hang_up.child_token();
            live.spawn(async move {
                let result = runner.place(lead, attempt, number, hang_up).await;
                drop(permit);
                result
            });
        }
        if !live.is_empty() {
            if stop.is_cancelled() {
                self.emit(CampaignEvent::Draining { live: live.len() });
            }
            while let Some(done) = live.join_next().await {
                note(&mut failure, done);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let (leads, finished) = self.store().counts()?;
        Ok(leads == finished)
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
                self.store().skip(lead.id, status, &reason, now)?;
                self.emit(CampaignEvent::Skipped {
                    lead: lead.id,
                    to: lead.phone.clone(),
                    status,
                    reason,
                });
            }
            Check::Defer(until) => self.store().defer(lead.id, until)?,
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
        agent.system_prompt = template::fill_prompt(
            &format!("{}{TOOL_GUIDE}", agent.system_prompt),
            &to,
            &lead.vars,
        );
        CallRequest {
            tools: Arc::new(CampaignTools::new(
                to.clone(),
                self.dispositions.clone(),
                self.dnc.clone(),
            )),
            to,
            agent,
            ring_timeout: self.config.ring_timeout,
            time_limit: self.config.time_limit,
            machine_detection: self.config.machine_detection,
        }
    }

    /// Place one attempt and record its end.
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
                if let CallEvent::Created { call_sid, .. } = &event {
                    // The call exists now: a crash from here on is settled by its SID.
                    if let Err(e) = self.store().set_call_sid(attempt, call_sid) {
                        tracing::error!(error = %e, "cannot record the call SID");
                    }
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
                    self.store().void_attempt(attempt)?;
                }
                // A transient failure may have created the call: the attempt stays in flight
                // and the next run settles it from Twilio's records.
                return Err(CampaignError::Dial(e));
            }
        };
        let now = self.clock.now();
        let verdict = verdict(&outcome, number, &self.config.retry, now);
        self.store()
            .finish_attempt(attempt, &outcome, &verdict, now)?;
        self.emit(CampaignEvent::Finished {
            lead: lead.id,
            to: lead.phone.clone(),
            attempt: number,
            status: verdict.status,
            disposition: outcome.disposition.as_ref().map(|d| d.name.clone()),
            retry_at: verdict.next_at,
        });
        if let Some(err) = &outcome.error
            && matches!(err.code.as_deref(), Some("unauthorized" | "forbidden"))
        {
            return Err(CampaignError::Agent(err.message.clone()));
        }
        Ok(())
    }

    /// Settle attempts a previous run left in flight, from Twilio's records.
    async fn reconcile(&self) -> Result<(), CampaignError> {
        let flying = self.store().in_flight()?;
        for f in flying {
            let snapshot = match &f.call_sid {
                Some(sid) => self.dialer.lookup(sid).await?,
                None => self.find_orphan(&f).await?,
            };
            let Some(mut snapshot) = snapshot else {
                if f.call_sid.is_none() {
                    // The create request never reached Twilio: the attempt did not happen.
                    self.store().void_attempt(f.attempt_id)?;
                    let status = self.store().lead(f.lead_id)?.status;
                    self.emit(CampaignEvent::Reconciled {
                        lead: f.lead_id,
                        to: f.phone.clone(),
                        call_sid: None,
                        status,
                    });
                    continue;
                }
                // Twilio created it once but no longer knows it: count it as failed.
                let snapshot = CallSnapshot {
                    sid: f.call_sid.clone().unwrap_or_default(),
                    to: f.phone.clone(),
                    status: "failed".into(),
                    duration_secs: None,
                    answered_by: None,
                    start_time: None,
                };
                self.settle(&f, &snapshot, false)?;
                continue;
            };
            let hung_up = snapshot.final_status().is_none();
            if hung_up {
                // Still ringing or talking with nobody bridging it since the crash.
                self.dialer.hang_up(&snapshot.sid).await?;
                let deadline = tokio::time::Instant::now() + ORPHAN_SETTLE;
                while snapshot.final_status().is_none() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Some(s) = self.dialer.lookup(&snapshot.sid).await? {
                        snapshot = s;
                    }
                }
                if snapshot.final_status().is_none() {
                    tracing::warn!(call_sid = %snapshot.sid, "a call from an earlier run has not ended yet; its lead is left for the next run");
                    continue;
                }
            }
            self.settle(&f, &snapshot, hung_up)?;
        }
        Ok(())
    }

    /// A call to this number that no recorded attempt accounts for.
    async fn find_orphan(&self, f: &InFlight) -> Result<Option<CallSnapshot>, CampaignError> {
        let to = E164::parse(&f.phone).map_err(|e| StoreError::Data(e.to_string()))?;
        // A generous margin: Twilio's clock and ours differ, and recorded SIDs rule out the
        // lead's earlier attempts anyway.
        let since = f.started_at - chrono::Duration::minutes(10);
        let known = self.store().call_sids(f.lead_id)?;
        let calls = self.dialer.find_calls_to(&to, since).await?;
        Ok(calls
            .into_iter()
            .filter(|c| !known.contains(&c.sid))
            .min_by_key(|c| c.start_time))
    }

    /// Record a crashed run's call from Twilio's record of it. `hung_up`: it was still live and
    /// this run ended it, as an operator would; if nobody had answered, the lead is tried again.
    fn settle(
        &self,
        f: &InFlight,
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
            to: f.phone.clone(),
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
        };
        let now = self.clock.now();
        let verdict = verdict(&outcome, f.number, &self.config.retry, now);
        self.store()
            .finish_attempt(f.attempt_id, &outcome, &verdict, now)?;
        self.emit(CampaignEvent::Reconciled {
            lead: f.lead_id,
            to: f.phone.clone(),
            call_sid: Some(snapshot.sid.clone()),
            status: verdict.status,
        });
        Ok(())
    }

    /// Run something against the campaign's database (the results export).
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store())
    }

    /// The campaign's totals, from the database.
    pub fn summary(&self) -> Result<Summary, CampaignError> {
        summary(&self.store(), &self.config)
    }
}

/// Keep the first failure of a finished call task.
fn note(
    failure: &mut Option<CampaignError>,
    done: Result<Result<(), CampaignError>, tokio::task::JoinError>,
) {
    let err = match done {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(e) => CampaignError::Store(StoreError::Data(format!("a call task failed: {e}"))),
    };
    // The command reports the first failure as its one closing line; more would repeat it.
    tracing::debug!(error = %err, "campaign stops dialing");
    failure.get_or_insert(err);
}

/// Whether a machine, not a person, answered.
fn machine(outcome: &Outcome) -> bool {
    outcome
        .answered_by
        .as_deref()
        .is_some_and(|a| a.starts_with("machine") || a == "fax")
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
        FinalStatus::Completed if machine(outcome) => LeadStatus::Voicemail,
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

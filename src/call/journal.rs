//! The calls placed through the call API, live and recent, each with every event it has had,
//! in order. The API reads views and event streams from here; the task that follows a call
//! writes to it. History is bounded: the oldest ended calls are forgotten first.

use super::wire::{CallState, CallView};
use crate::events::{CallEvent, Outcome};
use crate::phone::E164;
use crate::twilio::{AnsweredBy, CallStatus};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Ended calls kept for `GET /api/calls` and late readers of their events.
pub const HISTORY: usize = 500;

/// Why a call cannot be started now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} already has a live call")]
    AlreadyLive(String),
    #[error("{0} calls are live, the most this server places at once")]
    Full(usize),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One call and its events.
pub struct CallRecord {
    to: String,
    created_at: DateTime<Utc>,
    /// Cancelling it hangs the call up.
    cancel: CancellationToken,
    state: Mutex<RecordState>,
    /// How many events there are; readers wait on it.
    count: watch::Sender<usize>,
}

#[derive(Default)]
struct RecordState {
    sid: Option<String>,
    events: Vec<CallEvent>,
    status: Option<CallStatus>,
    answered_by: Option<AnsweredBy>,
    outcome: Option<Outcome>,
}

impl CallRecord {
    fn new(to: &E164, cancel: CancellationToken) -> Self {
        Self {
            to: to.to_string(),
            created_at: Utc::now(),
            cancel,
            state: Mutex::new(RecordState::default()),
            count: watch::Sender::new(0),
        }
    }

    pub fn to(&self) -> &str {
        &self.to
    }

    pub fn sid(&self) -> Option<String> {
        lock(&self.state).sid.clone()
    }

    pub fn is_ended(&self) -> bool {
        lock(&self.state).outcome.is_some()
    }

    /// The token that hangs the call up, for the task that follows it.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Hang the call up (nothing more once it is ending).
    pub fn hang_up(&self) {
        self.cancel.cancel();
    }

    /// Add the call's next event.
    pub fn push(&self, event: CallEvent) {
        let len = {
            let mut s = lock(&self.state);
            if s.outcome.is_some() {
                // Nothing follows `ended`: readers close their streams on it.
                return;
            }
            match &event {
                CallEvent::Created { call_sid, .. } => s.sid = Some(call_sid.clone()),
                CallEvent::Status { status, .. } => s.status = Some(status.clone()),
                CallEvent::AnsweredBy { answered_by, .. } => {
                    s.answered_by = Some(answered_by.clone());
                }
                CallEvent::Ended { outcome } => s.outcome = Some((**outcome).clone()),
                _ => {}
            }
            s.events.push(event);
            s.events.len()
        };
        self.count.send_replace(len);
    }

    /// Events from index `from` on, and whether the call has ended.
    pub fn events_from(&self, from: usize) -> (Vec<CallEvent>, bool) {
        let s = lock(&self.state);
        let batch = s.events.get(from..).map(<[_]>::to_vec).unwrap_or_default();
        (batch, s.outcome.is_some())
    }

    /// Wakes when an event is added.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// The call as the API shows it.
    pub fn view(&self, with_transcript: bool) -> CallView {
        let s = lock(&self.state);
        let outcome = s.outcome.clone();
        let status = match &outcome {
            Some(o) => CallStatus::from(o.status.as_str()),
            None => s.status.clone().unwrap_or(CallStatus::Queued),
        };
        let transcript = with_transcript.then(|| match &outcome {
            Some(o) => o.transcript.clone(),
            None => s
                .events
                .iter()
                .filter_map(|e| match e {
                    CallEvent::Line { line, .. } => Some(line.clone()),
                    _ => None,
                })
                .collect(),
        });
        CallView {
            sid: s.sid.clone().unwrap_or_default(),
            to: self.to.clone(),
            state: if outcome.is_some() {
                CallState::Ended
            } else {
                CallState::Live
            },
            status,
            created_at: Some(self.created_at),
            answered_by: outcome
                .as_ref()
                .and_then(|o| o.answered_by.clone())
                .or_else(|| s.answered_by.clone()),
            duration_secs: outcome.as_ref().and_then(|o| o.duration_secs),
            events: s.events.len(),
            transcript,
            outcome: if with_transcript {
                outcome.map(Box::new)
            } else {
                None
            },
        }
    }
}

/// Live calls (by number, while they are placed and followed) and calls by SID.
#[derive(Default)]
pub struct Journal {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_sid: HashMap<String, Arc<CallRecord>>,
    live: HashMap<String, Arc<CallRecord>>,
    /// Ended calls' SIDs, oldest first.
    ended: VecDeque<String>,
}

impl Journal {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new call to `to`, unless the number has one already or `max_live` are live: this
    /// journal's, or `all_live`, every live call of the process (calls brought in included),
    /// whichever is more.
    pub fn start(
        &self,
        to: &E164,
        max_live: usize,
        all_live: usize,
        cancel: CancellationToken,
    ) -> Result<Arc<CallRecord>, Refusal> {
        let mut inner = lock(&self.inner);
        if inner.live.contains_key(to.as_str()) {
            return Err(Refusal::AlreadyLive(to.to_string()));
        }
        let live = inner.live.len().max(all_live);
        if live >= max_live {
            return Err(Refusal::Full(live));
        }
        let record = Arc::new(CallRecord::new(to, cancel));
        inner.live.insert(to.to_string(), record.clone());
        Ok(record)
    }

    /// Twilio created the call: it can be found by its SID from now on.
    pub fn created(&self, record: &Arc<CallRecord>, sid: &str) {
        lock(&self.inner)
            .by_sid
            .insert(sid.to_string(), record.clone());
    }

    /// The call is over (or was never created): its number is free again, and the oldest
    /// ended calls beyond [`HISTORY`] are forgotten.
    pub fn finished(&self, record: &Arc<CallRecord>) {
        let mut inner = lock(&self.inner);
        if inner
            .live
            .get(record.to())
            .is_some_and(|r| Arc::ptr_eq(r, record))
        {
            inner.live.remove(record.to());
        }
        if let Some(sid) = record.sid() {
            inner.ended.push_back(sid);
            while inner.ended.len() > HISTORY {
                if let Some(old) = inner.ended.pop_front() {
                    inner.by_sid.remove(&old);
                }
            }
        }
    }

    pub fn get(&self, sid: &str) -> Option<Arc<CallRecord>> {
        lock(&self.inner).by_sid.get(sid).cloned()
    }

    /// Calls placed or being placed right now.
    pub fn live_count(&self) -> usize {
        lock(&self.inner).live.len()
    }

    /// Live calls, then ended ones, newest first.
    pub fn list(&self) -> Vec<Arc<CallRecord>> {
        let inner = lock(&self.inner);
        let mut calls: Vec<Arc<CallRecord>> = inner
            .by_sid
            .values()
            .filter(|r| !r.is_ended())
            .cloned()
            .collect();
        calls.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        calls.extend(
            inner
                .ended
                .iter()
                .rev()
                .filter_map(|sid| inner.by_sid.get(sid).cloned()),
        );
        calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EndedBy, FinalStatus};

    fn number(n: &str) -> E164 {
        E164::parse(n).unwrap()
    }

    fn ended(to: &str) -> CallEvent {
        CallEvent::Ended {
            outcome: Box::new(Outcome::sample(to, FinalStatus::Completed, EndedBy::Agent)),
        }
    }

    #[test]
    fn one_live_call_per_number_and_at_most_the_limit() {
        let j = Journal::new();
        let a = j
            .start(&number("+12025550100"), 2, 0, CancellationToken::new())
            .unwrap();
        assert_eq!(
            j.start(&number("+12025550100"), 2, 0, CancellationToken::new())
                .err(),
            Some(Refusal::AlreadyLive("+12025550100".into()))
        );
        j.start(&number("+12025550101"), 2, 0, CancellationToken::new())
            .unwrap();
        assert_eq!(
            j.start(&number("+12025550102"), 2, 0, CancellationToken::new())
                .err(),
            Some(Refusal::Full(2))
        );
        j.finished(&a);
        assert_eq!(j.live_count(), 1);
        // Calls brought in count against the same limit.
        assert_eq!(
            j.start(&number("+12025550103"), 2, 2, CancellationToken::new())
                .err(),
            Some(Refusal::Full(2))
        );
        j.start(&number("+12025550100"), 2, 0, CancellationToken::new())
            .unwrap();
    }

    #[test]
    fn events_are_kept_in_order_and_nothing_follows_the_end() {
        let j = Journal::new();
        let r = j
            .start(&number("+12025550100"), 5, 0, CancellationToken::new())
            .unwrap();
        r.push(CallEvent::Dialing {
            to: "+12025550100".into(),
        });
        r.push(CallEvent::Created {
            to: "+12025550100".into(),
            call_sid: "CA1".into(),
            direction: crate::events::Direction::Outbound,
        });
        j.created(&r, "CA1");
        assert_eq!(r.view(false).state, CallState::Live);
        assert_eq!(r.view(false).status, CallStatus::Queued);
        r.push(ended("+12025550100"));
        r.push(CallEvent::Dialing {
            to: "+12025550100".into(),
        });
        let (all, over) = r.events_from(0);
        assert!(over);
        assert_eq!(all.len(), 3);
        assert_eq!(r.events_from(2).0.len(), 1);
        assert!(r.events_from(9).0.is_empty());
        let view = j.get("CA1").unwrap().view(true);
        assert_eq!(
            (view.state, view.status),
            (CallState::Ended, CallStatus::Completed)
        );
        assert!(view.outcome.is_some());
    }

    #[test]
    fn history_forgets_the_oldest_ended_calls() {
        let j = Journal::new();
        for i in 0..HISTORY + 3 {
            let r = j
                .start(&number("+12025550100"), 1, 0, CancellationToken::new())
                .unwrap();
            let sid = format!("CA{i}");
            r.push(CallEvent::Created {
                to: "+12025550100".into(),
                call_sid: sid.clone(),
                direction: crate::events::Direction::Outbound,
            });
            j.created(&r, &sid);
            r.push(ended("+12025550100"));
            j.finished(&r);
        }
        assert!(j.get("CA0").is_none() && j.get("CA2").is_none());
        assert!(j.get("CA3").is_some());
        let list = j.list();
        assert_eq!(list.len(), HISTORY);
        assert_eq!(
            list[0].sid().as_deref(),
            Some(format!("CA{}", HISTORY + 2).as_str())
        );
    }
}

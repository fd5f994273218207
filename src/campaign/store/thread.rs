//! The campaign database's own thread, and the async handle the runner uses to reach it.
//!
//! The one connection lives on this thread, so no runtime worker ever waits for SQLite or for a
//! disk sync. Requests run in the order they were sent; writes run inside one open transaction
//! that is committed:
//! - at once after a *durable* write (an attempt's start, its call SID, its end, a voided
//!   attempt), whose caller is answered only once it is committed. Every request already queued
//!   behind it runs first and shares the commit: many calls ending together cost one sync.
//! - within [`LAZY_COMMIT`] of the first *lazy* write of the batch (deferrals to a calling
//!   window, skips, transcript lines), whose sender does not wait. A crash can lose only these:
//!   the next run decides a deferral or a skip again the same way, and of a conversation it
//!   loses at most the last [`LAZY_COMMIT`].
//!
//! Reads see every request sent before them, committed or not.

use super::{InFlight, LeadRow, Store, StoreError, Verdict};
use crate::campaign::LeadStatus;
use crate::events::{Outcome, TranscriptLine, TwilioRecording};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The longest a lazy write waits to be committed with others.
pub const LAZY_COMMIT: Duration = Duration::from_millis(200);

/// Writes per transaction at most, so a durable write queued behind a flood of lazy ones (a
/// whole campaign deferred at once) waits for a bounded share of them.
const MAX_BATCH: usize = 10_000;

/// Told whether the batch it ran in was committed; answers its caller.
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type LazyWrite = Box<dyn FnOnce(&mut Store) -> Result<(), StoreError> + Send>;

enum Request {
    Read(Box<dyn FnOnce(&Store) + Send>),
    Lazy {
        write: LazyWrite,
        /// For the log, should it fail.
        what: &'static str,
    },
    Durable(Box<dyn FnOnce(&mut Store) -> Completion + Send>),
}

/// Runs on the thread: the connection and the batch it has open.
struct Writer {
    store: Store,
    /// When the open transaction began; `None` when none is open.
    open_since: Option<Instant>,
    /// Durable writes of the open transaction, waiting for its commit.
    waiting: Vec<Completion>,
    writes: usize,
    commits: Arc<AtomicU64>,
}

impl Writer {
    fn serve(mut self, requests: Receiver<Request>) {
        loop {
            let request = match self.open_since {
                None => match requests.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
                Some(since) => {
                    let left = (since + LAZY_COMMIT).saturating_duration_since(Instant::now());
                    match requests.recv_timeout(left) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout) => {
                            self.commit();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            self.run(request);
            while self.writes < MAX_BATCH {
                match requests.try_recv() {
                    Ok(r) => self.run(r),
                    Err(_) => break,
                }
            }
            let lazy_due = self
                .open_since
                .is_some_and(|since| since.elapsed() >= LAZY_COMMIT);
            if !self.waiting.is_empty() || lazy_due || self.writes >= MAX_BATCH {
                self.commit();
            }
        }
        // Every handle is gone: what is still uncommitted is saved before the database closes.
        self.commit();
    }

    fn run(&mut self, request: Request) {
        match request {
            Request::Read(read) => read(&self.store),
            Request::Lazy { write, what } => {
                self.begin();
                if let Err(e) = write(&mut self.store) {
                    tracing::error!(error = %e, "campaign database: {what} not saved");
                }
                self.wrote();
            }
            Request::Durable(write) => {
                self.begin();
                let done = write(&mut self.store);
                self.waiting.push(done);
                self.wrote();
            }
        }
    }

    fn begin(&mut self) {
        if self.open_since.is_some() {
            return;
        }
        match self.store.conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => self.open_since = Some(Instant::now()),
            // Each write then commits on its own, as the store does outside this thread.
            Err(e) => tracing::error!(error = %e, "campaign database: cannot begin a batch"),
        }
    }

    fn wrote(&mut self) {
        self.writes += 1;
        if self.open_since.is_some() && self.store.conn.is_autocommit() {
            // SQLite rolled the whole transaction back (an I/O error, a full disk): the
            // batch's earlier writes are gone too, and their callers must hear it.
            self.open_since = None;
            self.fail("the batch was rolled back by an error".into());
        }
    }

    fn commit(&mut self) {
        let Some(_) = self.open_since.take() else {
            self.answer(Ok(()));
            return;
        };
        match self.store.conn.execute_batch("COMMIT") {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.answer(Ok(()));
            }
            Err(e) => {
                let _ = self.store.conn.execute_batch("ROLLBACK");
                self.fail(e.to_string());
            }
        }
    }

    fn fail(&mut self, why: String) {
        tracing::error!(writes = self.writes, error = %why, "campaign database: a batch of writes was not saved");
        self.answer(Err(why));
    }

    fn answer(&mut self, committed: Result<(), String>) {
        self.writes = 0;
        for done in self.waiting.drain(..) {
            done(committed.clone().map_err(StoreError::Commit));
        }
    }
}

/// The campaign database, on its own thread. Dropping the handle commits what is pending and
/// closes the database (releasing its lock) before it returns.
pub struct StoreHandle {
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl StoreHandle {
    /// Move `store` to a thread of its own.
    pub fn spawn(store: Store) -> StoreHandle {
        let (tx, rx) = std::sync::mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            store,
            open_since: None,
            waiting: Vec::new(),
            writes: 0,
            commits: commits.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("campaign-db".into())
            .spawn(move || writer.serve(rx))
            // As `std::thread::spawn` does: a process that cannot start a thread cannot go on.
            .expect("cannot start the campaign database's thread");
        StoreHandle {
            requests: Some(tx),
            thread: Some(thread),
            commits,
        }
    }

    /// Transactions committed so far (a batch of writes is one).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.requests
            .as_ref()
            .ok_or(StoreError::Stopped)?
            .send(request)
            .map_err(|_| StoreError::Stopped)
    }

    async fn answer<T: Send + 'static>(reply: oneshot::Receiver<T>) -> Result<T, StoreError> {
        // Waited for on the blocking pool rather than awaited: a runtime whose clock is paused
        // (the runner's tests) then sees work under way and does not jump its clock past a
        // call's timers while the database answers.
        tokio::task::spawn_blocking(move || reply.blocking_recv())
            .await
            .map_err(|_| StoreError::Stopped)?
            .map_err(|_| StoreError::Stopped)
    }

    /// Run `read` on the database's thread. It sees every write sent before it.
    pub async fn read<T, E>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Read(Box::new(move |store| {
            let _ = tx.send(read(store));
        })))?;
        Self::answer(rx).await?
    }

    /// Run `write` and answer once it is committed.
    async fn durable<T: Send + 'static>(
        &self,
        write: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Durable(Box::new(move |store| {
            let result = write(store);
            Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(result.and_then(|v| committed.map(|()| v)));
            })
        })))?;
        Self::answer(rx).await?
    }

    fn lazy(
        &self,
        what: &'static str,
        write: impl FnOnce(&mut Store) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.send(Request::Lazy {
            write: Box::new(write),
            what,
        })
    }

    pub async fn counts(&self) -> Result<(u64, u64), StoreError> {
        self.read(Store::counts).await
    }

    pub async fn in_flight(&self) -> Result<Vec<InFlight>, StoreError> {
        self.read(Store::in_flight).await
    }

    /// Up to `limit` leads that may be dialed at `now`, earliest first.
    pub async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<LeadRow>, StoreError> {
        self.read(move |s| s.due(now, limit, &[])).await
    }

    pub async fn next_due(&self) -> Result<Option<(DateTime<Utc>, u64)>, StoreError> {
        self.read(Store::next_due).await
    }

    pub async fn lead(&self, id: i64) -> Result<LeadRow, StoreError> {
        self.read(move |s| s.lead(id)).await
    }

    pub async fn call_sids(&self, lead: i64) -> Result<Vec<String>, StoreError> {
        self.read(move |s| s.call_sids(lead)).await
    }

    /// Durable: committed before it returns, so a call placed after it is never placed twice.
    pub async fn begin_attempt(
        &self,
        lead: i64,
        now: DateTime<Utc>,
    ) -> Result<(i64, u32), StoreError> {
        self.durable(move |s| s.begin_attempt(lead, now)).await
    }

    /// Durable: from here on a crash is settled by the SID.
    pub async fn set_call_sid(&self, attempt: i64, sid: String) -> Result<(), StoreError> {
        self.durable(move |s| s.set_call_sid(attempt, &sid)).await
    }

    pub async fn void_attempt(&self, attempt: i64) -> Result<(), StoreError> {
        self.durable(move |s| s.void_attempt(attempt)).await
    }

    /// Durable: an outcome is saved before anything acts on it.
    pub async fn finish_attempt(
        &self,
        attempt: i64,
        outcome: Outcome,
        verdict: Verdict,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.durable(move |s| s.finish_attempt(attempt, &outcome, &verdict, now))
            .await
    }

    /// Lazy: a lost deferral is made again by the next run.
    pub fn defer(&self, lead: i64, until: DateTime<Utc>) -> Result<(), StoreError> {
        self.lazy("a deferral", move |s| s.defer(lead, until))
    }

    /// Lazy: a lost skip is decided again, the same way, by the next run.
    pub fn skip(
        &self,
        lead: i64,
        status: LeadStatus,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let reason = reason.to_string();
        self.lazy("a skipped lead", move |s| {
            s.skip(lead, status, &reason, now)
        })
    }

    /// Lazy: Twilio's word on a recording that came after its attempt was saved. A crash may
    /// lose it; the recording stays at Twilio, findable by the call's SID.
    pub fn set_recording(
        &self,
        call_sid: String,
        recording: TwilioRecording,
    ) -> Result<(), StoreError> {
        self.lazy("a recording's status", move |s| {
            s.set_recording(&call_sid, &recording)
        })
    }

    /// Lazy: a crash loses at most the last [`LAZY_COMMIT`] of a conversation.
    pub fn add_line(&self, attempt: i64, line: TranscriptLine) -> Result<(), StoreError> {
        self.lazy("a transcript line", move |s| s.add_line(attempt, &line))
    }
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; joining it means the database is closed
        // (and its lock released) once the handle is gone, so the next opener finds it free.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::leads::Lead;
    use crate::events::{EndedBy, FinalStatus, Speaker};
    use crate::phone::E164;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn store(dir: &std::path::Path, n: usize) -> Store {
        let mut store = Store::open(&dir.join("c.db")).unwrap();
        let leads: Vec<Lead> = (0..n)
            .map(|i| Lead {
                line: i as u64 + 2,
                phone: E164::parse(&format!("+1202555{:04}", 2000 + i)).unwrap(),
                timezone: None,
                vars: Vec::new(),
            })
            .collect();
        store.import(&leads, t(0)).unwrap();
        store
    }

    fn line(text: &str) -> TranscriptLine {
        TranscriptLine {
            speaker: Speaker::Agent,
            text: text.into(),
            at_ms: 0,
            interrupted: false,
            latency_ms: None,
        }
    }

    #[tokio::test]
    async fn lazy_writes_share_a_commit_and_reads_see_them_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::spawn(store(dir.path(), 500));
        let ids: Vec<i64> = handle
            .due(t(0), 500)
            .await
            .unwrap()
            .iter()
            .map(|l| l.id)
            .collect();
        for &id in &ids {
            handle.defer(id, t(3600)).unwrap();
        }
        assert!(handle.due(t(0), 10).await.unwrap().is_empty());
        assert_eq!(handle.next_due().await.unwrap(), Some((t(3600), 500)));
        // A durable write commits what was queued before it, in the same transaction.
        handle.begin_attempt(ids[0], t(3600)).await.unwrap();
        assert!(handle.commits() <= 2, "{} commits", handle.commits());
    }

    #[tokio::test]
    async fn a_durable_write_is_saved_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::spawn(store(dir.path(), 1));
        let id = handle.due(t(0), 1).await.unwrap()[0].id;
        let (attempt, _) = handle.begin_attempt(id, t(1)).await.unwrap();
        assert!(handle.commits() >= 1);
        // Refused, and the refusal does not undo what the batch holds.
        assert!(handle.begin_attempt(id, t(2)).await.is_err());
        handle.add_line(attempt, line("Hello")).unwrap();
        drop(handle);
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        assert_eq!(store.in_flight().unwrap().len(), 1);
        assert_eq!(store.lines(attempt).unwrap(), [line("Hello")]);
    }

    #[tokio::test]
    async fn lines_are_committed_within_the_lazy_bound_without_a_durable_write() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::spawn(store(dir.path(), 1));
        let id = handle.due(t(0), 1).await.unwrap()[0].id;
        let (attempt, _) = handle.begin_attempt(id, t(1)).await.unwrap();
        let before = handle.commits();
        handle.add_line(attempt, line("Hello")).unwrap();
        handle.add_line(attempt, line("Hi")).unwrap();
        tokio::time::sleep(LAZY_COMMIT * 3).await;
        assert_eq!(handle.commits(), before + 1);
        let outcome = Outcome::sample("+12022002000", FinalStatus::Completed, EndedBy::Operator);
        let verdict = Verdict {
            status: LeadStatus::Completed,
            next_at: None,
            reason: String::new(),
        };
        handle
            .finish_attempt(attempt, outcome, verdict, t(2))
            .await
            .unwrap();
        let records = handle.read(Store::transcripts).await.unwrap();
        assert_eq!(records[0].transcript, [line("Hello"), line("Hi")]);
    }
}

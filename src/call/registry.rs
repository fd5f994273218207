//! Calls this process placed, by their one-time token. Twilio's callbacks and the Media Stream
//! reach the server, which finds the call here and hands the signal to its task. A stream that
//! presents no known token, or a token already used, belongs to no call of ours.

use crate::twilio::media::StartInfo;
use crate::twilio::{AnsweredBy, CallStatus};
use crate::ws::{FrameSink, FrameStream};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// A status callback, reduced to what the call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub call_sid: String,
    /// `CallStatus`; a callback without one reads as `Other("")`, which moves the call nowhere.
    pub status: CallStatus,
    /// `SequenceNumber`: callbacks arrive in no guaranteed order.
    pub sequence: Option<u32>,
    /// `CallDuration`, on the final callback.
    pub duration_secs: Option<u64>,
    pub answered_by: Option<AnsweredBy>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// An accepted Media Stream: its `start` metadata and both halves of the socket.
pub struct IncomingStream {
    pub start: StartInfo,
    pub stream: FrameStream,
    pub sink: FrameSink,
}

impl std::fmt::Debug for IncomingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingStream")
            .field("stream_sid", &self.start.stream_sid)
            .finish_non_exhaustive()
    }
}

/// Twilio's `<Dial action>` request after a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialResult {
    /// `DialCallStatus`: `completed`/`answered` when the person picked up, else `no-answer`,
    /// `busy`, `failed`, `canceled`.
    pub status: String,
    /// `DialCallDuration`, seconds.
    pub duration_secs: Option<u64>,
}

#[derive(Debug)]
pub enum CallSignal {
    Status(StatusUpdate),
    /// Asynchronous answering-machine detection's verdict.
    AnsweredBy(AnsweredBy),
    Stream(IncomingStream),
    /// How a transfer went.
    Dial(DialResult),
}

struct Entry {
    tx: mpsc::UnboundedSender<CallSignal>,
    stream_claimed: bool,
}

/// Live calls by token. A std mutex: it is never held across an await.
#[derive(Default)]
pub struct Registry {
    calls: Mutex<HashMap<String, Entry>>,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    #[error("no call of ours has this token")]
    UnknownToken,
    #[error("this call's stream token was already used")]
    AlreadyUsed,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a call; returns its token (unguessable, 128 bits) and its signal receiver.
    pub fn register(&self) -> (String, mpsc::UnboundedReceiver<CallSignal>) {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(
            token.clone(),
            Entry {
                tx,
                stream_claimed: false,
            },
        );
        (token, rx)
    }

    /// Deliver a callback to its call; false when the call is unknown or over.
    pub fn deliver(&self, token: &str, signal: CallSignal) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|e| e.tx.send(signal).is_ok())
    }

    /// Hand a stream to its call. Each token opens one stream only.
    pub fn attach_stream(&self, token: &str, stream: IncomingStream) -> Result<(), StreamRefused> {
        let mut calls = self.lock();
        let entry = calls.get_mut(token).ok_or(StreamRefused::UnknownToken)?;
        if entry.stream_claimed {
            return Err(StreamRefused::AlreadyUsed);
        }
        entry.stream_claimed = true;
        entry
            .tx
            .send(CallSignal::Stream(stream))
            .map_err(|_| StreamRefused::UnknownToken)
    }

    pub fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_unguessable_length() {
        let r = Registry::new();
        let (a, _ra) = r.register();
        let (b, _rb) = r.register();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn delivery_reaches_only_known_calls() {
        let r = Registry::new();
        let (t, mut rx) = r.register();
        assert!(r.deliver(&t, CallSignal::AnsweredBy("human".into())));
        assert!(matches!(rx.try_recv(), Ok(CallSignal::AnsweredBy(a)) if a == AnsweredBy::Human));
        assert!(!r.deliver("nope", CallSignal::AnsweredBy("human".into())));
        r.remove(&t);
        assert!(!r.deliver(&t, CallSignal::AnsweredBy("human".into())));
        assert!(r.is_empty());
    }
}

//! Live calls of this process, by their one-time token: the calls it placed, and the inbound
//! calls it answered (also found by their CallSid, since the status callback of an inbound call
//! goes to the number's one URL, which carries no token). Twilio's callbacks and the Media
//! Stream reach the server, which finds the call here and hands the signal to its task. A
//! stream that presents no known token, or a token already used, belongs to no call of ours.

use crate::recording::callbacks::RecordingTokens;
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
    /// The runtime the socket is registered with: the conversation runs there, so the call's
    /// frames are handled on the thread that reads them.
    pub home: tokio::runtime::Handle,
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

/// What reaches a call's follow loop. The large variants are boxed: every call's channel
/// holds room for 32 signals from the start, which unboxed was 5.8 KiB a call (BENCHMARKS.md).
#[derive(Debug)]
pub enum CallSignal {
    Status(Box<StatusUpdate>),
    /// Asynchronous answering-machine detection's verdict.
    AnsweredBy(AnsweredBy),
    Stream(Box<IncomingStream>),
    /// How a transfer went.
    Dial(DialResult),
}

struct Entry {
    tx: mpsc::UnboundedSender<CallSignal>,
    stream_claimed: bool,
    /// An inbound call's CallSid, indexed in `Calls::by_sid`.
    call_sid: Option<String>,
}

#[derive(Default)]
struct Calls {
    by_token: HashMap<String, Entry>,
    /// Inbound calls: CallSid → token.
    by_sid: HashMap<String, String>,
}

/// Live calls by token. A std mutex: it is never held across an await.
#[derive(Default)]
pub struct Registry {
    calls: Mutex<Calls>,
    /// Recordings of calls placed here, by their own token (they outlive the call's).
    recordings: RecordingTokens,
}

/// Why an inbound call was not registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundRefused {
    /// As many calls as allowed are live.
    Full,
    /// This CallSid is live already.
    AlreadyLive {
        /// The live call's token.
        token: String,
        /// Whether its Media Stream has started.
        streaming: bool,
    },
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
        let token = new_token();
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().by_token.insert(
            token.clone(),
            Entry {
                tx,
                stream_claimed: false,
                call_sid: None,
            },
        );
        (token, rx)
    }

    /// Register an inbound call by its CallSid, unless `max_live` calls (both ways) are live
    /// already: checked under the lock, so a burst of calls cannot overshoot. A CallSid that
    /// is live already (Twilio asked for the call's TwiML again) is not registered twice.
    pub fn register_inbound(
        &self,
        call_sid: &str,
        max_live: usize,
    ) -> Result<(String, mpsc::UnboundedReceiver<CallSignal>), InboundRefused> {
        let mut calls = self.lock();
        if let Some(token) = calls.by_sid.get(call_sid) {
            let streaming = calls.by_token.get(token).is_some_and(|e| e.stream_claimed);
            return Err(InboundRefused::AlreadyLive {
                token: token.clone(),
                streaming,
            });
        }
        if calls.by_token.len() >= max_live {
            return Err(InboundRefused::Full);
        }
        let token = new_token();
        let (tx, rx) = mpsc::unbounded_channel();
        calls.by_token.insert(
            token.clone(),
            Entry {
                tx,
                stream_claimed: false,
                call_sid: Some(call_sid.to_string()),
            },
        );
        calls.by_sid.insert(call_sid.to_string(), token.clone());
        Ok((token, rx))
    }

    /// Deliver a callback to its call; false when the call is unknown or over.
    pub fn deliver(&self, token: &str, signal: CallSignal) -> bool {
        self.lock()
            .by_token
            .get(token)
            .is_some_and(|e| e.tx.send(signal).is_ok())
    }

    /// Deliver a callback to the inbound call with this CallSid; false when there is none.
    pub fn deliver_by_sid(&self, call_sid: &str, signal: CallSignal) -> bool {
        let calls = self.lock();
        calls
            .by_sid
            .get(call_sid)
            .and_then(|token| calls.by_token.get(token))
            .is_some_and(|e| e.tx.send(signal).is_ok())
    }

    /// Hand a stream to its call. Each token opens one stream only.
    pub fn attach_stream(&self, token: &str, stream: IncomingStream) -> Result<(), StreamRefused> {
        let mut calls = self.lock();
        let entry = calls
            .by_token
            .get_mut(token)
            .ok_or(StreamRefused::UnknownToken)?;
        if entry.stream_claimed {
            return Err(StreamRefused::AlreadyUsed);
        }
        entry.stream_claimed = true;
        entry
            .tx
            .send(CallSignal::Stream(Box::new(stream)))
            .map_err(|_| StreamRefused::UnknownToken)
    }

    /// The recording tokens, shared by the server (which delivers callbacks) and the calls.
    pub fn recordings(&self) -> &RecordingTokens {
        &self.recordings
    }

    pub fn remove(&self, token: &str) {
        let mut calls = self.lock();
        if let Some(sid) = calls.by_token.remove(token).and_then(|e| e.call_sid) {
            calls.by_sid.remove(&sid);
        }
    }

    /// Live calls, both ways.
    pub fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A one-time token: 128 random bits in hex, unguessable.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    #[test]
    fn inbound_calls_are_found_by_sid_until_removed_and_never_registered_twice() {
        let r = Registry::new();
        let (t, mut rx) = r.register_inbound("CA1", 10).unwrap();
        assert_eq!(
            r.register_inbound("CA1", 10).unwrap_err(),
            InboundRefused::AlreadyLive {
                token: t.clone(),
                streaming: false
            }
        );
        assert_eq!(r.len(), 1);
        assert!(r.deliver_by_sid("CA1", CallSignal::AnsweredBy("human".into())));
        assert!(rx.try_recv().is_ok());
        assert!(!r.deliver_by_sid("CA2", CallSignal::AnsweredBy("human".into())));
        r.remove(&t);
        assert!(!r.deliver_by_sid("CA1", CallSignal::AnsweredBy("human".into())));
        assert!(r.is_empty());
        assert!(
            r.register_inbound("CA1", 10).is_ok(),
            "a removed sid is free again"
        );
    }

    #[test]
    fn inbound_calls_stop_at_the_limit_counting_both_ways() {
        let r = Registry::new();
        let (_out, _rx) = r.register();
        let _a = r.register_inbound("CA1", 2).unwrap();
        assert_eq!(
            r.register_inbound("CA2", 2).unwrap_err(),
            InboundRefused::Full
        );
    }

    #[test]
    fn outbound_tokens_are_not_reachable_by_sid() {
        let r = Registry::new();
        let (_t, _rx) = r.register();
        assert!(!r.deliver_by_sid("", CallSignal::AnsweredBy("human".into())));
    }
}

//! Twilio's recording status callbacks (`RecordingStatusCallback`), routed to the call that
//! asked for the recording.
//!
//! Twilio sends `in-progress` when the recording starts and `completed` (or `absent`) only
//! after the call has ended, sometimes well after. So a recording has a token of its own,
//! separate from the call's one-time token (which is gone once the call is over): while the
//! call is followed, its updates go to the call's task; once the call has stopped waiting,
//! they go to the call's late hook (a campaign updates the stored attempt), until Twilio has
//! said its last word or [`KEEP_AFTER_CALL`] has passed.

use crate::events::TwilioRecording;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a recording token is honoured after its call stopped waiting: Twilio finishes a
/// recording seconds after the call in practice; this leaves room for a slow day.
pub const KEEP_AFTER_CALL: Duration = Duration::from_secs(3600);

/// Called with the call's SID and Twilio's word on its recording, when that arrives after the
/// call's outcome was reported.
pub type LateRecording = Arc<dyn Fn(&str, TwilioRecording) + Send + Sync>;

/// A recording status callback, read from its form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingUpdate {
    pub call_sid: String,
    pub recording: TwilioRecording,
}

impl RecordingUpdate {
    /// The documented fields (`RecordingSid`, `RecordingStatus`, `RecordingUrl`,
    /// `RecordingDuration`, `RecordingChannels`, `CallSid`); `None` without a SID or status.
    pub fn from_form(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let sid = get("RecordingSid").filter(|s| !s.is_empty())?;
        let status = get("RecordingStatus").filter(|s| !s.is_empty())?;
        Some(Self {
            call_sid: get("CallSid").unwrap_or_default(),
            recording: TwilioRecording {
                sid,
                status,
                url: get("RecordingUrl").filter(|u| !u.is_empty()),
                duration_secs: get("RecordingDuration").and_then(|d| d.parse().ok()),
                channels: get("RecordingChannels").and_then(|c| c.parse().ok()),
            },
        })
    }
}

struct Entry {
    /// The call's task, while it follows the call.
    call: Option<mpsc::UnboundedSender<TwilioRecording>>,
    late: Option<LateRecording>,
    /// Set when the call stopped waiting.
    forget_at: Option<Instant>,
}

/// Recording tokens of calls placed by this process. A std mutex: never held across an await,
/// nor while a late hook runs.
#[derive(Default)]
pub struct RecordingTokens {
    entries: Mutex<HashMap<String, Entry>>,
}

/// What became of a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// To the call that is still being followed.
    ToCall,
    /// To the call's late hook.
    Late,
    /// The token is known but nobody listens any more (a single call's process has reported).
    Dropped,
    /// No recording of ours has this token (or it was forgotten).
    Unknown,
}

impl RecordingTokens {
    /// A new token (128 bits, unguessable) and the receiver of its updates.
    pub fn register(
        &self,
        late: Option<LateRecording>,
    ) -> (String, mpsc::UnboundedReceiver<TwilioRecording>) {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut entries = self.lock();
        let now = Instant::now();
        entries.retain(|_, e| e.forget_at.is_none_or(|at| at > now));
        entries.insert(
            token.clone(),
            Entry {
                call: Some(tx),
                late,
                forget_at: None,
            },
        );
        (token, rx)
    }

    /// Hand an update to whoever listens for this token.
    pub fn deliver(&self, token: &str, update: RecordingUpdate) -> Delivered {
        let last_word = update.recording.is_final();
        let late = {
            let mut entries = self.lock();
            let Some(entry) = entries.get_mut(token) else {
                return Delivered::Unknown;
            };
            if entry.forget_at.is_some_and(|at| at <= Instant::now()) {
                entries.remove(token);
                return Delivered::Unknown;
            }
            let to_call = entry
                .call
                .as_ref()
                .is_some_and(|tx| tx.send(update.recording.clone()).is_ok());
            let late = if to_call { None } else { entry.late.clone() };
            if last_word && !to_call {
                entries.remove(token);
            }
            if to_call {
                return Delivered::ToCall;
            }
            late
        };
        match late {
            Some(hook) => {
                hook(&update.call_sid, update.recording);
                Delivered::Late
            }
            None => Delivered::Dropped,
        }
    }

    /// The call has reported its outcome: later updates go to its late hook, for a while.
    pub fn call_over(&self, token: &str) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(token) {
            entry.call = None;
            entry.forget_at = Some(Instant::now() + KEEP_AFTER_CALL);
            if entry.late.is_none() {
                entries.remove(token);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Single inserts and removes cannot leave the map inconsistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(status: &str) -> RecordingUpdate {
        RecordingUpdate {
            call_sid: "CA1".into(),
            recording: TwilioRecording {
                sid: "RE1".into(),
                status: status.into(),
                url: Some("https://api.twilio.com/rec/RE1".into()),
                duration_secs: Some(12),
                channels: Some(2),
            },
        }
    }

    #[test]
    fn the_form_is_read_as_documented() {
        let form = [
            ("CallSid", "CA9"),
            ("RecordingSid", "RE9"),
            ("RecordingStatus", "completed"),
            ("RecordingUrl", "https://x/RE9"),
            ("RecordingDuration", "31"),
            ("RecordingChannels", "2"),
        ];
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let u = RecordingUpdate::from_form(get).unwrap();
        assert_eq!(u.call_sid, "CA9");
        assert_eq!(u.recording.sid, "RE9");
        assert!(u.recording.is_final());
        assert_eq!(u.recording.duration_secs, Some(31));
        assert_eq!(u.recording.channels, Some(2));
        assert!(
            RecordingUpdate::from_form(|k| (k == "RecordingSid").then(|| "RE".into())).is_none()
        );
    }

    #[test]
    fn updates_reach_the_call_then_its_late_hook_then_nobody() {
        let tokens = RecordingTokens::default();
        let late: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let seen = late.clone();
        let hook: LateRecording = Arc::new(move |sid: &str, r: TwilioRecording| {
            seen.lock().unwrap().push((sid.to_string(), r.status));
        });
        let (token, mut rx) = tokens.register(Some(hook));
        assert_eq!(
            tokens.deliver(&token, update("in-progress")),
            Delivered::ToCall
        );
        assert_eq!(rx.try_recv().unwrap().status, "in-progress");
        // The call reported its outcome and stopped waiting; Twilio's `completed` comes later.
        drop(rx);
        tokens.call_over(&token);
        assert_eq!(tokens.deliver(&token, update("completed")), Delivered::Late);
        assert_eq!(
            *late.lock().unwrap(),
            [("CA1".to_string(), "completed".to_string())]
        );
        // That was Twilio's last word: the token is forgotten.
        assert_eq!(
            tokens.deliver(&token, update("completed")),
            Delivered::Unknown
        );
        assert!(tokens.is_empty());
        assert_eq!(
            tokens.deliver("nope", update("completed")),
            Delivered::Unknown
        );
    }

    #[test]
    fn a_call_without_a_late_hook_forgets_its_token_when_it_ends() {
        let tokens = RecordingTokens::default();
        let (token, rx) = tokens.register(None);
        drop(rx);
        tokens.call_over(&token);
        assert!(tokens.is_empty());
        assert_eq!(
            tokens.deliver(&token, update("completed")),
            Delivered::Unknown
        );
    }
}

//! Answering machines: what asynchronous answering-machine detection's verdicts mean for the
//! conversation. Pure decisions; the bridge carries them out.
//!
//! - `human`, `unknown`: talk as to a person (nothing changes).
//! - `fax`: hang up at once.
//! - a machine with no voicemail message configured: hang up at once.
//! - `machine_start` (the machine's greeting is playing): the agent goes quiet. Its audio is
//!   no longer sent to Twilio, what Twilio has buffered is cleared, and the greeting is not
//!   fed to the agent (it would answer it). The agent's own greeting may have started before
//!   the verdict, since the stream starts on answer and detection takes seconds: whatever of
//!   it has not played yet is dropped, never resumed.
//! - `machine_end_beep`, `machine_end_silence`, `machine_end_other`: the greeting is over.
//!   Twilio's buffer is cleared and the agent is asked (`reply.create`) to speak the message,
//!   once. Only that reply's audio goes out; when it is done a mark follows it, and its echo
//!   (the message has played) ends the call.

use crate::twilio::AnsweredBy;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Where a bridge hears the call's verdicts: the call service forwards each one as it
/// arrives (one taken before the stream started included). Taken once, when the bridge
/// starts; a bridge without one never hears a verdict.
#[derive(Debug, Default)]
pub struct Verdicts(Mutex<Option<mpsc::UnboundedReceiver<AnsweredBy>>>);

impl Verdicts {
    pub fn new(rx: mpsc::UnboundedReceiver<AnsweredBy>) -> Self {
        Self(Mutex::new(Some(rx)))
    }

    /// No verdicts will come (no detection, or a test that needs none).
    pub fn none() -> Self {
        Self::default()
    }

    pub(crate) fn take(&self) -> Option<mpsc::UnboundedReceiver<AnsweredBy>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The mark sent after the voicemail message: its echo means the message was recorded.
pub const VOICEMAIL_MARK: &str = "dialer-voicemail";

/// How a call answered by a machine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineEnd {
    /// The message was spoken after the greeting and played to its end.
    VoicemailLeft,
    /// A machine, and no message was left (none configured, or it could not be).
    Voicemail,
    /// A fax machine.
    Fax,
}

impl serde::Serialize for MachineEnd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for MachineEnd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = String::deserialize(d)?;
        [Self::VoicemailLeft, Self::Voicemail, Self::Fax]
            .into_iter()
            .find(|m| m.as_str() == word)
            .ok_or_else(|| {
                serde::de::Error::unknown_variant(&word, &["voicemail-left", "voicemail", "fax"])
            })
    }
}

impl MachineEnd {
    /// The outcome's words (`voicemail-left`, `voicemail`, `fax`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VoicemailLeft => "voicemail-left",
            Self::Voicemail => "voicemail",
            Self::Fax => "fax",
        }
    }

    /// Why the call ended, in words.
    pub fn reason(self) -> &'static str {
        match self {
            Self::VoicemailLeft => "left a voicemail message after the beep",
            Self::Voicemail => "an answering machine answered; no message left",
            Self::Fax => "a fax machine answered",
        }
    }
}

/// The instructions that have the agent speak the message, in its own voice.
pub(crate) fn instructions(message: &str) -> String {
    format!(
        "You have reached an answering machine and its beep has sounded: you are being recorded now. Say exactly the following voicemail message, word for word, once, and nothing else: \"{}\"",
        message.replace('"', "'")
    )
}

/// The words a message was given in (the inverse of [`instructions`]), for the simulated
/// agent, which obeys such instructions as a model would.
pub fn message_in(instructions: &str) -> Option<&str> {
    let (_, rest) = instructions.split_once("word for word, once, and nothing else: \"")?;
    rest.strip_suffix('"')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Talking as to a person (no verdict, or a human one).
    Open,
    /// A machine's greeting is playing: the agent is muted.
    Muted,
    /// The message was asked for (`create_sent`) and its reply has `started`.
    Leaving { create_sent: bool, started: bool },
    /// The message's reply is done and its mark sent.
    Left,
}

/// What the bridge does for a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Actions {
    /// Send `clear`: drop what Twilio has not played yet.
    pub clear: bool,
    /// Send this `reply.create` instructions now.
    pub create: Option<String>,
    /// Hang up now.
    pub end: Option<MachineEnd>,
}

/// One call's answering-machine handling.
#[derive(Debug)]
pub(crate) struct Voicemail {
    message: Option<String>,
    phase: Phase,
    /// The session's first reply (its greeting) has started, or it has none. Until then a
    /// `reply.create` is held back: the greeting's `reply.started` would be taken for the
    /// message's.
    greeting_seen: bool,
}

impl Voicemail {
    pub(crate) fn new(message: Option<&str>, greets: bool) -> Self {
        Self {
            message: message.map(str::to_string),
            phase: Phase::Open,
            greeting_seen: !greets,
        }
    }

    /// Whether the agent's audio goes to Twilio now.
    pub(crate) fn agent_audio_passes(&self) -> bool {
        matches!(
            self.phase,
            Phase::Open | Phase::Leaving { started: true, .. }
        )
    }

    /// Whether the callee's audio goes to the agent now (not a machine's greeting or beep).
    pub(crate) fn callee_audio_passes(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Whether the message was asked for (or is about to be) and has not started yet.
    pub(crate) fn awaiting_message(&self) -> bool {
        matches!(self.phase, Phase::Leaving { started: false, .. })
    }

    /// Whether a machine was detected (the conversation is no longer with a person).
    pub(crate) fn machine(&self) -> bool {
        self.phase != Phase::Open
    }

    /// A verdict from Twilio.
    pub(crate) fn verdict(&mut self, verdict: &AnsweredBy) -> Actions {
        let mut actions = Actions::default();
        let ends_greeting = match verdict {
            AnsweredBy::Fax => {
                actions.end = Some(MachineEnd::Fax);
                return actions;
            }
            AnsweredBy::Human => return actions,
            // Detection gave up: a person, unless a machine's greeting was already playing,
            // whose end this then is.
            AnsweredBy::Unknown => {
                if self.phase != Phase::Muted {
                    return actions;
                }
                true
            }
            AnsweredBy::MachineStart => false,
            AnsweredBy::MachineEndBeep
            | AnsweredBy::MachineEndSilence
            | AnsweredBy::MachineEndOther => true,
            other if other.is_machine() => true,
            AnsweredBy::Other(_) => return actions,
        };
        if self.message.is_none() {
            actions.end = Some(MachineEnd::Voicemail);
            return actions;
        }
        match (self.phase, ends_greeting) {
            (Phase::Open, false) => {
                self.phase = Phase::Muted;
                actions.clear = true;
            }
            (Phase::Open | Phase::Muted, true) => {
                self.phase = Phase::Leaving {
                    create_sent: false,
                    started: false,
                };
                actions.clear = true;
                actions.create = self.take_create();
            }
            // A later verdict changes nothing once the message is under way.
            _ => {}
        }
        actions
    }

    /// The `reply.create` for the message, when it is due and not yet sent.
    fn take_create(&mut self) -> Option<String> {
        match (&mut self.phase, self.greeting_seen, &self.message) {
            (
                Phase::Leaving {
                    create_sent: sent @ false,
                    ..
                },
                true,
                Some(message),
            ) => {
                *sent = true;
                Some(instructions(message))
            }
            _ => None,
        }
    }

    /// The agent started a reply; returns a `reply.create` that was waiting for it.
    pub(crate) fn reply_started(&mut self) -> Option<String> {
        if !self.greeting_seen {
            self.greeting_seen = true;
            return self.take_create();
        }
        // Every reply that starts after the message was asked for is the message: the one
        // under way when it was asked had started already.
        if let Phase::Leaving {
            create_sent: true,
            started,
        } = &mut self.phase
        {
            *started = true;
        }
        None
    }

    /// A session that continues the call (after the agent was lost) does not greet.
    pub(crate) fn no_greeting(&mut self) -> Option<String> {
        self.greeting_seen = true;
        self.take_create()
    }

    /// A reply is done; `true` when it was the message, whose mark is to be sent now.
    pub(crate) fn reply_done(&mut self) -> bool {
        if let Phase::Leaving { started: true, .. } = self.phase {
            self.phase = Phase::Left;
            return true;
        }
        false
    }

    /// What a deadline running out means: the message never came (`Voicemail`), or it was
    /// spoken but its mark never came back (`VoicemailLeft`).
    pub(crate) fn gave_up(&self) -> MachineEnd {
        if self.phase == Phase::Left {
            MachineEnd::VoicemailLeft
        } else {
            MachineEnd::Voicemail
        }
    }
}

/// What a verdict that arrives before the call's stream means: `Some` when the call is to be
/// hung up without ever bridging it.
pub(crate) fn before_stream(verdict: &AnsweredBy, message: Option<&str>) -> Option<MachineEnd> {
    Voicemail::new(message, false).verdict(verdict).end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Voicemail {
        Voicemail::new(Some("Please call us back."), true)
    }

    #[test]
    fn a_machine_mutes_the_agent_until_its_greeting_ends_then_the_message_goes_out() {
        let mut v = vm();
        assert_eq!(v.reply_started(), None, "the greeting");
        assert!(v.agent_audio_passes() && v.callee_audio_passes());
        let a = v.verdict(&AnsweredBy::MachineStart);
        assert_eq!(
            a,
            Actions {
                clear: true,
                ..Actions::default()
            }
        );
        assert!(!v.agent_audio_passes() && !v.callee_audio_passes());
        // The greeting's end is no message.
        assert!(!v.reply_done());
        let a = v.verdict(&AnsweredBy::MachineEndBeep);
        assert!(a.clear && a.end.is_none());
        assert_eq!(message_in(&a.create.unwrap()), Some("Please call us back."));
        assert!(!v.agent_audio_passes(), "until the message's reply starts");
        assert_eq!(v.reply_started(), None);
        assert!(v.agent_audio_passes());
        assert!(v.reply_done());
        assert!(!v.agent_audio_passes(), "nothing after the message");
        assert_eq!(v.gave_up(), MachineEnd::VoicemailLeft);
        // Later verdicts change nothing.
        assert_eq!(v.verdict(&AnsweredBy::MachineEndOther), Actions::default());
    }

    #[test]
    fn a_verdict_before_the_greeting_started_waits_for_it() {
        let mut v = vm();
        let a = v.verdict(&AnsweredBy::MachineEndSilence);
        assert!(a.clear && a.create.is_none());
        let create = v.reply_started().expect("sent once the greeting started");
        assert!(create.contains("word for word"));
        // That start was the greeting's: its end is not the message's.
        assert!(!v.agent_audio_passes());
        assert!(!v.reply_done());
        v.reply_started();
        assert!(v.reply_done());
    }

    #[test]
    fn no_message_fax_human_and_unknown() {
        let mut none = Voicemail::new(None, true);
        assert_eq!(
            none.verdict(&AnsweredBy::MachineStart).end,
            Some(MachineEnd::Voicemail)
        );
        assert_eq!(vm().verdict(&AnsweredBy::Fax).end, Some(MachineEnd::Fax));
        for person in [AnsweredBy::Human, AnsweredBy::Unknown] {
            let mut v = vm();
            assert_eq!(v.verdict(&person), Actions::default());
            assert!(v.agent_audio_passes() && !v.machine());
        }
        // `unknown` after a machine's greeting began ends that greeting.
        let mut v = vm();
        v.reply_started();
        v.verdict(&AnsweredBy::MachineStart);
        assert!(v.verdict(&AnsweredBy::Unknown).create.is_some());
        assert_eq!(
            before_stream(&AnsweredBy::MachineEndBeep, None),
            Some(MachineEnd::Voicemail)
        );
        assert_eq!(before_stream(&AnsweredBy::MachineEndBeep, Some("hi")), None);
        assert_eq!(
            before_stream(&AnsweredBy::Fax, Some("hi")),
            Some(MachineEnd::Fax)
        );
    }
}

//! How a call ends, decided without I/O: who ended it, why, what the outcome records as its
//! error, and what must still be done at Twilio. The call service acts on these decisions;
//! every rule lives here, beside the state machine, and is unit-tested.

use super::bridge::BridgeEnd;
use crate::events::{EndedBy, OutcomeError};
use std::time::Duration;

/// What the call still needs from Twilio once it is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtTwilio {
    /// Twilio ended it already (the callee hung up).
    Nothing,
    /// End it now through the API.
    HangUp,
    /// Replace the call's TwiML with a short spoken apology and a hang-up; the wait for its
    /// final status confirms the end (and hangs up a call that is still live).
    Apologise,
    /// Replace the call's TwiML with `<Dial>` to the person (`transfer_to`); the call goes on
    /// without us until Twilio reports its end.
    Transfer,
}

/// Why and how a call ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    pub by: EndedBy,
    pub reason: String,
    /// Recorded in the outcome (the first error of a call wins).
    pub error: Option<OutcomeError>,
    pub at_twilio: AtTwilio,
}

impl Ending {
    fn new(by: EndedBy, reason: impl Into<String>, at_twilio: AtTwilio) -> Self {
        Self {
            by,
            reason: reason.into(),
            error: None,
            at_twilio,
        }
    }

    fn failure(code: Option<String>, message: String, at_twilio: AtTwilio) -> Self {
        Self {
            by: EndedBy::Error,
            reason: message.clone(),
            error: Some(OutcomeError { code, message }),
            at_twilio,
        }
    }

    /// The operator (Ctrl-C, the API, shutdown) asked.
    pub(crate) fn operator() -> Self {
        Self::new(
            EndedBy::Operator,
            "interrupted by the operator",
            AtTwilio::HangUp,
        )
    }

    /// A machine answered and is hung up on before any conversation.
    pub(crate) fn machine(end: crate::call::voicemail::MachineEnd) -> Self {
        Self::new(EndedBy::Agent, end.reason(), AtTwilio::HangUp)
    }

    pub(crate) fn time_limit(limit: Duration) -> Self {
        Self::new(
            EndedBy::TimeLimit,
            format!("time limit of {} s reached", limit.as_secs()),
            AtTwilio::HangUp,
        )
    }

    /// Answered, but no Media Stream came: our public URL does not reach us.
    pub(crate) fn no_stream(waited: Duration, public_url: &str) -> Self {
        Self::failure(
            None,
            format!(
                "the call was answered but Twilio did not open the media stream within {} s; check that PUBLIC_URL ({public_url}) reaches this machine over HTTPS",
                waited.as_secs()
            ),
            AtTwilio::HangUp,
        )
    }

    /// What the bridge's end means for the call.
    pub(crate) fn after_bridge(end: &BridgeEnd, time_limit: Duration) -> Self {
        match end {
            BridgeEnd::CalleeHungUp => {
                Self::new(EndedBy::Callee, "callee hung up", AtTwilio::Nothing)
            }
            BridgeEnd::AgentEndedCall => {
                Self::new(EndedBy::Agent, "agent ended the call", AtTwilio::HangUp)
            }
            BridgeEnd::AgentEnded => {
                Self::new(EndedBy::Agent, "agent session ended", AtTwilio::HangUp)
            }
            BridgeEnd::Machine(end) => Self::new(EndedBy::Agent, end.reason(), AtTwilio::HangUp),
            BridgeEnd::Transferred { reason } if reason.is_empty() => Self::new(
                EndedBy::Agent,
                "transferred to a person",
                AtTwilio::Transfer,
            ),
            BridgeEnd::Transferred { reason } => Self::new(
                EndedBy::Agent,
                format!("transferred to a person: {reason}"),
                AtTwilio::Transfer,
            ),
            BridgeEnd::AgentFailed(failure) => Self::failure(
                Some(failure.code().to_string()),
                failure.to_string(),
                AtTwilio::Apologise,
            ),
            BridgeEnd::SetupFailed(failure) => Self::failure(
                Some(failure.code().to_string()),
                failure.to_string(),
                AtTwilio::Apologise,
            ),
            BridgeEnd::StreamClosed => Self::failure(
                None,
                "Twilio closed the media stream unexpectedly".into(),
                AtTwilio::HangUp,
            ),
            BridgeEnd::TimeLimit => Self::time_limit(time_limit),
            BridgeEnd::Cancelled => Self::operator(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::{AgentError, AgentErrorCode};
    use crate::call::bridge::{AgentFailure, SetupFailure};

    const LIMIT: Duration = Duration::from_secs(600);

    #[test]
    fn only_the_agents_own_end_is_a_normal_end() {
        for end in [BridgeEnd::AgentEndedCall, BridgeEnd::AgentEnded] {
            let e = Ending::after_bridge(&end, LIMIT);
            assert_eq!((e.by, e.at_twilio), (EndedBy::Agent, AtTwilio::HangUp));
            assert!(e.error.is_none());
        }
        let failures = [
            AgentFailure::Lost {
                frame: None,
                last_error: None,
            },
            AgentFailure::Lost {
                frame: Some((1011, "internal error".into())),
                last_error: None,
            },
            AgentFailure::Silent(Duration::from_secs(45)),
            AgentFailure::Error(AgentError {
                code: AgentErrorCode::SessionExpired,
                message: "too long".into(),
            }),
        ];
        for failure in failures {
            let e = Ending::after_bridge(&BridgeEnd::AgentFailed(failure.clone()), LIMIT);
            assert_eq!(e.by, EndedBy::Error, "{failure}");
            let error = e.error.expect("an agent failure is an error");
            assert_eq!(error.code.as_deref(), Some(failure.code()));
            assert_eq!(error.message, failure.to_string());
            assert_eq!(e.at_twilio, AtTwilio::Apologise);
        }
    }

    #[test]
    fn every_end_but_the_callees_is_carried_out_at_twilio() {
        let ends = [
            BridgeEnd::AgentEndedCall,
            BridgeEnd::AgentEnded,
            BridgeEnd::AgentFailed(AgentFailure::Silent(Duration::from_secs(1))),
            BridgeEnd::SetupFailed(SetupFailure::Timeout(Duration::from_secs(10))),
            BridgeEnd::StreamClosed,
            BridgeEnd::TimeLimit,
            BridgeEnd::Cancelled,
        ];
        for end in ends {
            assert_ne!(
                Ending::after_bridge(&end, LIMIT).at_twilio,
                AtTwilio::Nothing,
                "{end:?}"
            );
        }
        assert_eq!(
            Ending::after_bridge(&BridgeEnd::CalleeHungUp, LIMIT).at_twilio,
            AtTwilio::Nothing
        );
    }

    #[test]
    fn machines_are_hung_up_and_transfers_dialed() {
        use crate::call::voicemail::MachineEnd;
        for end in [
            MachineEnd::VoicemailLeft,
            MachineEnd::Voicemail,
            MachineEnd::Fax,
        ] {
            let e = Ending::after_bridge(&BridgeEnd::Machine(end), LIMIT);
            assert_eq!((e.by, e.at_twilio), (EndedBy::Agent, AtTwilio::HangUp));
            assert_eq!(e.reason, end.reason());
            assert!(e.error.is_none());
        }
        let e = Ending::after_bridge(
            &BridgeEnd::Transferred {
                reason: "asked for a person".into(),
            },
            LIMIT,
        );
        assert_eq!(e.at_twilio, AtTwilio::Transfer);
        assert_eq!(e.reason, "transferred to a person: asked for a person");
    }

    #[test]
    fn setup_failures_keep_their_codes_and_words() {
        let e = Ending::after_bridge(
            &BridgeEnd::SetupFailed(SetupFailure::Timeout(Duration::from_secs(10))),
            LIMIT,
        );
        let error = e.error.unwrap();
        assert_eq!(error.code.as_deref(), Some("timeout"));
        assert!(error.message.contains("10 s"), "{}", error.message);
    }

    #[test]
    fn time_limit_and_operator() {
        let e = Ending::after_bridge(&BridgeEnd::TimeLimit, LIMIT);
        assert_eq!(e.by, EndedBy::TimeLimit);
        assert_eq!(e.reason, "time limit of 600 s reached");
        assert_eq!(
            Ending::after_bridge(&BridgeEnd::Cancelled, LIMIT).by,
            EndedBy::Operator
        );
        let e = Ending::no_stream(Duration::from_secs(20), "https://x.example");
        assert_eq!(e.by, EndedBy::Error);
        assert!(e.reason.contains("https://x.example"));
    }
}

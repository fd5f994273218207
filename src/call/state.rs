//! The call as an explicit state machine: a pure transition function from (state, input) to the
//! next state, with no I/O, so every path a call can take is unit-tested here. The call task
//! feeds it Twilio callbacks, stream and agent milestones, and end requests.

use crate::events::{EndedBy, FinalStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallState {
    /// The create request is in flight.
    Placing,
    /// Twilio accepted the call (`queued`/`initiated`).
    Queued {
        sid: String,
    },
    Ringing {
        sid: String,
    },
    /// Answered (`in-progress`); the Media Stream has not started yet.
    Answered {
        sid: String,
    },
    /// The stream started; the agent session is being opened.
    Connecting {
        sid: String,
    },
    /// Callee and agent are talking.
    Conversing {
        sid: String,
        session_id: String,
    },
    /// Handed to a person with `<Dial>`: the call goes on without us until Twilio reports
    /// its end.
    Transferred {
        sid: String,
        reason: String,
    },
    /// Someone asked for the end; waiting for Twilio's final status.
    Ending {
        sid: Option<String>,
        by: EndedBy,
        reason: String,
        answered: bool,
    },
    Ended {
        status: FinalStatus,
        by: EndedBy,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    Created {
        sid: String,
    },
    /// Twilio refused the create request (invalid number, blocked, …).
    Rejected {
        reason: String,
    },
    Ringing,
    Answered,
    StreamStarted,
    AgentReady {
        session_id: String,
    },
    /// The call was switched to `<Dial>` to a person.
    Transferred {
        reason: String,
    },
    /// The bridge ended, the operator interrupted, the time limit hit, or an error occurred.
    EndRequested {
        by: EndedBy,
        reason: String,
    },
    /// Twilio's final status (`completed`, `busy`, `no-answer`, `failed`, `canceled`).
    Final {
        status: FinalStatus,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("call in state {state} cannot take {input}")]
pub(crate) struct InvalidTransition {
    pub state: &'static str,
    pub input: &'static str,
}

impl CallState {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Placing => "placing",
            Self::Queued { .. } => "queued",
            Self::Ringing { .. } => "ringing",
            Self::Answered { .. } => "answered",
            Self::Connecting { .. } => "connecting",
            Self::Conversing { .. } => "conversing",
            Self::Transferred { .. } => "transferred",
            Self::Ending { .. } => "ending",
            Self::Ended { .. } => "ended",
        }
    }

    pub(crate) fn sid(&self) -> Option<&str> {
        match self {
            Self::Queued { sid }
            | Self::Ringing { sid }
            | Self::Answered { sid }
            | Self::Connecting { sid }
            | Self::Conversing { sid, .. }
            | Self::Transferred { sid, .. } => Some(sid),
            Self::Ending { sid, .. } => sid.as_deref(),
            Self::Placing | Self::Ended { .. } => None,
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        matches!(self, Self::Ended { .. })
    }

    fn answered(&self) -> bool {
        match self {
            Self::Answered { .. }
            | Self::Connecting { .. }
            | Self::Conversing { .. }
            | Self::Transferred { .. } => true,
            Self::Ending { answered, .. } => *answered,
            _ => false,
        }
    }

    /// The next state. Twilio delivers callbacks as separate requests in no guaranteed order,
    /// so a progress input that arrives after a later stage (ringing after answered) leaves the
    /// state as it is rather than failing.
    pub(crate) fn next(self, input: Input) -> Result<CallState, InvalidTransition> {
        use CallState as S;
        use Input as I;
        let invalid = |s: &CallState, i: &Input| InvalidTransition {
            state: s.name(),
            input: input_name(i),
        };
        Ok(match (self, input) {
            (s @ S::Ended { .. }, i) => return Err(invalid(&s, &i)),

            (S::Placing, I::Created { sid }) => S::Queued { sid },
            (S::Placing, I::Rejected { reason }) => S::Ended {
                status: FinalStatus::Failed,
                by: EndedBy::Error,
                reason,
            },
            (S::Placing, I::EndRequested { by, reason }) => S::Ending {
                sid: None,
                by,
                reason,
                answered: false,
            },

            (S::Queued { sid } | S::Ringing { sid }, I::Ringing) => S::Ringing { sid },
            (S::Queued { sid } | S::Ringing { sid }, I::Answered) => S::Answered { sid },
            // The stream can start before the `answered` callback arrives.
            (S::Queued { sid } | S::Ringing { sid } | S::Answered { sid }, I::StreamStarted) => {
                S::Connecting { sid }
            }
            (S::Connecting { sid }, I::AgentReady { session_id }) => {
                S::Conversing { sid, session_id }
            }
            (
                S::Connecting { sid } | S::Conversing { sid, .. } | S::Answered { sid },
                I::Transferred { reason },
            ) => S::Transferred { sid, reason },
            (
                s @ (S::Answered { .. }
                | S::Connecting { .. }
                | S::Conversing { .. }
                | S::Transferred { .. }),
                I::Ringing | I::Answered,
            ) => s,
            (s @ S::Ending { .. }, I::Ringing | I::Answered | I::StreamStarted) => s,

            (s, I::EndRequested { by, reason }) => match s {
                // The first reason to end is the one that counts.
                s @ S::Ending { .. } => s,
                other => S::Ending {
                    answered: other.answered(),
                    sid: other.sid().map(str::to_string),
                    by,
                    reason,
                },
            },

            (s, I::Final { status }) => {
                let (by, reason) = match &s {
                    S::Ending { by, reason, .. } => (*by, reason.clone()),
                    // After the hand-off the call was the callee's and the person's; the
                    // agent's part ended with the transfer.
                    S::Transferred { reason, .. } => (
                        EndedBy::Agent,
                        if reason.is_empty() {
                            "transferred to a person".to_string()
                        } else {
                            format!("transferred to a person: {reason}")
                        },
                    ),
                    other => match status {
                        FinalStatus::Completed if other.answered() => {
                            (EndedBy::Callee, "callee hung up".to_string())
                        }
                        FinalStatus::Completed => (
                            EndedBy::Callee,
                            "call ended before it was bridged".to_string(),
                        ),
                        FinalStatus::Busy => (EndedBy::Network, "line busy".to_string()),
                        FinalStatus::NoAnswer => (EndedBy::Network, "no answer".to_string()),
                        FinalStatus::Failed => (
                            EndedBy::Network,
                            "the call could not be connected".to_string(),
                        ),
                        FinalStatus::Canceled => (
                            EndedBy::Operator,
                            "canceled before it was answered".to_string(),
                        ),
                    },
                };
                S::Ended { status, by, reason }
            }

            (s, i) => return Err(invalid(&s, &i)),
        })
    }
}

fn input_name(i: &Input) -> &'static str {
    match i {
        Input::Created { .. } => "created",
        Input::Rejected { .. } => "rejected",
        Input::Ringing => "ringing",
        Input::Answered => "answered",
        Input::StreamStarted => "stream-started",
        Input::AgentReady { .. } => "agent-ready",
        Input::Transferred { .. } => "transferred",
        Input::EndRequested { .. } => "end-requested",
        Input::Final { .. } => "final",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transferred_call_lives_on_until_twilio_ends_it() {
        let s = run(vec![
            Input::Created { sid: "CA1".into() },
            Input::Answered,
            Input::StreamStarted,
            Input::AgentReady {
                session_id: "s".into(),
            },
            Input::Transferred {
                reason: "asked for a person".into(),
            },
            Input::Answered,
        ])
        .unwrap();
        assert_eq!(s.name(), "transferred");
        assert_eq!(s.sid(), Some("CA1"));
        let ended = s
            .clone()
            .next(Input::Final {
                status: FinalStatus::Completed,
            })
            .unwrap();
        assert_eq!(
            ended,
            CallState::Ended {
                status: FinalStatus::Completed,
                by: EndedBy::Agent,
                reason: "transferred to a person: asked for a person".into()
            }
        );
        // The operator may still end it.
        let ending = s
            .next(Input::EndRequested {
                by: EndedBy::Operator,
                reason: "interrupted".into(),
            })
            .unwrap();
        assert!(matches!(ending, CallState::Ending { answered: true, .. }));
        // Not before the call was answered.
        assert!(
            run(vec![
                Input::Created { sid: "CA1".into() },
                Input::Transferred {
                    reason: String::new()
                }
            ])
            .is_err()
        );
    }

    fn run(inputs: Vec<Input>) -> Result<CallState, InvalidTransition> {
        inputs
            .into_iter()
            .try_fold(CallState::Placing, |s, i| s.next(i))
    }

    fn created() -> Input {
        Input::Created { sid: "CA1".into() }
    }

    #[test]
    fn conversation_callee_hangs_up() {
        let end = run(vec![
            created(),
            Input::Ringing,
            Input::Answered,
            Input::StreamStarted,
            Input::AgentReady {
                session_id: "sess".into(),
            },
            Input::Final {
                status: FinalStatus::Completed,
            },
        ])
        .unwrap();
        assert_eq!(
            end,
            CallState::Ended {
                status: FinalStatus::Completed,
                by: EndedBy::Callee,
                reason: "callee hung up".into()
            }
        );
    }

    #[test]
    fn agent_ends_the_call() {
        let end = run(vec![
            created(),
            Input::StreamStarted,
            Input::AgentReady {
                session_id: "s".into(),
            },
            Input::EndRequested {
                by: EndedBy::Agent,
                reason: "agent said goodbye".into(),
            },
            Input::EndRequested {
                by: EndedBy::Callee,
                reason: "later".into(),
            },
            Input::Final {
                status: FinalStatus::Completed,
            },
        ])
        .unwrap();
        assert_eq!(
            end,
            CallState::Ended {
                status: FinalStatus::Completed,
                by: EndedBy::Agent,
                reason: "agent said goodbye".into()
            }
        );
    }

    #[test]
    fn network_outcomes() {
        for (status, reason) in [
            (FinalStatus::Busy, "line busy"),
            (FinalStatus::NoAnswer, "no answer"),
            (FinalStatus::Failed, "the call could not be connected"),
        ] {
            let end = run(vec![created(), Input::Ringing, Input::Final { status }]).unwrap();
            assert_eq!(
                end,
                CallState::Ended {
                    status,
                    by: EndedBy::Network,
                    reason: reason.into()
                }
            );
        }
    }

    #[test]
    fn rejected_create_ends_as_failed() {
        let end = run(vec![Input::Rejected {
            reason: "invalid number".into(),
        }])
        .unwrap();
        assert!(matches!(
            end,
            CallState::Ended {
                status: FinalStatus::Failed,
                by: EndedBy::Error,
                ..
            }
        ));
    }

    #[test]
    fn out_of_order_callbacks_are_harmless() {
        let s = run(vec![created(), Input::Answered, Input::Ringing]).unwrap();
        assert_eq!(s, CallState::Answered { sid: "CA1".into() });
        let s = run(vec![created(), Input::StreamStarted, Input::Answered]).unwrap();
        assert_eq!(s, CallState::Connecting { sid: "CA1".into() });
    }

    #[test]
    fn operator_hang_up_while_ringing_is_canceled() {
        let end = run(vec![
            created(),
            Input::Ringing,
            Input::EndRequested {
                by: EndedBy::Operator,
                reason: "interrupted".into(),
            },
            Input::Final {
                status: FinalStatus::Canceled,
            },
        ])
        .unwrap();
        assert!(matches!(
            end,
            CallState::Ended {
                status: FinalStatus::Canceled,
                by: EndedBy::Operator,
                ..
            }
        ));
    }

    #[test]
    fn impossible_inputs_are_errors() {
        assert!(
            CallState::Placing
                .next(Input::AgentReady {
                    session_id: "s".into()
                })
                .is_err()
        );
        assert!(CallState::Placing.next(Input::Answered).is_err());
        let ended = CallState::Ended {
            status: FinalStatus::Completed,
            by: EndedBy::Callee,
            reason: "x".into(),
        };
        assert_eq!(
            ended.next(Input::Answered),
            Err(InvalidTransition {
                state: "ended",
                input: "answered"
            })
        );
        let q = run(vec![created()]).unwrap();
        assert!(
            q.next(Input::AgentReady {
                session_id: "s".into()
            })
            .is_err()
        );
    }
}

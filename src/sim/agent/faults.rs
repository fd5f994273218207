//! Faults the fake can inject into a session, each one something the real service does
//! (reference §1.5, §8, §9, Appendix B): a connection dropped without a close frame, a close
//! with 1011, a `session.error` that leaves the session open followed by a close without
//! `session.ended`, a session that goes quiet, a slow `session.ready`, and every documented
//! `session.error` code with the close the reference documents for it.
//!
//! A fault is chosen per connection when its WebSocket handshake completes ([`FaultRule`]), or
//! injected into a live session ([`super::FakeAgent::inject`]). Times are simulated.

use std::time::Duration;

/// The real service gives up on an agent worker that is not ready within 10 s
/// (`agent_timeout`, reference §8).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the fake does wrong on one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentFault {
    /// `after` the session is ready, the TCP connection is reset: no `session.error`, no close
    /// frame. The client sees an abnormal drop (1006). The session is held for resume, as the
    /// real service holds a dropped one.
    Drop { after: Duration },
    /// `after` the session is ready, close 1011 with no `session.error` first: a session the
    /// server cancelled (reference §1.5).
    Close1011 { after: Duration },
    /// `after` the session is ready, a `session.error` whose code leaves the session open
    /// (`invalid_audio`, say), then close 1000 without `session.ended`.
    ErrorThenClose { after: Duration, code: &'static str },
    /// After `session.ready` and the greeting (at once, without a greeting) the session sends
    /// nothing more, though it keeps reading: a hung agent worker behind a live socket. The
    /// WebSocket layer still answers pings and close frames.
    Silent,
    /// `session.updated` at once, `session.ready` only after `delay`. From
    /// [`AGENT_TIMEOUT`] on, the real service gives up instead: `agent_timeout`, close 1011.
    SlowReady { delay: Duration },
    /// A documented `session.error` code (see [`DOCUMENTED_ERRORS`]), followed by the close
    /// the reference documents for it at that point, or none when the session stays open.
    Error { code: &'static str, at: ErrorAt },
}

/// When an injected `session.error` is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAt {
    /// In answer to a valid first `session.update`, instead of `session.ready`. A code that
    /// leaves the socket open leaves it open with no session: the client waits in vain.
    Setup,
    /// This long after `session.ready`.
    Live { after: Duration },
}

/// What follows a `session.error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    StaysOpen,
    Close(u16),
}

/// A `session.error` code of reference §8: where it can occur and what follows it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentedError {
    pub code: &'static str,
    /// In answer to the first client frame; `None` when the reference never shows it there.
    pub setup: Option<Then>,
    /// Mid-session; `None` when the reference never shows it there.
    pub live: Option<Then>,
    pub message: &'static str,
}

const fn documented(
    code: &'static str,
    setup: Option<Then>,
    live: Option<Then>,
    message: &'static str,
) -> DocumentedError {
    DocumentedError {
        code,
        setup,
        live,
        message,
    }
}

const POLICY: Option<Then> = Some(Then::Close(1008));
const SERVER: Option<Then> = Some(Then::Close(1011));
const OPEN: Option<Then> = Some(Then::StaysOpen);

/// Every code of reference §8. Where the table says only "(close)" or "?", the choice is:
/// capacity and concurrency refusals close 1008 like `server_error` at the handshake; agent
/// worker failures (`agent_init_failed`, `agent_timeout`) and a live `server_error` close 1011
/// like `internal_error`; `invalid_webhook` behaves like `invalid_config`. `session_not_found`
/// and `session_forbidden` answer a `session.resume` in the real service; injected at setup
/// they answer whatever came first.
pub const DOCUMENTED_ERRORS: &[DocumentedError] = &[
    documented(
        "unauthorized",
        POLICY,
        None,
        "Invalid or missing API key or token",
    ),
    documented("forbidden", POLICY, None, "Permission denied"),
    documented("internal_error", SERVER, SERVER, "Internal server error"),
    documented("server_error", POLICY, SERVER, "Server error"),
    documented(
        "at_capacity",
        POLICY,
        None,
        "The service is at capacity; try again later",
    ),
    documented(
        "concurrency_exceeded",
        POLICY,
        None,
        "The account's concurrent-session limit was reached",
    ),
    documented(
        "session_not_found",
        POLICY,
        None,
        "Session not found or grace window has expired",
    ),
    documented(
        "session_forbidden",
        POLICY,
        None,
        "Session belongs to another account",
    ),
    documented("session_expired", None, POLICY, "Session expired"),
    documented("agent_not_found", POLICY, None, "Agent not found"),
    documented(
        "agent_id_not_first",
        POLICY,
        OPEN,
        "agent_id is only allowed, alone, in the first session.update",
    ),
    documented(
        "agent_init_failed",
        SERVER,
        None,
        "The agent failed to initialise",
    ),
    documented(
        "agent_timeout",
        SERVER,
        None,
        "The agent was not ready within 10 s",
    ),
    documented("invalid_format", OPEN, OPEN, "Invalid message format"),
    documented("invalid_audio", None, OPEN, "Audio could not be decoded"),
    documented("invalid_value", POLICY, OPEN, "Invalid value"),
    documented(
        "invalid_config",
        POLICY,
        OPEN,
        "Invalid session configuration",
    ),
    documented(
        "immutable_field",
        None,
        OPEN,
        "Field cannot be changed after the session is established",
    ),
    documented(
        "audio_rate_violation",
        None,
        OPEN,
        "Audio is being sent faster than real time",
    ),
    documented("invalid_webhook", POLICY, OPEN, "Invalid webhook"),
];

/// The documented code `code`, if it is one.
pub fn documented_error(code: &str) -> Option<&'static DocumentedError> {
    DOCUMENTED_ERRORS.iter().find(|e| e.code == code)
}

impl AgentFault {
    /// `Err` says why the real service cannot do this.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Drop { .. } | Self::Close1011 { .. } | Self::Silent | Self::SlowReady { .. } => {
                Ok(())
            }
            Self::ErrorThenClose { code, .. } => match documented_error(code) {
                Some(e) if e.live == Some(Then::StaysOpen) => Ok(()),
                Some(_) => Err(format!(
                    "{code} is not an error the session survives mid-call"
                )),
                None => Err(format!("{code} is not a documented session.error code")),
            },
            Self::Error { code, at } => {
                let e = documented_error(code)
                    .ok_or_else(|| format!("{code} is not a documented session.error code"))?;
                let (then, phase) = match at {
                    ErrorAt::Setup => (e.setup, "at setup"),
                    ErrorAt::Live { .. } => (e.live, "mid-session"),
                };
                then.map(|_| ())
                    .ok_or_else(|| format!("the reference never shows {code} {phase}"))
            }
        }
    }

    /// Whether the fault still means something once the session is ready.
    pub(super) fn is_live(&self) -> bool {
        !matches!(
            self,
            Self::SlowReady { .. }
                | Self::Error {
                    at: ErrorAt::Setup,
                    ..
                }
        )
    }

    /// How long after `session.ready` a timed fault fires.
    pub(super) fn live_after(&self) -> Option<Duration> {
        match self {
            Self::Drop { after }
            | Self::Close1011 { after }
            | Self::ErrorThenClose { after, .. }
            | Self::Error {
                at: ErrorAt::Live { after },
                ..
            } => Some(*after),
            _ => None,
        }
    }
}

/// Which connections a [`FaultRule`] applies to, counted from 1 in the order their WebSocket
/// handshakes completed (the order of [`super::FakeAgent::sessions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    All,
    /// Only the n-th connection.
    Nth(usize),
    /// The first n connections.
    First(usize),
}

impl Sessions {
    fn matches(self, n: usize) -> bool {
        match self {
            Self::All => true,
            Self::Nth(k) => n == k,
            Self::First(k) => n <= k,
        }
    }
}

/// A fault and the connections it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub sessions: Sessions,
    pub fault: AgentFault,
}

impl FaultRule {
    pub fn all(fault: AgentFault) -> Self {
        Self {
            sessions: Sessions::All,
            fault,
        }
    }

    /// Only the n-th connection (from 1): a test can fault the first call and not its retry.
    pub fn nth(n: usize, fault: AgentFault) -> Self {
        Self {
            sessions: Sessions::Nth(n),
            fault,
        }
    }
}

/// The fault for the n-th connection: the first rule that matches.
pub(super) fn for_session(rules: &[FaultRule], n: usize) -> Option<AgentFault> {
    rules
        .iter()
        .find(|r| r.sessions.matches(n))
        .map(|r| r.fault.clone())
}

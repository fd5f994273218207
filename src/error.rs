//! What the process tells the user when something is wrong, and the exit code it ends with.
//! Every failure becomes one line on stderr; exit codes are documented in README.md.

use crate::agent::client::PreflightError;
use crate::call::dialer::DialError;
use crate::campaign::runner::CampaignError;
use crate::campaign::{LoadError, export::ExportError, store::StoreError};
use crate::events::{EndedBy, FinalStatus, Outcome};
use crate::settings::SettingsError;
use std::process::ExitCode;

/// Exit codes (README.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The call completed with a conversation / the campaign ran to its end.
    Success = 0,
    /// An unexpected error.
    Failure = 1,
    /// Bad usage, settings or input files; bad credentials.
    Config = 2,
    Busy = 3,
    NoAnswer = 4,
    /// The call could not be placed or connected (invalid or blocked number, carrier failure).
    CallFailed = 5,
    /// The call connected but ended by an error (agent service, media stream).
    CallError = 6,
    /// `dialer doctor`: at least one check failed.
    CheckFailed = 7,
    /// Interrupted with Ctrl-C.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }

    /// The exit code for one call's outcome.
    pub fn for_outcome(outcome: &Outcome) -> Exit {
        match (outcome.status, outcome.ended_by) {
            (_, EndedBy::Operator) => Exit::Interrupted,
            (FinalStatus::Busy, _) => Exit::Busy,
            (FinalStatus::NoAnswer, _) => Exit::NoAnswer,
            (FinalStatus::Failed | FinalStatus::Canceled, _) => Exit::CallFailed,
            (FinalStatus::Completed, EndedBy::Error) => Exit::CallError,
            (FinalStatus::Completed, _) => Exit::Success,
        }
    }
}

/// A failure that stops a command.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// Bad input: an invalid number argument, an agent or campaign file, a CSV.
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Dial(#[from] DialError),
    #[error("{0}")]
    Other(String),
}

impl AppError {
    /// The one place errors become exit codes.
    pub fn exit(&self) -> Exit {
        match self {
            AppError::Settings(_) | AppError::Input(_) => Exit::Config,
            AppError::Dial(e) if !e.transient && e.code.is_some() => Exit::Config,
            AppError::Dial(_) | AppError::Other(_) => Exit::Failure,
        }
    }

    /// The trial agent session before a campaign's first dial failed: settings the service
    /// refused are the user's to fix; anything else (an outage) is not.
    pub(crate) fn nobody_called(e: PreflightError) -> Self {
        let text = format!("{e}; nobody was called");
        match &e {
            PreflightError::Rejected(error) if error.code.is_configuration() => {
                AppError::Input(text)
            }
            _ => AppError::Other(text),
        }
    }
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        AppError::Other(e.to_string())
    }
}

impl From<LoadError> for AppError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Store(StoreError::Sql(e)) => {
                AppError::Other(format!("campaign database: {e}"))
            }
            other => AppError::Input(other.to_string()),
        }
    }
}

impl From<ExportError> for AppError {
    fn from(e: ExportError) -> Self {
        AppError::Other(e.to_string())
    }
}

impl From<CampaignError> for AppError {
    fn from(e: CampaignError) -> Self {
        match e {
            CampaignError::Dial(e) => AppError::Dial(e),
            CampaignError::Agent(message) => AppError::Input(message),
            other => AppError::Other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: FinalStatus, by: EndedBy) -> Outcome {
        Outcome::sample("+12025550100", status, by)
    }

    #[test]
    fn outcome_exit_codes() {
        assert_eq!(
            Exit::for_outcome(&outcome(FinalStatus::Completed, EndedBy::Agent)),
            Exit::Success
        );
        assert_eq!(
            Exit::for_outcome(&outcome(FinalStatus::Completed, EndedBy::Callee)),
            Exit::Success
        );
        assert_eq!(
            Exit::for_outcome(&outcome(FinalStatus::Busy, EndedBy::Network)),
            Exit::Busy
        );
        assert_eq!(
            Exit::for_outcome(&outcome(FinalStatus::NoAnswer, EndedBy::Network)),
            Exit::NoAnswer
        );
        assert_eq!(
            Exit::for_outcome(&outcome(FinalStatus::Failed, EndedBy::Error)),
            Exit::CallFailed
        );
        assert_eq!(
            Exit::for_outcome(&outcome(FinalStatus::Completed, EndedBy::Error)),
            Exit::CallError
        );
        assert_eq!(
            Exit::for_outcome(&outcome(FinalStatus::Completed, EndedBy::Operator)),
            Exit::Interrupted
        );
    }

    #[test]
    fn bad_credentials_are_a_configuration_exit() {
        let e = AppError::Dial(DialError {
            code: Some(20003),
            message: "x".into(),
            transient: false,
        });
        assert_eq!(e.exit(), Exit::Config);
        let e = AppError::Dial(DialError {
            code: None,
            message: "x".into(),
            transient: true,
        });
        assert_eq!(e.exit(), Exit::Failure);
    }
}

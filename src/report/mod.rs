//! Views over call and campaign events (and `dialer doctor`'s checks): a live terminal view (indicatif), plain lines when
//! output is not a terminal, or one JSON object per line for scripts. The core emits events
//! and never knows how they are shown.

pub(crate) mod call;
pub(crate) mod campaign;
pub(crate) mod doctor;
pub(crate) mod format;
mod printer;
pub(crate) mod serve;

pub use printer::{LogWriter, Printer};

use std::io::IsTerminal;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Live bars and in-place partial transcripts on a terminal.
    Live,
    /// One line per event, for logs and pipes.
    Plain,
    /// One JSON object per line on stdout.
    Json,
}

impl Style {
    pub fn choose(json: bool) -> Self {
        if json {
            Style::Json
        } else if std::io::stdout().is_terminal() {
            Style::Live
        } else {
            Style::Plain
        }
    }
}

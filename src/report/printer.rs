//! The one owner of the terminal. Results (transcripts, outcomes, JSON events, the closing
//! table) go to stdout; progress bars, messages and logs go to stderr. Every write goes through
//! here, so a log line or a message never tears a live bar (the bars are hidden while it is
//! written), and a closed stdout (`dialer call … | head -1`) is a normal end, not a panic.

use super::Style;
use indicatif::{MultiProgress, ProgressDrawTarget};
use std::io::{self, Write};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Cheap to clone: every clone writes to the same terminal.
#[derive(Clone, Debug)]
pub struct Printer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    style: Style,
    bars: MultiProgress,
    stdout_closed: CancellationToken,
}

impl Printer {
    pub fn new(style: Style) -> Self {
        let target = match style {
            // indicatif hides a stderr target that is not a terminal by itself.
            Style::Live => ProgressDrawTarget::stderr(),
            Style::Plain | Style::Json => ProgressDrawTarget::hidden(),
        };
        Self {
            inner: Arc::new(Inner {
                style,
                bars: MultiProgress::with_draw_target(target),
                stdout_closed: CancellationToken::new(),
            }),
        }
    }

    pub fn style(&self) -> Style {
        self.inner.style
    }

    /// Where the live views add their bars.
    pub fn bars(&self) -> &MultiProgress {
        &self.inner.bars
    }

    /// A result line on stdout. Once stdout is closed nothing more is written.
    pub fn out(&self, text: &str) {
        if self.stdout_closed() {
            return;
        }
        let written = self.inner.bars.suspend(|| {
            let mut out = io::stdout().lock();
            writeln!(out, "{text}").and_then(|()| out.flush())
        });
        if written.is_err() {
            // Whoever read our output has gone (a closed pipe, a full disk): stop writing, and
            // let the command end its work as it would on the operator's first Ctrl-C.
            self.inner.stdout_closed.cancel();
        }
    }

    /// A message for the person at the terminal, on stderr.
    pub fn message(&self, text: &str) {
        self.write_stderr(format!("dialer: {text}\n").as_bytes());
    }

    /// What `main` prints for an error that stops the command.
    pub fn error(&self, text: &str) {
        self.write_stderr(format!("dialer: error: {text}\n").as_bytes());
    }

    fn write_stderr(&self, bytes: &[u8]) {
        self.inner.bars.suspend(|| {
            // Nowhere left to report a failure to write to stderr.
            let _ = io::stderr().lock().write_all(bytes);
        });
    }

    pub fn stdout_closed(&self) -> bool {
        self.inner.stdout_closed.is_cancelled()
    }

    /// Resolves when stdout has been closed by its reader.
    pub async fn closed(&self) {
        self.inner.stdout_closed.cancelled().await;
    }

    /// A `tracing` writer that hides the bars while a log line is written.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter(self.clone())
    }
}

/// Log lines to stderr through the printer (see [`Printer::log_writer`]).
#[derive(Clone, Debug)]
pub struct LogWriter(Printer);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // tracing's formatter hands over a whole event at once, so one suspend per line.
        self.0.write_stderr(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_printer_has_no_visible_bars() {
        let p = Printer::new(Style::Plain);
        assert!(p.bars().is_hidden());
        assert!(!p.stdout_closed());
    }
}

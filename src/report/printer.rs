//! The one owner of the terminal. Results (transcripts, outcomes, JSON events, the closing
//! table) go to stdout; progress bars, messages and logs go to stderr. Every write goes through
//! here, so a log line or a message never tears a live bar (the bars are hidden while it is
//! written), and a closed stdout (`dialer call … | head -1`) is a normal end, not a panic.
//! The writing itself happens on one thread of its own: a reader that stops reading (a paused
//! pager, a slow pipe) stalls that thread, never a runtime worker carrying calls.

use super::Style;
use indicatif::{MultiProgress, ProgressDrawTarget};
use std::io::{self, Write};
use std::sync::{Arc, mpsc};
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
    /// To the writer thread. Unbounded, so a caller never waits on the terminal; what is
    /// queued is text already decided on, and it is small beside the calls that produced it.
    writes: mpsc::Sender<Write_>,
}

/// One job for the writer thread, done in the order sent.
enum Write_ {
    Out(String),
    Err(Vec<u8>),
    /// Everything sent before has been written: tell the waiter.
    Flushed(mpsc::SyncSender<()>),
}

/// The writer thread: the only code that touches stdout and stderr (besides indicatif's own
/// redraws of the bars).
fn write_all(
    jobs: mpsc::Receiver<Write_>,
    bars: MultiProgress,
    stdout_closed: CancellationToken,
    mut out: impl Write,
    mut err: impl Write,
) {
    for job in jobs {
        match job {
            Write_::Out(text) => {
                if stdout_closed.is_cancelled() {
                    continue;
                }
                let written = bars.suspend(|| writeln!(out, "{text}").and_then(|()| out.flush()));
                if written.is_err() {
                    // Whoever read our output has gone (a closed pipe, a full disk): stop
                    // writing, and let the command end its work as it would on the operator's
                    // first Ctrl-C.
                    stdout_closed.cancel();
                }
            }
            Write_::Err(bytes) => bars.suspend(|| {
                // Nowhere left to report a failure to write to stderr.
                let _ = err.write_all(&bytes);
            }),
            Write_::Flushed(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl Printer {
    pub fn new(style: Style) -> Self {
        Self::writing_to(style, io::stdout(), io::stderr())
    }

    fn writing_to(
        style: Style,
        out: impl Write + Send + 'static,
        err: impl Write + Send + 'static,
    ) -> Self {
        let target = match style {
            // indicatif hides a stderr target that is not a terminal by itself.
            Style::Live => ProgressDrawTarget::stderr(),
            Style::Plain | Style::Json => ProgressDrawTarget::hidden(),
        };
        let bars = MultiProgress::with_draw_target(target);
        let stdout_closed = CancellationToken::new();
        let (writes, jobs) = mpsc::channel();
        let writer = {
            let (bars, stdout_closed) = (bars.clone(), stdout_closed.clone());
            move || write_all(jobs, bars, stdout_closed, out, err)
        };
        // Detached: it ends when the last printer is dropped; `flush` is how a caller knows
        // its lines are out. Should the thread not start, the receiver is gone with it and
        // every write falls back to the caller's thread (see `send`).
        let _ = std::thread::Builder::new()
            .name("dialer-output".into())
            .spawn(writer);
        Self {
            inner: Arc::new(Inner {
                style,
                bars,
                stdout_closed,
                writes,
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
        self.send(Write_::Out(text.to_string()));
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
        self.send(Write_::Err(bytes.to_vec()));
    }

    fn send(&self, job: Write_) {
        if let Err(mpsc::SendError(job)) = self.inner.writes.send(job) {
            // No writer thread: write here rather than lose the line.
            let (unsent, jobs) = mpsc::channel();
            let _ = unsent.send(job);
            drop(unsent);
            let inner = &self.inner;
            write_all(
                jobs,
                inner.bars.clone(),
                inner.stdout_closed.clone(),
                io::stdout(),
                io::stderr(),
            );
        }
    }

    /// Wait until everything sent so far is written (or found unwritable). Blocks: for `main`
    /// before the process exits, not for async code.
    pub fn flush(&self) {
        let (done, written) = mpsc::sync_channel(1);
        if self.inner.writes.send(Write_::Flushed(done)).is_ok() {
            let _ = written.recv();
        }
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
        // The writer thread writes each line whole; there is nothing buffered here.
        Ok(())
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

    /// A terminal the test can read back, or one whose reader has gone.
    #[derive(Clone, Default)]
    struct Screen {
        text: Arc<std::sync::Mutex<Vec<u8>>>,
        gone: bool,
    }

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.gone {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.text.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        fn read(&self) -> String {
            String::from_utf8(self.text.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn lines_from_every_clone_come_out_whole_and_in_order_by_flush() {
        let (out, err) = (Screen::default(), Screen::default());
        let p = Printer::writing_to(Style::Plain, out.clone(), err.clone());
        let other = p.clone();
        for i in 0..50 {
            p.out(&format!("result {i}"));
            other.message(&format!("note {i}"));
        }
        p.error("stopped");
        p.flush();
        let expected: String = (0..50).map(|i| format!("result {i}\n")).collect();
        assert_eq!(out.read(), expected);
        let notes: String = (0..50).map(|i| format!("dialer: note {i}\n")).collect();
        assert_eq!(err.read(), notes + "dialer: error: stopped\n");
    }

    #[test]
    fn a_reader_that_goes_away_closes_stdout_and_nothing_more_is_written() {
        let out = Screen {
            gone: true,
            ..Screen::default()
        };
        let p = Printer::writing_to(Style::Plain, out.clone(), Screen::default());
        p.out("first");
        p.flush();
        assert!(p.stdout_closed());
        p.out("second");
        p.flush();
        assert_eq!(out.read(), "");
    }
}

//! Logging: tracing to stderr through the printer (so a log line never tears a live bar),
//! filtered by `RUST_LOG` (default: warnings only, so the live view stays readable). Results
//! go to stdout; logs never do. Secrets never reach a log field.

use crate::report::Printer;
use tracing_subscriber::EnvFilter;

pub fn init(verbose: u8, printer: &Printer) {
    let default = match verbose {
        0 => "warn",
        1 => "info,dialer=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(printer.log_writer())
        .with_target(false)
        .try_init();
}

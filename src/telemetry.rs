//! Logging: tracing to stderr through the printer (so a log line never tears a live bar),
//! filtered by `RUST_LOG` (default: warnings only, so the live view stays readable). Results
//! go to stdout; logs never do. Secrets never reach a log field.

use crate::report::Printer;
use tracing_subscriber::EnvFilter;

/// Libraries whose trace output carries secrets or call content.
const CHATTY: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "warp",
];

pub fn init(verbose: u8, printer: &Printer) {
    let default = match verbose {
        0 => "warn",
        1 => "info,dialer=debug",
        _ => "debug",
    };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Below debug, these libraries log whole requests and frames: the AssemblyAI key in the
    // WebSocket handshake, the Twilio Basic credentials, each call's stream token and what the
    // callee said. No RUST_LOG may open that, so the cap comes after the user's filter.
    // Only a filter that lets trace through needs the cap; added to a quieter one, the cap
    // would turn these libraries up instead.
    if filter.max_level_hint() > Some(tracing::level_filters::LevelFilter::DEBUG) {
        for library in CHATTY {
            if let Ok(directive) = format!("{library}=debug").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(printer.log_writer())
        .with_target(false)
        .try_init();
}
